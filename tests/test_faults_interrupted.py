"""Runs of `sync` that are interrupted: a target killed at a random point and Chargebee
restarted mid-run (both under `meltano run` itself), the link store deleted between runs. As
in tests/test_faults.py the run is repeated without the fault and both servers are counted
(tests/fault_ledger.py)."""

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
from tests.convergence import extra_seeds
from tests.fault_ledger import Tally, World, prepared, settle, status
from tests.harness import cb_client, webshop_patch

#: `meltano run` itself, for a run killed or cut mid-way: what Meltano's state makes of it.
BY_MELTANO = pytest.mark.meltano


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


TARGETS = ("target-chargebee", "target-customwebshop")
#: Seeds 5 and 6 on every `make test` (one kill of each target: an even seed kills
#: target-chargebee); more with SYNC_KILL_SEEDS, written as SYNC_CONVERGENCE_SEEDS is
#: (`7-20`, `7,9`, or a count: `10`).
SEEDS = sorted({5, 6, *extra_seeds(os.environ.get("SYNC_KILL_SEEDS"))})
KILLS = [(seed, TARGETS[seed % 2]) for seed in SEEDS]


@BY_MELTANO
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


@BY_MELTANO
def test_chargebee_restarted_mid_run(world, fault_rows):
    changes = prepared(world)
    world.chargebee.set_knobs(latency_ms=80)
    with started(world) as process:
        wait_for(lambda: sum(world.sync.writes().values()) >= 4, process, "4 Chargebee writes")
        world.restart_chargebee()  # same database file, same port; in-flight requests are cut
        process.wait(timeout=240)
    tally = Tally("Chargebee restarted mid-run", "1 restart (emulator)", status(process.returncode))
    settle(world, changes, tally, fault_rows)
