"""Faults during `meltano run sync` (both directions, real plugins, both sandboxes): each
fault is injected at the servers during a run, the run is repeated without it, and then both
servers are counted (tests/fault_ledger.py): every record once, every edit there, field by
field. The suite's summary table prints one line per fault."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from sync_common.links import LinkStore
from tests.fault_ledger import (
    Changes,
    Tally,
    World,
    count,
    injected,
    make_changes,
    status,
)
from tests.harness import CHARGEBEE_KEY, WEBSHOP_KEY, cb_client, webshop_patch

#: Every fault knob off (`Knobs` in sandbox/sync_sandbox/server.py).
NO_FAULTS = dict(
    rate_limited_rate=0,
    retry_after=True,
    error_rate=0,
    timeout_rate=0,
    reset_rate=0,
    drop_response_rate=0,
    truncate_rate=0,
    latency_ms=0,
)

#: Transport faults, set on both servers at once: every plugin meets them.
TRANSPORT = {
    "429 storm with Retry-After": dict(rate_limited_rate=0.3),
    "429 storm without Retry-After": dict(rate_limited_rate=0.3, retry_after=False),
    "5xx burst": dict(error_rate=0.25),
    "read timeout (hang, then drop)": dict(timeout_rate=0.15, hang_seconds=3),
    "connection reset": dict(reset_rate=0.2),
    "write committed, answer lost": dict(drop_response_rate=0.4),
}


@pytest.fixture
def world(baseline, tmp_path):
    world = World(baseline, tmp_path)
    yield world
    world.stop()


def prepared(world: World) -> Changes:
    changes = make_changes(world)
    world.shop.reset_stats()
    world.chargebee.reset_stats()
    return changes


def settle(world: World, changes: Changes, tally: Tally, rows: list) -> Tally:
    """Faults off, one clean run, then the count; the row is kept before it is judged."""
    world.shop.set_knobs(**NO_FAULTS)
    world.chargebee.set_knobs(**NO_FAULTS)
    rerun = world.run()
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    # error paths (retries, tracebacks, giving up) must not print a key either
    logs = world.outputs + [p.read_text() for p in world.tmp.glob("killed-run.log")]
    assert not [k for k in (WEBSHOP_KEY, CHARGEBEE_KEY) if any(k in log for log in logs)]
    count(world, changes, tally)
    rows.append(tally)
    assert (tally.duplicates, tally.lost) == (0, 0), tally.problems
    assert tally.found == tally.expected
    return tally


@pytest.mark.parametrize("fault", list(TRANSPORT))
def test_transport_fault_on_both_servers(world, fault_rows, fault):
    changes = prepared(world)
    for n, server in enumerate((world.shop, world.chargebee)):
        server.set_knobs(**TRANSPORT[fault], seed=11 + n)
    first = world.run()
    faults = injected(world)
    assert "cb " in faults and "shop " in faults, f"a server injected nothing: {faults}"
    settle(world, changes, Tally(fault, faults, status(first.returncode)), fault_rows)


@contextlib.contextmanager
def started(world: World) -> Iterator[subprocess.Popen]:
    """`meltano run sync` in the background; stopped (its process group) if the test fails."""
    process = world.sync.start()
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # start() made it a session leader
            process.wait()


def wait_for(condition: Callable[[], bool], process, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


KILLS = [(1, "target-chargebee"), (5, "target-customwebshop"), (6, "target-chargebee")]


@pytest.mark.parametrize(("seed", "target"), KILLS)
def test_target_killed_at_a_random_point(world, fault_rows, seed, target):
    rng = random.Random(seed)
    # these edits make ~20 writes at Chargebee and ~7 at the webshop: kill within them
    if target == "target-chargebee":
        server, point = world.chargebee, rng.randint(1, 14)
        writes = lambda: sum(world.sync.writes().values())  # noqa: E731
    else:
        server, point = world.shop, rng.randint(1, 5)
        writes = lambda: sum(world.sync.write_counts()[0].values())  # noqa: E731
    changes = prepared(world)
    server.set_knobs(latency_ms=80)  # slow enough writes for the kill to land mid-run
    with started(world) as process:
        wait_for(lambda: writes() >= point, process, f"{point} writes")
        killed = world.sync.target_processes(target)
        assert killed, f"{target} not found"
        for victim in killed:
            victim.send_signal(signal.SIGKILL)
        process.wait(timeout=120)
    assert process.returncode != 0
    what = f"SIGKILL {target} after {point} writes"
    settle(world, changes, Tally(f"target killed (seed {seed})", what, "killed"), fault_rows)


def test_link_store_deleted_between_runs(world, fault_rows):
    changes = prepared(world)
    assert world.run().returncode == 0  # the edits synced, and linked
    for path in world.tmp.glob("links.db*"):
        path.unlink()
    # and an edit on each side after the loss: no link says which side changed, so the
    # conflict policy (newest wins) decides; Chargebee counts whole seconds, and a tie goes
    # to Chargebee
    time.sleep(1.1)
    shop_edit = changes.edits[0]  # a customer edited in the webshop before
    cb_edit = next(e for e in changes.edits if "company" in e[2])  # and one in Chargebee
    webshop_patch(world.sync, "customers", shop_edit[1], {"phone": "+1 555 0100"})
    cb_client(world.chargebee).Customer.update(f"cws_{cb_edit[1]}", {"company": "After the loss"})
    changes.edits.remove(shop_edit)  # both superseded
    changes.edits.remove(cb_edit)
    changes.edits += [
        ("customers", shop_edit[1], {"phone": "+1 555 0100"}),
        ("customers", cb_edit[1], {"company": "After the loss"}),
    ]
    # every record on both sides again, with no link: deterministic ids and matching must
    # find the records, not make second ones
    first = world.run("--full-refresh")
    tally = Tally("link store deleted, full re-read", "links.db deleted", status(first.returncode))
    settle(world, changes, tally, fault_rows)
    letters = LinkStore(world.sync.link_store_url).dead_letters()
    assert not letters, [(d.stream, d.record_key, d.reason) for d in letters]


def test_chargebee_restarted_mid_run(world, fault_rows):
    changes = prepared(world)
    world.chargebee.set_knobs(latency_ms=80)
    with started(world) as process:
        wait_for(lambda: sum(world.sync.writes().values()) >= 4, process, "4 Chargebee writes")
        world.restart_chargebee()  # same database file, same port; in-flight requests are cut
        process.wait(timeout=240)
    tally = Tally("Chargebee restarted mid-run", "1 restart (emulator)", status(process.returncode))
    settle(world, changes, tally, fault_rows)
