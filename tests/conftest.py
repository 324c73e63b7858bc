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
