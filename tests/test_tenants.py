"""Tenants as an orchestrator runs them: two webshops, two Chargebee sites, one Meltano
project, each tenant its own state (`--state-id-suffix`), all sharing one PostgreSQL database
for Meltano's system database (and so the state) and for the link stores (a schema per
tenant). The two `meltano run sync` run at once, with a second, overlapping run of one
tenant (`--force`, as a retry of a run that seems to hang), which waits on the run lock.
Every tenant ends with its own records only, all of them, equal on both sides, no duplicate,
and a next sync (both at once again) that writes nothing. (A third tenant would show nothing
a second does not: each pair of tenants is isolated alike.)"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections import Counter

import psycopg
import pytest

from sync_common.run_lock import WAITING
from tests.harness import (
    BIN,
    CHARGEBEE_KEY,
    REPO,
    WEBSHOP_KEY,
    TwoWaySync,
    assert_mirrors,
    cb_all,
    cb_client,
    expected_chargebee,
    webshop_get,
)
from tests.plugin_forks import start_sandbox

#: `meltano run` itself: tenants in parallel, each its own Meltano project state (on PostgreSQL).
pytestmark = pytest.mark.meltano

TENANTS = ("tenant_a", "tenant_b")
GENERATE = "customers=12,products=6,orders=12"


def tenant_sync(home, number: int, name: str, pg_database: str) -> TwoWaySync:
    shop = start_sandbox(
        "customwebshop", str(home / "shop.db"), WEBSHOP_KEY,
        "--generate", GENERATE, "--seed", str(20 + number),
    )  # fmt: skip
    chargebee = start_sandbox("chargebee", str(home / "cb.db"), CHARGEBEE_KEY, "--site", name)
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    sync = TwoWaySync(home, shop, chargebee)
    store = f"{pg_database}?options=-csearch_path%3D{name}"
    sync.env.update(
        {f"{plugin}_LINK_STORE_URL": store for plugin in
         ("TAP_CUSTOMWEBSHOP", "TARGET_CHARGEBEE", "TAP_CHARGEBEE", "TARGET_CUSTOMWEBSHOP")},
        MELTANO_DATABASE_URI=pg_database.replace("postgresql://", "postgresql+psycopg://"),
    )  # fmt: skip
    return sync


_RUN_NUMBERS = itertools.count()


class Run:
    """`meltano run sync` of one tenant in the background, its log in a file (readable while
    it runs)."""

    def __init__(self, sync: TwoWaySync, name: str, *extra: str) -> None:
        self.log = sync.tmp / f"run-{next(_RUN_NUMBERS)}.log"
        command = [*sync.command(), "--state-id-suffix", name, *extra]
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=sync.env, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def says(self, text: str) -> bool:
        return text in self.log.read_text()

    def finish(self) -> tuple[int, str]:
        self.process.wait(timeout=900)
        return self.process.returncode, self.log.read_text()


def run_all(syncs: dict[str, TwoWaySync]) -> None:
    runs = {name: Run(sync, name) for name, sync in syncs.items()}
    for name, (code, log) in {name: run.finish() for name, run in runs.items()}.items():
        assert code == 0, f"{name}: {log[-3000:]}"


def duplicates(sync: TwoWaySync) -> int:
    cb = Counter(c["email"] for c in cb_all(cb_client(sync.chargebee), "customers"))
    shop = Counter(c["email"] for c in webshop_get(sync, "customers") if not c["deleted_at"])
    return sum(n - 1 for n in cb.values() if n > 1) + sum(n - 1 for n in shop.values() if n > 1)


def waited(sync: TwoWaySync) -> float:
    reports = [json.loads(p.read_text()) for p in sync.reports.glob("*.json")]
    return max(r["run_lock_waited_seconds"] for r in reports)


def test_tenants_in_parallel_with_an_overlapping_run(tmp_path, pg_database, record_property):
    syncs: dict[str, TwoWaySync] = {}
    try:
        for number, name in enumerate(TENANTS):
            (tmp_path / name).mkdir()
            syncs[name] = tenant_sync(tmp_path / name, number, name, pg_database)
        first = syncs[TENANTS[0]]
        # Meltano's system database is made once, as a deployment does before its schedules
        subprocess.run([str(BIN / "meltano"), "state", "list"], cwd=REPO, env=first.env,
                       check=True, capture_output=True)  # fmt: skip
        # its forward sync lasts past the overlapping run's start-up, however slow the machine
        first.chargebee.set_knobs(latency_ms=3000)
        running = {name: Run(sync, name) for name, sync in syncs.items()}
        deadline = time.monotonic() + 300
        while not first.target_processes() and time.monotonic() < deadline:
            time.sleep(0.2)  # the first run's forward sync has started: it holds the lock
        overlapping = Run(first, TENANTS[0], "--force")
        while (
            not overlapping.says(WAITING)
            and overlapping.process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # until the overlapping run's target says it waits for the lock
        assert overlapping.says(WAITING), "the overlapping run did not wait"
        time.sleep(1)  # it waits (at least this long): let both runs finish
        first.chargebee.set_knobs(latency_ms=0)
        results = {name: run.finish() for name, run in running.items()}
        overlap_code, overlap_log = overlapping.finish()
        for name, (code, log) in results.items():
            assert code == 0, f"{name}: {log[-3000:]}"
        assert overlap_code == 0, overlap_log[-3000:]

        lines = []
        for name, sync in syncs.items():
            shop = {c["id"]: c for c in webshop_get(sync, "customers")}
            remote = {c["id"]: c for c in cb_all(cb_client(sync.chargebee), "customers")}
            expected = expected_chargebee(sync)
            cb = cb_client(sync.chargebee)
            held = {resource: {r["id"] for r in cb_all(cb, resource)} for resource in expected}
            lost = sum(
                1 for resource, wanted in expected.items() for record_id, record in wanted.items()
                if not record.get("deleted") and record_id not in held[resource]
            )  # fmt: skip
            lines.append(
                f"tenant {name}: {sum(map(len, held.values()))} Chargebee records, "
                f"duplicates {duplicates(sync)}, lost {lost}, "
                f"longest run-lock wait {waited(sync):.1f} s"
            )
            assert lost == 0 and duplicates(sync) == 0, lines[-1]
            assert_mirrors(sync, expected)  # its own records, all, every field alike
            live = [c for c in shop.values() if not c["deleted_at"]]
            assert len(remote) == len(live), f"{name}: {len(remote)} in Chargebee, {len(live)}"
        assert waited(first) >= 1, "the overlapping run did not wait for the first"
        for sync in syncs.values():
            sync.reset_counts()
        run_all(syncs)
        for name, sync in syncs.items():
            assert sync.write_counts() == (Counter(), Counter()), name
        for line in lines:
            print(line)
            record_property("tenants", line)
    finally:
        for sync in syncs.values():
            sync.shop.stop()
            sync.chargebee.stop()
