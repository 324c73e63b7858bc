"""Forward sync benchmark: `meltano run tap-customwebshop target-chargebee` on generated data
against both sandboxes (no added latency), then an unchanged re-run. Prints records per
second and Chargebee write calls per new record, by resource, as counted by the emulator.

    .venv/bin/python bench/forward_sync.py [--customers 200 --products 60 --orders 400]
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

from sync_sandbox.process import start_sandbox

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEYS = {"customwebshop": "bench_webshop_key", "chargebee": "bench_chargebee_key"}
#: emulator operation -> the resource whose records it writes
WRITES = {"create_customer": "customers", "create_item": "items", "update_item": "items",
          "create_price": "item_prices", "update_price": "item_prices",
          "create_family": "item_families", "import_invoice": "invoices",
          "import_order": "orders"}  # fmt: skip


def run_sync(env: dict) -> float:
    started = time.monotonic()
    command = [str(BIN / "meltano"), "run", "tap-customwebshop", "target-chargebee"]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def writes(stats: dict) -> Counter:
    return Counter({operation: sum(int(n) for status, n in by_status.items() if status < "300")
                    for operation, by_status in stats["operations"].items()
                    if not operation.startswith(("retrieve", "list"))})  # fmt: skip


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
    }
    try:
        seconds = run_sync(env)
        report = json.loads(max((tmp / "reports").glob("*.json"), key=os.path.getmtime).read_text())
        first = writes(chargebee.stats())
        chargebee.reset_stats()
        rerun_seconds = run_sync(env)
        second = writes(chargebee.stats())
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


if __name__ == "__main__":
    main()
