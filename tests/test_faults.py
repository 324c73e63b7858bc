"""Transport faults during `meltano run sync` (both directions, real plugins, both
sandboxes): each fault is injected at both servers during a run, the run is repeated without
it, and then both servers are counted (tests/fault_ledger.py): every record once, every edit
there, field by field. The suite's summary table prints one line per fault. Runs that are
interrupted (a killed target, a lost link store, a restarted server):
tests/test_faults_interrupted.py."""

from __future__ import annotations

import pytest

from tests.fault_ledger import Tally, injected, prepared, settle, status

#: Transport faults, set on both servers at once: every plugin meets them.
TRANSPORT = {
    "429 storm with Retry-After": dict(rate_limited_rate=0.15),
    "429 storm without Retry-After": dict(rate_limited_rate=0.15, retry_after=False),
    "5xx burst": dict(error_rate=0.25),
    "read timeout (hang, then drop)": dict(timeout_rate=0.15, hang_seconds=2),
    "connection reset": dict(reset_rate=0.2),
    "write committed, answer lost": dict(drop_response_rate=0.4),
}


@pytest.mark.parametrize("fault", list(TRANSPORT))
def test_transport_fault_on_both_servers(world, fault_rows, fault):
    changes = prepared(world)
    for n, server in enumerate((world.shop, world.chargebee)):
        server.set_knobs(**TRANSPORT[fault], seed=11 + n)
    first = world.run()
    faults = injected(world)
    assert "cb " in faults and "shop " in faults, f"a server injected nothing: {faults}"
    settle(world, changes, Tally(fault, faults, status(first.returncode)), fault_rows)
