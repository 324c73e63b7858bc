"""Fixtures that start the real sandbox servers on free loopback ports, and a `sync` run
against them (tests/harness.py)."""

from __future__ import annotations

import pytest

from sync_sandbox.process import RunningSandbox, start_sandbox
from tests.harness import CHARGEBEE_KEY, GENERATE, WEBSHOP_KEY, Sync


@pytest.fixture
def webshop(tmp_path) -> RunningSandbox:
    sandbox = start_sandbox("customwebshop", str(tmp_path / "webshop.db"), WEBSHOP_KEY)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def chargebee(tmp_path) -> RunningSandbox:
    sandbox = start_sandbox("chargebee", str(tmp_path / "chargebee.db"), CHARGEBEE_KEY)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def shop(tmp_path):
    sandbox = start_sandbox("customwebshop", str(tmp_path / "shop.db"), WEBSHOP_KEY, *GENERATE)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sync(tmp_path, shop, chargebee) -> Sync:
    return Sync(tmp_path, shop, chargebee)


# ---------------------------------------------------------------------------- fault suite

FAULT_ROWS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def fault_rows(request) -> list:
    """One Tally per fault (tests/fault_ledger.py), printed at the end of the session."""
    return request.config.stash.setdefault(FAULT_ROWS, [])


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
    """The webshop's generated records synced once to an empty Chargebee, stopped; each fault
    test starts both sandboxes on copies of these files."""
    from tests.fault_ledger import make_baseline

    return make_baseline(tmp_path_factory.mktemp("baseline"))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = config.stash.get(FAULT_ROWS, [])
    if not rows:
        return
    from tests.fault_ledger import HEADER

    terminalreporter.section("faults: records expected, found, duplicated and lost")
    terminalreporter.write_line(HEADER)
    for row in rows:
        terminalreporter.write_line(row.line())
