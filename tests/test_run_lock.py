"""The run lock (sync_common.run_lock) on both databases: one run per pair at a time, the
second waits up to its setting and then names the holder, a killed holder lets go at once,
other pairs (tenants) sharing the database never wait for each other, and two targets in one
process (the SDK's in-process tests) are one run. The other run is always another process,
as it is in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from sync_common.links import LinkedSystems, LinkStore
from sync_common.run_lock import RunLockHeld

PAIR = LinkedSystems.of("http://shop-a/api/v1", "http://cb-a/api/v2")
OTHER_PAIR = LinkedSystems.of("http://shop-b/api/v1", "http://cb-b/api/v2")

HOLD = """
import sys, time
from sync_common.links import LinkedSystems, LinkStore
store = LinkStore(sys.argv[1], systems=LinkedSystems.of(sys.argv[2], sys.argv[3]))
store.run_lock().acquire(sys.argv[4], 0)
print("held", flush=True)
time.sleep(float(sys.argv[5]))
store.close()
"""


def hold_in_another_process(
    url: str, holder: str, seconds: float, pair: LinkedSystems = PAIR
) -> subprocess.Popen:
    """Another run: a process that holds the lock for `seconds`, returned once it holds it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, url, pair.webshop, pair.chargebee, holder, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_waits_for_the_first_and_then_runs(store_url):
    LinkStore(store_url, systems=PAIR).close()  # made and bound before either run
    first = hold_in_another_process(store_url, "target-chargebee run first", 2)
    told: list[str] = []
    store = LinkStore(store_url, systems=PAIR)
    waited = store.run_lock().acquire("target-chargebee run second", 30, on_wait=told.append)
    assert first.wait(10) == 0
    assert 1 <= waited < 15
    assert len(told) == 1 and "target-chargebee run first" in told[0]
    store.close()


def test_a_run_that_may_not_wait_longer_stops_naming_the_holder(store_url):
    LinkStore(store_url, systems=PAIR).close()
    holder = hold_in_another_process(store_url, "target-customwebshop run r-123", 600)
    store = LinkStore(store_url, systems=PAIR)
    started = time.monotonic()
    with pytest.raises(RunLockHeld) as refused:
        store.run_lock().acquire("target-chargebee run r-456", 1)
    assert 1 <= time.monotonic() - started < 5
    message = str(refused.value)
    assert "target-customwebshop run r-123" in message and "run_lock_wait = 1" in message
    holder.terminate()
    holder.wait()
    assert store.run_lock().acquire("target-chargebee run r-456", 5) < 5
    store.close()


def test_a_killed_run_lets_go_of_the_lock_at_once(store_url):
    LinkStore(store_url, systems=PAIR).close()
    holder = hold_in_another_process(store_url, "a run that is killed", 600)
    store = LinkStore(store_url, systems=PAIR)
    with pytest.raises(RunLockHeld, match="a run that is killed"):
        store.run_lock().acquire("the next run", 0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert store.run_lock().acquire("the next run", 5) < 5
    store.close()


def test_other_pairs_sharing_one_database_do_not_wait(pg_database):
    """Tenants: one PostgreSQL database, a schema and a lock each."""
    urls = []
    for number, pair in enumerate((PAIR, OTHER_PAIR)):
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA tenant_{number}")
        urls.append(f"{pg_database}?options=-csearch_path%3Dtenant_{number}")
        LinkStore(urls[-1], systems=pair).close()
    holder = hold_in_another_process(urls[0], "tenant 0's run", 600)
    store = LinkStore(urls[1], systems=OTHER_PAIR)
    assert store.run_lock().acquire("tenant 1's run", 0) < 1
    store.close()
    holder.terminate()
    holder.wait()


def test_two_targets_in_one_process_are_one_run(store_url):
    first, second = LinkStore(store_url, systems=PAIR), LinkStore(store_url, systems=PAIR)
    assert first.run_lock().acquire("in-process target 1", 0) < 1
    assert second.run_lock().acquire("in-process target 2", 0) < 1
    first.close()
    other_run = subprocess.run(  # another process: the second still holds the lock
        [sys.executable, "-c", HOLD, store_url, PAIR.webshop, PAIR.chargebee, "x", "0"],
        capture_output=True,
        text=True,
    )
    assert other_run.returncode != 0 and "RunLockHeld" in other_run.stderr, other_run.stderr
    assert "in-process target 1" in other_run.stderr  # the holder the first one named
    second.close()
    other = hold_in_another_process(store_url, "after both", 0)
    assert other.wait(10) == 0
