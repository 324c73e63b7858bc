"""Fixtures that start the real sandbox servers on free loopback ports, and a `sync` run
against them (tests/harness.py)."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from hypothesis import settings

from sync_sandbox.process import RunningSandbox
from tests import direct_run, harness
from tests.harness import CHARGEBEE_KEY, GENERATE, SMALL, WEBSHOP_KEY, Sync, TwoWaySync
from tests.plugin_forks import start_sandbox

#: `make test` draws the same hypothesis examples every run, so that its verdict is repeatable;
#: `HYPOTHESIS_PROFILE=explore` draws new ones on each run, to look for failures.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session", autouse=True)
def share_meltano_dumps(tmp_path_factory) -> None:
    """The xdist workers of one run ask Meltano for the direct runner's base config once,
    between them, in the run's temporary directory (tests/direct_run.py)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "meltano-dumps.json"
        direct_run.SHARED_DUMPS = shared


def pytest_collection_modifyitems(items) -> None:
    """The tests that run Meltano itself first (each takes seconds to a minute and a half):
    the workers share out the short ones at the end, rather than wait on a long one."""
    items.sort(key=lambda item: item.get_closest_marker("meltano") is None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """Before the test's fixtures: the Syncs made for it run `meltano run` itself when it is
    marked `meltano`, else the direct runner (a module fixture: as its first test)."""
    harness.RUN_WITH_MELTANO = item.get_closest_marker("meltano") is not None


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


#: The machine's PostgreSQL (trust auth): tests make a fresh database each and drop it.
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_database():
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"sync_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A link store URL on each database the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'links.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def small_shop(tmp_path) -> RunningSandbox:
    sandbox = start_sandbox("customwebshop", str(tmp_path / "shop.db"), WEBSHOP_KEY, *SMALL)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def two_way(baseline, tmp_path) -> TwoWaySync:
    """Both sandboxes after a first `meltano run sync` (the webshop's records in Chargebee):
    copies of the session's baseline, which ran it once."""
    from tests.fault_ledger import World

    world = World(baseline, tmp_path, fast_retries=False)
    yield world.sync
    world.stop()


# ---------------------------------------------------------------------------- fault suite


@pytest.fixture
def fault_rows(request) -> list:
    """The test's Tallies (tests/fault_ledger.py): their lines go with the test's report (so
    also from an xdist worker) and are printed at the end of the session."""
    tallies: list = []
    yield tallies
    request.node.user_properties.extend(("fault_row", tally.line()) for tally in tallies)


def pytest_runtest_logreport(report) -> None:
    """Collects, in the process that prints the summary (xdist's controller too), the fault
    table's rows and the convergence test's summary lines."""
    if report.when == "teardown":
        for name, value in report.user_properties:
            if name in _LINES:
                _LINES[name].append(value)


_LINES: dict[str, list[str]] = {"fault_row": [], "convergence": [], "tenants": []}


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
    """The webshop's generated records synced once to an empty Chargebee, stopped; each fault
    test starts both sandboxes on copies of these files."""
    from tests.fault_ledger import make_baseline

    return make_baseline(tmp_path_factory.mktemp("baseline"))


@pytest.fixture
def world(baseline, tmp_path):
    from tests.fault_ledger import World

    world = World(baseline, tmp_path)
    yield world
    world.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _LINES["convergence"]:
        terminalreporter.section("two-way convergence (tests/test_convergence.py)")
        for line in _LINES["convergence"]:
            terminalreporter.write_line(line)
    if _LINES["tenants"]:
        terminalreporter.section("tenants in parallel (tests/test_tenants.py)")
        for line in _LINES["tenants"]:
            terminalreporter.write_line(line)
    if _LINES["fault_row"]:
        from tests.fault_ledger import HEADER

        terminalreporter.section("faults: records expected, found, duplicated and lost")
        terminalreporter.write_line(HEADER)
        for row in _LINES["fault_row"]:
            terminalreporter.write_line(row)
