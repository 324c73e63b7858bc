"""Performance goals 5 and 6: each plugin's peak memory at two sizes of webshop data, and the
first sync at the larger size with its wall time beside the budget floor.

    .venv/bin/python bench/volume.py                       # 10,000 and 100,000 records
    .venv/bin/python bench/volume.py --records 1000,5000   # a quick look

Per size: data generated in a fresh webshop sandbox (customers, products and orders in the
proportions of `bench/sync.py`), an empty Chargebee emulator, then each plugin alone as in
`make bench`: tap-customwebshop to a file, target-chargebee fed that file (the first sync),
tap-chargebee to a file, target-customwebshop fed that one (every record already linked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from measure import Run, count_records
from sync import SIZE, Bench

MB = 2**20
PLUGINS = ("tap-customwebshop", "target-chargebee", "tap-chargebee", "target-customwebshop")
GROWTH_GOAL_MB = 10


def one_size(tmp: Path, records: int, budget: int) -> dict:
    """Every plugin's run at `records` webshop records, and what the first sync cost."""
    tmp.mkdir()
    bench = Bench(tmp, records / sum(SIZE.values()))
    bench.generate()
    try:
        bench.shop = shop = bench.sandbox("customwebshop", "shop")
        chargebee = bench.sandbox("chargebee", "cb")
        bench.env = env = bench.meltano_env(shop, chargebee, tmp / "links.db")
        limit = {"requests_per_minute": budget} if budget else {}
        configs = {
            name: bench.config(env, name, **(limit if name.endswith("chargebee") else {}))
            for name in PLUGINS
        }
        forward, back = tmp / "forward.singer", tmp / "back.singer"
        runs: dict[str, Run] = {}

        def alone(name: str, what: str = "", **io) -> None:
            print(f"{records} records: {name}{what}", flush=True)
            runs[name] = bench.plugin(name, configs[name], **io)

        alone("tap-customwebshop", stdout=forward)
        alone("target-chargebee", " (the first sync)", stdin=forward)
        requests_made = chargebee.stats()["total"]
        alone("tap-chargebee", stdout=back)
        alone("target-customwebshop", stdin=back)
        report = bench.report("target-chargebee")
        return {
            "records": count_records(forward), "back_records": count_records(back),
            "runs": runs, "requests": requests_made, "budget": budget or 1_000_000,
            "written": report["records"],
        }  # fmt: skip
    finally:
        for box in list(bench.sandboxes):
            bench.stop(box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="10000,100000",
                        help="webshop records per run, smaller first")  # fmt: skip
    parser.add_argument("--budget", type=int, default=0,
                        help="the Chargebee plugins' requests_per_minute (0: as make bench, "
                        "no limit: the floor is then the machine)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    sizes = [int(n) for n in args.records.split(",")]
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-volume-"))
    try:
        results = [one_size(tmp / str(n), n, args.budget) for n in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    small, large = results[0], results[-1]

    print()
    print(f"== bench/volume.py: {small['records']} and {large['records']} webshop records, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} ==")  # fmt: skip
    print()
    print("5. Peak memory per plugin (RSS of the plugin's process)")
    print(f"   {'plugin':22} {'small MB':>9} {'large MB':>9} {'growth MB':>10} "
          f"{'goal':>8} met")  # fmt: skip
    for name in PLUGINS:
        low, high = small["runs"][name].peak_rss / MB, large["runs"][name].peak_rss / MB
        growth = high - low
        met = "yes" if growth <= GROWTH_GOAL_MB else "no"
        print(f"   {name:22} {low:>9.0f} {high:>9.0f} {growth:>10.1f} "
              f"{'<= ' + str(GROWTH_GOAL_MB):>8} {met}")  # fmt: skip
    print()
    first = large["runs"]["target-chargebee"]
    floor = large["requests"] / large["budget"] * 60
    print(f"6. First sync of {large['records']} webshop records ({large['written']} after the "
          f"maps): completed in {first.wall:.0f} s, {large['records'] / first.wall:.0f} "
          f"records/s")  # fmt: skip
    print(f"   {large['requests']} Chargebee requests; budget floor at the "
          f"{large['budget']}/min it ran with: {floor:.0f} s; at 3,500/min: "
          f"{large['requests'] / 3500 * 60:.0f} s")  # fmt: skip
    print(f"\nbench/volume.py took {(time.monotonic() - started) / 60:.1f} min"
          + (f"; files in {tmp}" if args.keep else ""))  # fmt: skip


if __name__ == "__main__":
    main()
