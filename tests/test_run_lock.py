"""The run lock (sync_common.run_lock) on both databases: one run per pair at a time, the
second waits up to its setting and then names the holder, a killed holder lets go at once,
and other pairs (tenants) sharing the database never wait for each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from sync_common.links import LinkedSystems, LinkStore
from sync_common.run_lock import RunLockHeld

PAIR = LinkedSystems.of("http://shop-a/api/v1", "http://cb-a/api/v2")
OTHER_PAIR = LinkedSystems.of("http://shop-b/api/v1", "http://cb-b/api/v2")


def test_a_second_run_waits_for_the_first_and_then_runs(store_url):
    first, second = LinkStore(store_url, systems=PAIR), LinkStore(store_url, systems=PAIR)
    first.run_lock().acquire("target-chargebee run first", 0)
    told: list[str] = []
    threading.Timer(1.0, first.close).start()  # the first run ends after a second
    waited = second.run_lock().acquire("target-chargebee run second", 30, on_wait=told.append)
    assert 0.9 <= waited < 10
    assert len(told) == 1 and "target-chargebee run first" in told[0]
    second.close()


def test_a_run_that_may_not_wait_longer_stops_naming_the_holder(store_url):
    holder, waiting = LinkStore(store_url, systems=PAIR), LinkStore(store_url, systems=PAIR)
    holder.run_lock().acquire("target-customwebshop run r-123 (pid 1 on host-a)", 0)
    started = time.monotonic()
    with pytest.raises(RunLockHeld) as refused:
        waiting.run_lock().acquire("target-chargebee run r-456", 1)
    assert 1 <= time.monotonic() - started < 5
    message = str(refused.value)
    assert "target-customwebshop run r-123" in message and "run_lock_wait = 1" in message
    holder.close()
    assert waiting.run_lock().acquire("target-chargebee run r-456", 0) < 1
    waiting.close()


def test_other_pairs_sharing_the_database_do_not_wait(pg_database):
    """Tenants: one PostgreSQL database, a schema each, a lock each."""
    stores = []
    for number, pair in enumerate((PAIR, OTHER_PAIR)):
        schema = f"tenant_{number}"
        url = f"{pg_database}?options=-csearch_path%3D{schema}"
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        stores.append(LinkStore(url, systems=pair))
    for store in stores:
        assert store.run_lock().acquire(f"run of {store.systems}", 0) < 1
    for store in stores:
        store.close()


HOLD = """
import sys, time
from sync_common.links import LinkedSystems, LinkStore
store = LinkStore(sys.argv[1], systems=LinkedSystems.of(*sys.argv[2:4]))
store.run_lock().acquire("a run that is killed", 0)
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_run_lets_go_of_the_lock_at_once(store_url):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, store_url, PAIR.webshop, PAIR.chargebee],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    waiting = LinkStore(store_url, systems=PAIR)
    with pytest.raises(RunLockHeld, match="a run that is killed"):
        waiting.run_lock().acquire("the next run", 0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert waiting.run_lock().acquire("the next run", 5) < 5
    waiting.close()
