"""The sync benchmark (`make bench`): generated data in both sandboxes, the real plugins, one
table of measured figures. What each figure means and how it is measured: bench/README.md.

    .venv/bin/python bench/sync.py [--scale 1] [--budget 600] [--budget-minutes 3.2]

--scale 1 is 10,000 customers, 5,000 products and 20,000 orders; --scale 10 is the 10x memory
run (much longer than 15 minutes: the first sync alone is ~10x).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from measure import (
    RequestSampler,
    Run,
    count_records,
    cpu_per_call,
    run,
    schema_only,
    status_count,
)

from sync_common.chargebee import ChargebeeClient
from sync_common.links import LinkStore
from sync_common.target import READ_AHEAD
from sync_sandbox.process import start_sandbox
from target_customwebshop.resources import RULES as WEBSHOP_RULES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEYS = {"customwebshop": "bench_webshop_key", "chargebee": "bench_chargebee_key"}
SIZE = {"customers": 10_000, "products": 5_000, "orders": 20_000}  # --scale 1
FORWARD = ("tap-customwebshop", "target-chargebee")
BACK = ("tap-chargebee", "target-customwebshop")
#: Chargebee emulator operation -> the resource it writes (GETs are list_* / retrieve_*)
RESOURCE_OF = {
    "customer": "customers", "billing_info": "customers", "transfer": "customers",
    "family": "item_families", "item": "items", "price": "item_prices",
    "invoice": "invoices", "order": "orders",
}  # fmt: skip
#: The emulator's list operations -> a word of RESOURCE_OF (retrieve_<kind> ends with one)
LIST_OF = {
    "list_customers": "customer", "list_transfers": "transfer", "list_families": "family",
    "list_items": "item", "list_prices": "price", "list_invoices": "invoice",
    "list_orders": "order",
}  # fmt: skip
FAR_FUTURE = "2100-01-01T00:00:00Z"  # a tap with this start_date reads nothing


class Bench:
    def __init__(self, tmp: Path, scale: float) -> None:
        self.tmp = tmp
        self.log = tmp / "bench.log"
        self.counts = {name: max(1, round(n * scale)) for name, n in SIZE.items()}
        self.sandboxes: list = []
        self.lines: list[str] = []
        self.numbers = itertools.count()  # config file names (two threads make them)

    # ---------------------------------------------------------------- plumbing

    def generate(self) -> Run:
        """The webshop's records (`self.counts`, seed 42) in `shop.db`, before its sandbox runs."""
        size = ",".join(f"{k}={v}" for k, v in self.counts.items())
        return run(
            [str(BIN / "customwebshop-sandbox"), "--db", str(self.tmp / "shop.db"), "--api-key",
             KEYS["customwebshop"], "--generate", size, "--seed", "42", "--generate-only"],
            env=dict(os.environ), log=self.log,
        )  # fmt: skip

    def sandbox(self, kind: str, name: str, *extra: str, port: int = 0):
        box = start_sandbox(kind, str(self.tmp / f"{name}.db"), KEYS[kind], *extra, port=port)
        self.sandboxes.append(box)
        return box

    def stop(self, box) -> None:
        box.stop()
        self.sandboxes.remove(box)

    def meltano_env(self, shop, chargebee, links: Path) -> dict:
        reports = str(self.tmp / "reports")
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MELTANO_ENVIRONMENT": "dev",
            "MELTANO_DATABASE_URI": f"sqlite:///{self.tmp / 'meltano.db'}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TAP_CUSTOMWEBSHOP_API_URL": shop.url + "/api/v1",
            "TAP_CUSTOMWEBSHOP_API_KEY": KEYS["customwebshop"],
            "TAP_CUSTOMWEBSHOP_LINK_STORE_URL": f"sqlite:///{links}",
            "TAP_CUSTOMWEBSHOP_CHARGEBEE_API_URL": chargebee.url + "/api/v2",
            "TARGET_CHARGEBEE_API_URL": chargebee.url + "/api/v2",
            "TARGET_CHARGEBEE_API_KEY": KEYS["chargebee"],
            "TARGET_CHARGEBEE_LINK_STORE_URL": f"sqlite:///{links}",
            "TARGET_CHARGEBEE_WEBSHOP_API_URL": shop.url + "/api/v1",
            "TARGET_CHARGEBEE_REPORT_DIR": reports,
            "TARGET_CHARGEBEE_REQUESTS_PER_MINUTE": "1000000",  # no budget: local speed
            "TAP_CHARGEBEE_API_URL": chargebee.url + "/api/v2",
            "TAP_CHARGEBEE_API_KEY": KEYS["chargebee"],
            "TAP_CHARGEBEE_REQUESTS_PER_MINUTE": "1000000",
            "TAP_CHARGEBEE_LINK_STORE_URL": f"sqlite:///{links}",
            "TAP_CHARGEBEE_WEBSHOP_API_URL": shop.url + "/api/v1",
            "TARGET_CUSTOMWEBSHOP_API_URL": shop.url + "/api/v1",
            "TARGET_CUSTOMWEBSHOP_API_KEY": KEYS["customwebshop"],
            "TARGET_CUSTOMWEBSHOP_LINK_STORE_URL": f"sqlite:///{links}",
            "TARGET_CUSTOMWEBSHOP_CHARGEBEE_API_URL": chargebee.url + "/api/v2",
            "TARGET_CUSTOMWEBSHOP_REPORT_DIR": reports,
        }

    def config(self, env: dict, plugin: str, **overrides) -> Path:
        """The plugin's config as `meltano run` would pass it (maps included), as a file."""
        dumped = subprocess.run(
            [str(BIN / "meltano"), "invoke", "--dump=config", plugin],
            cwd=REPO, env=env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        path = self.tmp / f"{plugin}-{next(self.numbers)}.json"
        path.write_text(json.dumps({**json.loads(dumped), **overrides}))
        return path

    def plugin(self, name: str, config: Path, **io) -> Run:
        return run([str(BIN / name), "--config", str(config)], env=self.env, log=self.log, **io)

    def meltano(self, env: dict, *args: str) -> Run:
        return run([str(BIN / "meltano"), "run", *args], env=env, log=self.log, cwd=REPO)

    def noop(self, kind: str, like: str, path: Path, **io) -> Run:
        command = [sys.executable, str(REPO / "bench" / "noop.py"), kind, like, str(path)]
        return run(command, env=self.env, log=self.log, **io)

    def report(self, plugin: str) -> dict:
        reports = (self.tmp / "reports").glob(f"{plugin}-*.json")
        return json.loads(max(reports, key=os.path.getmtime).read_text())

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def chargebee_writes(stats: dict) -> Counter:
    """Successful writes by resource, from the emulator's counts."""
    out: Counter = Counter()
    for operation, by_status in stats["operations"].items():
        if operation.startswith(("list_", "retrieve_")):
            continue
        resource = next(r for word, r in RESOURCE_OF.items() if operation.endswith(word))
        out[resource] += sum(n for status, n in by_status.items() if status < "300")
    return out


def webshop_writes(stats: dict) -> int:
    return sum(
        n
        for operation, by_status in stats["operations"].items()
        if not operation.endswith((".list", ".get"))
        for status, n in by_status.items()
        if status < "300"
    )


def backup(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file that may be open elsewhere."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


#: How often the short runs of figure 4 (taps, target-customwebshop, their floors, each also
#: without records) run; the least CPU counts. Another process on the two cores only adds
#: CPU time, never takes it away (timeit takes the least of its repeats for that reason):
#: single runs of unchanged code moved by 20 % between two benches.
REPEATS = 3


def least_cpu(measure: Callable[[], Run], times: int = REPEATS) -> Run:
    """The run with the least CPU of `times` runs of `measure`."""
    return min((measure() for _ in range(times)), key=lambda run: run.cpu)


def restore(source: Path, target: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)


def edit_webshop(shop, counts: dict, share: float) -> dict[str, int]:
    """Change `share` of the live records of each resource through the webshop API: a
    customer's phone, a product's name (its item and its price), a paid order's note."""
    session = requests.Session()
    session.headers["X-API-Key"] = KEYS["customwebshop"]
    api = shop.url + "/api/v1"
    edited = Counter()
    for resource, change in (
        ("customers", lambda r: {"phone": f"+49 30 {r['id']:07d}"}),
        ("products", lambda r: {"name": f"{r['name']} v2"}),
        ("orders", lambda r: {"note": f"bench edit {r['id']}"}),
    ):
        wanted, step = max(1, round(counts[resource] * share)), max(1, round(1 / share))
        for n in range(1, counts[resource] + 1, step):
            if edited[resource] >= wanted:
                break
            record = session.get(f"{api}/{resource}/{n}", timeout=10).json()
            if record.get("deleted_at") or (resource == "orders" and not record.get("paid_at")):
                continue
            session.patch(f"{api}/{resource}/{n}", json=change(record), timeout=10)
            edited[resource] += 1
    return dict(edited)


def edit_chargebee_customers(chargebee, share: float) -> int:
    """A phone number changed on `share` of the Chargebee customers, through the API."""
    api = chargebee.url + "/api/v2"
    session = requests.Session()
    session.auth = (KEYS["chargebee"], "")
    ids, offset = [], None
    while True:
        params = {"limit": 100, **({"offset": offset} if offset else {})}
        page = session.get(f"{api}/customers", params=params, timeout=10).json()
        ids += [entry["customer"]["id"] for entry in page["list"]]
        if not (offset := page.get("next_offset")):
            break
    ids = ids[:: round(1 / share)]

    def edit(number_and_id: tuple[int, str]) -> None:
        number, customer_id = number_and_id
        data = {"phone": f"+49 40 {number:07d}"}
        session.post(f"{api}/customers/{customer_id}", data=data, timeout=10).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(edit, enumerate(ids)))
    return len(ids)


def client_cpu_per_request(chargebee) -> float:
    """CPU seconds the plugins' HTTP client (sync_common.http) spends per GET on the
    emulator: part of every plugin's cost per record, and absent from the no-op floor."""
    client = ChargebeeClient(chargebee.url + "/api/v2", KEYS["chargebee"],
                             requests_per_minute=0, max_concurrency=0)  # fmt: skip
    return cpu_per_call(lambda: client.get("/customers", {"limit": 1}))


def link_store_cpu_per_save(tmp: Path) -> float:
    """CPU seconds a save costs a SQLite link store (a target saves a link after each write):
    inserts of new links with both bases, then updates of one side."""
    store = LinkStore(f"sqlite:///{tmp / 'save-bench.db'}")
    numbers = itertools.count()

    def save() -> None:
        n = next(numbers)
        store.save("customers", str(n % 500), f"cws_{n % 500}", webshop_version=n,
                   chargebee_hash=str(n), deterministic_id=f"cws_{n % 500}",
                   webshop_base={"email": f"{n}@example.com"}, chargebee_base={"n": n})  # fmt: skip

    try:
        return cpu_per_call(save, calls=1000)
    finally:
        store.close()


def read_ahead_cpu_per_record(links: Path, recorded: Path) -> float:
    """CPU seconds per record that target-customwebshop's link store spends reading ahead
    the links of the recorded Chargebee records (READ_AHEAD at a time, as the target does),
    on the store as the way back found it: part of that target's cost per record, absent
    from the no-op floor."""
    store = LinkStore(f"sqlite:///{links}", look_only=True, merges_on="webshop")
    keys = []
    with open(recorded, "rb") as lines:
        for line in lines:
            if line.startswith(b'{"type":"RECORD"'):
                message = json.loads(line)
                resource = WEBSHOP_RULES[message["stream"]].link_resource
                keys.append((resource, "chargebee_id", str(message["record"]["id"])))
    batches = [keys[start : start + READ_AHEAD] for start in range(0, len(keys), READ_AHEAD)]
    unread = iter(batches)
    try:
        per_batch = cpu_per_call(lambda: store.read_ahead(next(unread)), calls=len(batches))
    finally:
        store.close()
    return per_batch * len(batches) / len(keys)


def bare_session_cpu_per_request(chargebee) -> float:
    """CPU seconds a bare requests.Session spends per GET on the emulator: the goal's yardstick
    for what a request costs the client at all."""
    session = requests.Session()
    session.auth = (KEYS["chargebee"], "")
    url = chargebee.url + "/api/v2/customers"
    return cpu_per_call(lambda: session.get(url, params={"limit": 1}, timeout=10))


def feed_for(source: Path, seconds: float):
    """A feeder that writes the Singer file into a target's stdin until `seconds` have passed
    since its first record, then closes it: the run lasts as long as asked whatever each
    record costs."""

    def feed(pipe) -> None:
        started = None
        with open(source, "rb") as lines:
            for line in lines:
                if line.startswith(b'{"type":"RECORD"'):
                    started = started or time.monotonic()
                    if time.monotonic() - started > seconds:
                        break
                try:
                    pipe.write(line)
                except BrokenPipeError:
                    return

    return feed


# -------------------------------------------------------------------- the runs


def budget_run(bench: Bench, recorded: Path, *, rpm: int, minutes: float, latency_ms: int,
               concurrency: int | None = None) -> dict:  # fmt: skip
    """target-chargebee alone against a fresh emulator that enforces `rpm` (and adds
    `latency_ms`), configured to the same `rpm`, fed records for `minutes`."""
    # Each run its own emulator and link store: a store is bound to the systems it links.
    name = f"budget-{rpm}-{latency_ms}-{concurrency or 'default'}"
    box = bench.sandbox("chargebee", name)
    box.set_knobs(requests_per_minute=rpm, latency_ms=latency_ms)
    env = bench.meltano_env(bench.shop, box, bench.tmp / f"{name}-links.db")
    overrides = {"requests_per_minute": rpm, "report_dir": str(bench.tmp / name)}
    if concurrency:
        overrides["max_concurrency"] = concurrency
    config = bench.config(env, "target-chargebee", **overrides)
    with RequestSampler(box) as sampler:
        measured = run(
            [str(BIN / "target-chargebee"), "--config", str(config)],
            env=env, log=bench.log, feed=feed_for(recorded, minutes * 60),
        )  # fmt: skip
    stats = box.stats()
    bench.stop(box)
    windows = sampler.windows()
    return {
        "busy_seconds": sampler.busy_seconds(),
        "rpm": rpm, "latency_ms": latency_ms, "seconds": measured.wall,
        "requests": stats["total"], "429s": status_count(stats, "429"),
        "windows": len(windows),
        "mean": sum(windows) / len(windows) / rpm if windows else None,
        "max": max(windows) / rpm if windows else None,
        "concurrency": json.loads(config.read_text()).get("max_concurrency"),
    }  # fmt: skip


def main() -> None:  # noqa: PLR0915 (one scenario, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 10k/5k/20k records")
    parser.add_argument("--budget", type=int, default=150, help="a test site's requests/min")
    parser.add_argument("--large-budget", type=int, default=3500, help="Enterprise's")
    parser.add_argument("--budget-minutes", type=float, default=3.5, help="each budget run")
    parser.add_argument("--latency-ms", type=int, default=250, help="added to every request")
    parser.add_argument("--large-concurrency", type=int, default=24,
                        help="max_concurrency of the large budget run")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    bench = Bench(tmp, args.scale)
    try:
        measure_all(bench, args)
    finally:
        for box in list(bench.sandboxes):
            bench.stop(box)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    print(f"\nmake bench took {minutes:.1f} min" + (f"; files in {tmp}" if args.keep else ""))


def measure_all(bench: Bench, args: argparse.Namespace) -> None:  # noqa: PLR0915
    tmp, counts = bench.tmp, bench.counts
    size = ",".join(f"{k}={v}" for k, v in counts.items())
    load = os.getloadavg()[0]
    print(f"scale {args.scale}: {size}, seed 42; {os.cpu_count()} CPUs, load {load:.1f}; "
          f"log: {bench.log}", flush=True)  # fmt: skip
    generated = bench.generate()
    print(f"data generated in {generated.wall:.0f} s", flush=True)
    bench.shop = shop = bench.sandbox("customwebshop", "shop")
    cb = bench.sandbox("chargebee", "cb")
    links = tmp / "links.db"
    bench.env = env = bench.meltano_env(shop, cb, links)
    configs = {
        "tap-customwebshop": bench.config(env, "tap-customwebshop"),
        "target-chargebee": bench.config(env, "target-chargebee"),
        "tap-chargebee": bench.config(env, "tap-chargebee"),
        "target-customwebshop": bench.config(env, "target-customwebshop"),
    }
    empty_taps = {
        tap: bench.config(env, tap, start_date=FAR_FUTURE)
        for tap in ("tap-customwebshop", "tap-chargebee")
    }
    forward = tmp / "forward.singer"
    rows: dict[str, dict] = {}

    def alone(name: str, recorded: Path, full: Run, empty: Run, floor: Run, floor0: Run) -> None:
        records = count_records(recorded)
        rows[name] = {
            "records": records, "wall": full.wall, "cpu": full.cpu, "empty": empty,
            "per_record": (full.cpu - empty.cpu) / records,
            "floor": (floor.cpu - floor0.cpu) / records,
            "rss": full.peak_rss, "rss0": empty.peak_rss,
        }  # fmt: skip

    # 3. each plugin alone: forward tap to a file, then the target fed that file (first sync)
    print("forward: tap-customwebshop alone", flush=True)
    tap_run = least_cpu(
        lambda: bench.plugin("tap-customwebshop", configs["tap-customwebshop"], stdout=forward)
    )
    tap_empty = least_cpu(
        lambda: bench.plugin("tap-customwebshop", empty_taps["tap-customwebshop"])
    )

    # 2. budget use, in the background (paced by the budget, they use little CPU)
    budgets: list[dict] = []

    def budget_runs(rpm: int, concurrency: int | None) -> None:
        budgets.append(budget_run(bench, forward, rpm=rpm, minutes=args.budget_minutes,
                                  latency_ms=args.latency_ms, concurrency=concurrency))  # fmt: skip

    # At 250 ms a request, 3,500/min needs about 15 in flight: max_concurrency 4 would cap
    # it at 960/min, so that run sets --large-concurrency; 150/min runs at the default.
    budget_threads = [
        threading.Thread(target=budget_runs, args=(args.budget, None), daemon=True),
        threading.Thread(
            target=budget_runs, args=(args.large_budget, args.large_concurrency), daemon=True
        ),
    ]
    for thread in budget_threads:
        thread.start()

    # 1. the first sync: the target alone, fed the tap's records
    print("forward: target-chargebee alone (the first sync)", flush=True)
    schemas = tmp / "forward-schemas.singer"
    schema_only(forward, schemas)
    target_run = bench.plugin("target-chargebee", configs["target-chargebee"], stdin=forward)
    first = chargebee_writes(cb.stats())
    first_requests = chargebee_requests(cb.stats())
    first_calls = cb.stats()["total"]
    first_report = bench.report("target-chargebee")
    target_empty = bench.plugin("target-chargebee", configs["target-chargebee"], stdin=schemas)

    print("forward: no-op SDK tap and target (the floor)", flush=True)
    floor_tap = least_cpu(lambda: bench.noop("tap", "tap-customwebshop", forward))
    floor_tap0 = least_cpu(lambda: bench.noop("tap", "tap-customwebshop", schemas))
    floor_target = bench.noop("target", "target-chargebee", configs["target-chargebee"],
                              stdin=forward)  # fmt: skip
    floor_target0 = bench.noop("target", "target-chargebee", configs["target-chargebee"],
                               stdin=schemas)  # fmt: skip
    alone("tap-customwebshop", forward, tap_run, tap_empty, floor_tap, floor_tap0)
    alone("target-chargebee", forward, target_run, target_empty, floor_target, floor_target0)

    # 1. re-runs through `meltano run`, as a user runs them: the first has no state yet, so
    # it reads every record again, all unchanged
    print("forward: meltano run, everything unchanged; then 1 % changed", flush=True)
    cb.reset_stats()
    unchanged_run = bench.meltano(env, *FORWARD)
    unchanged = chargebee_writes(cb.stats())
    unchanged_reads = cb.stats()["total"] - sum(unchanged.values())
    unchanged_report = bench.report("target-chargebee")
    edited = edit_webshop(shop, counts, 0.01)
    cb.reset_stats()
    bench.meltano(env, *FORWARD)
    changed = chargebee_writes(cb.stats())
    changed_reads = cb.stats()["total"] - sum(changed.values())
    changed_report = bench.report("target-chargebee")
    rows["forward run, unchanged (meltano)"] = {
        "records": count_records(forward), "wall": unchanged_run.wall,
        "cpu": unchanged_run.cpu, "rss": unchanged_run.peak_rss,
    }  # fmt: skip

    # back: 10 % of the Chargebee customers edited; each plugin alone, then `meltano run`
    # from the same starting point (webshop and link store restored)
    print("back: Chargebee customers edited; tap-chargebee alone", flush=True)
    edited_in_chargebee = edit_chargebee_customers(cb, 0.1)
    back = tmp / "back.singer"
    back_schemas = tmp / "back-schemas.singer"
    back_tap = least_cpu(
        lambda: bench.plugin("tap-chargebee", configs["tap-chargebee"], stdout=back)
    )
    back_tap_empty = least_cpu(lambda: bench.plugin("tap-chargebee", empty_taps["tap-chargebee"]))
    schema_only(back, back_schemas)
    backup(tmp / "shop.db", tmp / "shop-before-back.db")
    backup(links, tmp / "links-before-back.db")

    def from_before_back() -> None:
        """The webshop and the link store as they were before the way back's first run."""
        bench.stop(bench.shop)
        restore(tmp / "shop-before-back.db", tmp / "shop.db")
        restore(tmp / "links-before-back.db", links)
        # The same port: the link store is bound to the webshop's URL (another is refused).
        same_port = int(bench.shop.url.rsplit(":", 1)[1])
        bench.shop = bench.sandbox("customwebshop", "shop", port=same_port)
        bench.env = bench.meltano_env(bench.shop, cb, links)

    def back_target_from_before_back() -> Run:
        from_before_back()
        return bench.plugin("target-customwebshop", configs["target-customwebshop"], stdin=back)

    print("back: target-customwebshop alone", flush=True)
    back_target = least_cpu(back_target_from_before_back)
    back_alone_report = bench.report("target-customwebshop")
    back_target_empty = least_cpu(
        lambda: bench.plugin(
            "target-customwebshop", configs["target-customwebshop"], stdin=back_schemas
        )
    )
    print("back: no-op SDK tap and target", flush=True)
    config_back = configs["target-customwebshop"]
    floor_back_tap = least_cpu(lambda: bench.noop("tap", "tap-chargebee", back))
    floor_back_tap0 = least_cpu(lambda: bench.noop("tap", "tap-chargebee", back_schemas))
    floor_back = least_cpu(
        lambda: bench.noop("target", "target-customwebshop", config_back, stdin=back)
    )
    floor_back0 = least_cpu(
        lambda: bench.noop("target", "target-customwebshop", config_back, stdin=back_schemas)
    )
    alone("tap-chargebee", back, back_tap, back_tap_empty, floor_back_tap, floor_back_tap0)
    alone("target-customwebshop", back, back_target, back_target_empty, floor_back, floor_back0)

    print("back: meltano run from the same starting point", flush=True)
    from_before_back()
    shop, env = bench.shop, bench.env
    full_back = bench.meltano(env, *BACK)
    back_report = bench.report("target-customwebshop")
    rows["back run (meltano)"] = {
        "records": count_records(back), "wall": full_back.wall, "cpu": full_back.cpu,
        "rss": full_back.peak_rss,
    }  # fmt: skip
    print("both ways: meltano run sync", flush=True)
    shop.reset_stats()
    cb.reset_stats()
    bench.meltano(env, "sync")
    quiet = (webshop_writes(shop.stats()), sum(chargebee_writes(cb.stats()).values()))

    http_cpu = client_cpu_per_request(cb)
    bare_cpu = bare_session_cpu_per_request(cb)
    save_cpu = link_store_cpu_per_save(tmp)
    read_ahead_cpu = read_ahead_cpu_per_record(tmp / "links-before-back.db", back)
    print("waiting for the budget runs", flush=True)
    for thread in budget_threads:
        thread.join()
    budgets.sort(key=lambda b: b["rpm"])

    # ---------------------------------------------------------------- the table
    say = bench.say
    say()
    say(f"== make bench: {size} (scale {args.scale}), seed 42, {os.cpu_count()} CPUs ==")
    say()
    say("1. Chargebee write calls per record (writes counted by the emulator)")
    say(f"   {'resource':13} {'first sync: writes/new':>28} {'unchanged re-run':>18} "
        f"{'1 % changed: writes/changed':>30}")  # fmt: skip
    for resource in ("customers", "items", "item_prices", "invoices", "orders"):
        new = first_report["streams"].get(resource, {})
        made = new.get("created", 0) + new.get("matched", 0)
        upd = changed_report["streams"].get(resource, {}).get("updated", 0)
        say(f"   {resource:13} {_ratio(first[resource], made):>28} "
            f"{unchanged[resource]:>18} {_ratio(changed[resource], upd):>30}")  # fmt: skip
    say(f"   {'item_families':13} {first['item_families']:>28} "
        f"{unchanged['item_families']:>18} {changed['item_families']:>30}")  # fmt: skip
    say(
        f"   first sync: {first_report['records']} records after the maps, "
        f"{sum(first.values())} writes, {first_calls - sum(first.values())} reads"
    )
    say(f"   unchanged re-run: {unchanged_report['records']} records re-read, "
        f"{sum(unchanged.values())} writes")  # fmt: skip
    say(f"   1 % changed: edited in the webshop {edited}; {changed_report['records']} records "
        f"read; {sum(changed.values())} writes, {changed_reads} reads")  # fmt: skip
    say(f"   both ways after that (`meltano run sync`): {quiet[0]} webshop writes, "
        f"{quiet[1]} Chargebee writes")  # fmt: skip
    say()
    say("2. Budget use (target-chargebee alone; emulator enforces the budget, target set to it)")
    say(f"   {'budget/min':>10} {'latency':>8} {'max conc.':>9} {'run s':>6} {'requests':>8} "
        f"{'429s':>5} {'60 s windows':>12} {'mean use':>9} {'max use':>8}")  # fmt: skip
    for b in budgets:
        say(f"   {b['rpm']:>10} {b['latency_ms']:>6}ms {b['concurrency']:>9} "
            f"{b['seconds']:>6.0f} {b['requests']:>8} {b['429s']:>5} {b['windows']:>12} "
            f"{_pct(b['mean']):>9} {_pct(b['max']):>8}")  # fmt: skip
    say()
    say("3-5. Throughput at zero latency, CPU per record, the SDK floor, peak memory")
    say(f"   {'':31} {'records':>7} {'wall s':>7} {'rec/s':>6} {'CPU µs/rec':>10} "
        f"{'start CPU s':>11} {'floor µs':>8} {'ratio':>5} {'RSS MB 0 rec':>12} "
        f"{'RSS MB all':>10}")  # fmt: skip
    for name, row in rows.items():
        per_record = row.get("per_record", row["cpu"] / row["records"])
        floor, empty, mb = row.get("floor"), row.get("empty"), 2**20
        cells = [
            f"{row['records']:>7}", f"{row['wall']:>7.1f}",
            f"{row['records'] / row['wall']:>6.0f}", f"{per_record * 1e6:>10.0f}",
            f"{empty.cpu:>11.2f}" if empty else " " * 11,
            f"{floor * 1e6:>8.0f}" if floor else " " * 8,
            f"{per_record / floor:>5.2f}" if floor else " " * 5,
            f"{row['rss0'] / mb:>12.0f}" if empty else " " * 12, f"{row['rss'] / mb:>10.0f}",
        ]  # fmt: skip
        say(f"   {name:31} " + " ".join(cells))
    say(
        f"   back run: {edited_in_chargebee} customers edited in Chargebee; target alone "
        f"updated {back_alone_report['streams'].get('customers', {}).get('updated', 0)}, "
        f"meltano run updated {back_report['streams'].get('customers', {}).get('updated', 0)}"
    )
    say(
        "   plugin rows: CPU net of a run without records; meltano rows: all CPU of meltano "
        "and both plugins, start-up included, per tap record"
    )
    say(
        f"   the plugins' HTTP client alone: {http_cpu * 1e6:.0f} µs CPU per request; a bare "
        f"requests.Session: {bare_cpu * 1e6:.0f} µs (the same GET on the emulator); the "
        f"link store alone: {save_cpu * 1e6:.0f} µs CPU per save (SQLite)"
    )
    say(
        f"   target-customwebshop's read-ahead of the links of back.singer's records alone: "
        f"{read_ahead_cpu * 1e6:.1f} µs CPU per record"
    )
    say(
        f"   the first sync made {first_calls / rows['target-chargebee']['records']:.2f} "
        f"Chargebee requests per webshop record"
    )

    # ---------------------------------------------------------------- the goals
    target = rows["target-chargebee"]
    goals = GoalTable(say)
    goals.header()
    archived = archived_products(forward)
    for resource in ("customers", "items", "item_prices", "invoices", "orders"):
        new = first_report["streams"].get(resource, {})
        made = new.get("created", 0) + new.get("matched", 0)
        minimum = made + (archived if resource in ("items", "item_prices") else 0)
        if made:
            per_record, allowed = first_requests[resource] / made, minimum / made + 0.02
            goals.row(
                f"2. first sync, {resource}: requests/record",
                f"{per_record:.3f}",
                f"<= {allowed:.3f} (writes minimum + 0.02)",
                per_record <= allowed,
            )
    records_read = unchanged_report["records"]
    pages = -(-records_read // 100) if records_read else 0
    goals.row(
        "2. unchanged re-run: writes, reads",
        f"{sum(unchanged.values())}, {unchanged_reads} ({records_read} records)",
        f"0, <= {pages}",
        not sum(unchanged.values()) and unchanged_reads <= pages,
    )
    for b in budgets:
        span = b["busy_seconds"]
        goals.row(
            f"3. budget {b['rpm']}/min at {b['latency_ms']} ms: use, 429s",
            f"{_pct(b['mean'])}, {b['429s']} over {span:.0f} s",
            ">= 98.0 %, 0, over >= 180 s",
            b["mean"] is not None and b["mean"] >= 0.98 and not b["429s"] and span >= 180,
        )
    requests_made = max(1, first_calls)
    per_request = (target["cpu"] - target["empty"].cpu) / requests_made
    goals.row(
        "4. target-chargebee CPU/request vs bare Session",
        f"{per_request * 1e6:.0f} / {bare_cpu * 1e6:.0f} µs = {per_request / bare_cpu:.2f}x",
        "<= 1.5x",
        per_request <= 1.5 * bare_cpu,
    )
    for name in ("tap-customwebshop", "tap-chargebee", "target-customwebshop"):
        row = rows[name]
        ratio = row["per_record"] / row["floor"]
        goals.row(f"4. {name} CPU/record vs SDK floor", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5)
    say("   5 (memory, 10k vs 100k records) and 6 (100,000 records): bench/volume.py, which")
    say("   make bench runs next")


class GoalTable:
    """The performance goals, each a measured figure beside its goal and whether it is met."""

    def __init__(self, say) -> None:
        self.say = say

    def header(self) -> None:
        self.say()
        self.say("Goals: each figure measured in this run")
        self.say(f"   {'goal':48} {'measured':34} {'goal':34} met")

    def row(self, name: str, measured: str, goal: str, met: bool) -> None:
        self.say(f"   {name:48} {measured:34} {goal:34} {'yes' if met else 'no'}")


def chargebee_requests(stats: dict) -> Counter:
    """Every request (reads, writes, refusals) by the resource it reads or writes."""
    out: Counter = Counter()
    for operation, by_status in stats["operations"].items():
        word = LIST_OF.get(operation, operation)
        resource = next((r for w, r in RESOURCE_OF.items() if word.endswith(w)), None)
        if resource is not None:
            out[resource] += sum(by_status.values())
    return out


def archived_products(recorded: Path) -> int:
    """Products in a tap's Singer file that Chargebee must hold archived (2 writes each)."""
    archived = 0
    with open(recorded, "rb") as lines:
        for line in lines:
            if line.startswith(b'{"type":"RECORD","stream":"products"'):
                record = json.loads(line)["record"]
                archived += bool(not record.get("active") or record.get("deleted_at"))
    return archived


def _ratio(writes: int, records: int) -> str:
    return f"{writes}/{records} = {writes / records:.2f}" if records else f"{writes}/0"


def _pct(share: float | None) -> str:
    return f"{share:.1%}" if share is not None else "-"


if __name__ == "__main__":
    main()
