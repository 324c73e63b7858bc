"""Two `meltano run sync` at once for one pair of systems, as an orchestrator starts them when
schedules overlap: a second runner (its own Meltano system database, the same link store)
with a short `run_lock_wait` stops before any write, naming the run that holds the lock;
nothing is duplicated and the next sync writes nothing. (A second run that waits and then
runs: tests/test_tenants.py.)"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest

from tests.harness import REPO, TwoWaySync, cb_all, cb_client, webshop_get, webshop_patch

#: `meltano run` itself: two runners with their own Meltano system databases at once.
pytestmark = pytest.mark.meltano

#: Emulated Chargebee latency while the first run writes: long enough to overlap it.
LATENCY_MS = 1500


def start_first_run(sync: TwoWaySync) -> subprocess.Popen:
    """Edits that give the forward sync work, then the first run, returned once its
    target-chargebee is running."""
    for customer in webshop_get(sync, "customers"):
        if not customer["deleted_at"]:
            webshop_patch(sync, "customers", customer["id"], {"company": "Overlap AB"})
    sync.chargebee.set_knobs(latency_ms=LATENCY_MS)
    first = subprocess.Popen(
        sync.command(), cwd=REPO, env=sync.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not sync.target_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sync.target_processes(), "the first run's target-chargebee did not start"
    time.sleep(1)  # past its start-up: it holds the lock and writes
    return first


def second_runner(sync: TwoWaySync, **settings: str) -> subprocess.CompletedProcess:
    """Another machine's runner: its own system database, the shared link store."""
    env = {**sync.env, "MELTANO_DATABASE_URI": f"sqlite:///{sync.tmp / 'meltano-second.db'}"}
    for target in ("TARGET_CHARGEBEE", "TARGET_CUSTOMWEBSHOP"):
        env.update({f"{target}_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        sync.command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def assert_no_duplicates(sync: TwoWaySync) -> None:
    cb = cb_client(sync.chargebee)
    emails = Counter(c["email"] for c in cb_all(cb, "customers"))
    assert [e for e, n in emails.items() if n > 1] == []
    shop = Counter(c["email"] for c in webshop_get(sync, "customers") if not c["deleted_at"])
    assert [e for e, n in shop.items() if n > 1] == []


def test_an_overlapping_run_that_may_not_wait_stops_before_writing(two_way):
    first = start_first_run(two_way)
    second = second_runner(two_way, run_lock_wait="1")
    two_way.chargebee.set_knobs(latency_ms=0)  # the overlap is over: let the first run finish
    _, first_log = first.communicate(timeout=600)
    assert first.returncode == 0, first_log[-3000:]
    assert second.returncode != 0
    assert "Stopped before any write" in second.stderr
    holder = two_way.last_report()["run_id"]  # the first run's: the second wrote none
    assert f"target-chargebee run {holder}" in second.stderr
    assert_no_duplicates(two_way)
    two_way.reset_counts()
    two_way.run()
    assert two_way.write_counts() == (Counter(), Counter())
