"""Fixtures that start the real sandbox servers on free loopback ports."""

from __future__ import annotations

import pytest

from sync_sandbox.process import RunningSandbox, start_sandbox

WEBSHOP_KEY = "test_webshop_key_0123456789"
CHARGEBEE_KEY = "test_cb_key_0123456789"


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
