"""Sync benchmark on generated data against both sandboxes (no added latency):
1. forward, `meltano run tap-customwebshop target-chargebee`: records per second and Chargebee
   write calls per new record by resource (counted by the emulator), then an unchanged re-run;
2. back, every customer edited in Chargebee, then `meltano run tap-chargebee
   target-customwebshop`: records per second;
3. two more `meltano run sync`: the writes each server received (no ping-pong: 0 and 0).

    .venv/bin/python bench/sync.py [--customers 200 --products 60 --orders 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests

from sync_sandbox.process import start_sandbox

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEYS = {"customwebshop": "bench_webshop_key", "chargebee": "bench_chargebee_key"}
#: emulator operation -> the resource whose records it writes
WRITES = {"create_customer": "customers", "create_item": "items", "update_item": "items",
          "create_price": "item_prices", "update_price": "item_prices",
          "create_family": "item_families", "import_invoice": "invoices",
          "import_order": "orders"}  # fmt: skip


FORWARD = ("tap-customwebshop", "target-chargebee")
BACK = ("tap-chargebee", "target-customwebshop")


def run_sync(env: dict, *blocks: str) -> float:
    started = time.monotonic()
    command = [str(BIN / "meltano"), "run", *(blocks or FORWARD)]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def last_report(directory: Path, plugin: str) -> dict:
    reports = directory.glob(f"{plugin}-*.json")
    return json.loads(max(reports, key=os.path.getmtime).read_text())


def writes(stats: dict) -> Counter:
    """Successful writes by operation (the webshop's are `resource.create|patch|delete`)."""
    return Counter({operation: sum(int(n) for status, n in by_status.items() if status < "300")
                    for operation, by_status in stats["operations"].items()
                    if not operation.startswith(("retrieve", "list"))
                    and not operation.endswith((".list", ".get"))})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--products", type=int, default=60)
    parser.add_argument("--orders", type=int, default=400)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    counts = f"customers={args.customers},products={args.products},orders={args.orders}"
    shop = start_sandbox("customwebshop", str(tmp / "shop.db"), KEYS["customwebshop"],
                         "--generate", counts, "--seed", "42")  # fmt: skip
    chargebee = start_sandbox("chargebee", str(tmp / "cb.db"), KEYS["chargebee"])
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MELTANO_ENVIRONMENT": "dev",
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp / 'meltano.db'}",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TAP_CUSTOMWEBSHOP_API_URL": shop.url + "/api/v1",
        "TAP_CUSTOMWEBSHOP_API_KEY": KEYS["customwebshop"],
        "TARGET_CHARGEBEE_API_URL": chargebee.url + "/api/v2",
        "TARGET_CHARGEBEE_API_KEY": KEYS["chargebee"],
        "TARGET_CHARGEBEE_LINK_STORE_URL": f"sqlite:///{tmp / 'links.db'}",
        "TARGET_CHARGEBEE_REPORT_DIR": str(tmp / "reports"),
        "TARGET_CHARGEBEE_REQUESTS_PER_MINUTE": "100000",
        "TAP_CHARGEBEE_API_URL": chargebee.url + "/api/v2",
        "TAP_CHARGEBEE_API_KEY": KEYS["chargebee"],
        "TAP_CHARGEBEE_REQUESTS_PER_MINUTE": "100000",
        "TARGET_CUSTOMWEBSHOP_API_URL": shop.url + "/api/v1",
        "TARGET_CUSTOMWEBSHOP_API_KEY": KEYS["customwebshop"],
        "TARGET_CUSTOMWEBSHOP_LINK_STORE_URL": f"sqlite:///{tmp / 'links.db'}",
        "TARGET_CUSTOMWEBSHOP_REPORT_DIR": str(tmp / "reports"),
    }
    try:
        seconds = run_sync(env)
        report = last_report(tmp / "reports", "target-chargebee")
        first = writes(chargebee.stats())
        chargebee.reset_stats()
        rerun_seconds = run_sync(env)
        second = writes(chargebee.stats())
        run_sync(env, *BACK)  # reads everything once; all of it is the sync's own writing
        edited = edit_every_customer(chargebee)
        back_seconds = run_sync(env, *BACK)
        back = last_report(tmp / "reports", "target-customwebshop")
        quiet = []
        for _ in range(2):
            shop.reset_stats()
            chargebee.reset_stats()
            run_sync(env, "sync")
            quiet.append(
                (sum(writes(shop.stats()).values()), sum(writes(chargebee.stats()).values()))
            )
    finally:
        shop.stop()
        chargebee.stop()
    streams = report["streams"]
    records = report["records"]
    print(
        f"first run: {records} records in {seconds:.1f} s = {records / seconds:.0f} records/s "
        f"with meltano start-up; the target alone: {report['records_per_second']} records/s"
    )
    print("Chargebee write calls per new record:")
    by_resource = Counter()
    for operation, n in first.items():
        by_resource[WRITES.get(operation, operation)] += n
    for stream, entry in sorted(streams.items()):
        created = entry.get("created", 0) + entry.get("matched", 0)
        print(f"  {stream:12} {by_resource[stream]:5} writes / {created:4} new = "
              f"{by_resource[stream] / max(created, 1):.2f}")  # fmt: skip
    extra = {k: v for k, v in by_resource.items() if k not in streams}
    if extra:
        print(f"  other writes: {dict(extra)}")
    print(f"unchanged re-run: {sum(second.values())} write calls, {rerun_seconds:.1f} s")
    updated = back["streams"]["customers"]["updated"]
    print(
        f"back: {edited} customers edited in Chargebee; {back['records']} records read, "
        f"{updated} webshop updates in {back_seconds:.1f} s with meltano start-up; "
        f"the target alone: {back['records_per_second']} records/s"
    )
    for n, (shop_writes, cb_writes) in enumerate(quiet, start=1):
        print(
            f"sync run {n} after that: {shop_writes} webshop writes, {cb_writes} Chargebee writes"
        )


def edit_every_customer(chargebee) -> int:
    """A phone number changed on every live Chargebee customer, straight through the API."""
    session = requests.Session()
    session.auth = (KEYS["chargebee"], "")
    api, offset, edited = chargebee.url + "/api/v2", None, 0
    while True:
        params = {"limit": 100, **({"offset": offset} if offset else {})}
        page = session.get(f"{api}/customers", params=params, timeout=10).json()
        for entry in page["list"]:
            customer_id = entry["customer"]["id"]
            data = {"phone": f"+49 30 {edited:07d}"}
            session.post(f"{api}/customers/{customer_id}", data=data, timeout=10).raise_for_status()
            edited += 1
        offset = page.get("next_offset")
        if not offset:
            return edited


if __name__ == "__main__":
    main()
