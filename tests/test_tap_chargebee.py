"""tap-chargebee against the emulator: singer-sdk's standard tap tests, a first full read
without an updated_at filter, incremental runs from state, deletions as tombstones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chargebee
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from sync_common.conflicts import unix_seconds
from sync_sandbox.process import RunningSandbox
from tap_chargebee.tap import TapChargebee
from tap_chargebee.timestamps import date_time
from tests.harness import SharedSandbox
from tests.test_chargebee_emulator import catalog, sale

KEY = "tap_test_chargebee_key_0123456789"
TAP = str(Path(sys.executable).parent / "tap-chargebee")


def client(sandbox: RunningSandbox) -> chargebee.Chargebee:
    chargebee.main.Chargebee.verify_ca_certs = False
    port = sandbox.url.rsplit(":", 1)[1]
    return chargebee.Chargebee(
        api_key=KEY, site="127", chargebee_domain=f"0.0.1:{port}", protocol="http"
    )


def populate(sandbox: RunningSandbox) -> None:
    """Customers, a catalog and a sale, enough for several pages of customers."""
    cb = client(sandbox)
    for n in range(130):
        cb.Customer.create({"id": f"c{n:03}", "email": f"c{n}@example.com", "first_name": "Å"})
    _item, price = catalog(cb)
    invoice = sale(cb, "c000", price)
    cb.Order.import_order(
        {"id": "o1", "invoice_id": invoice, "status": "queued", "created_at": 1_700_000_000,
         "order_date": 1_700_000_000, "shipping_date": 1_700_000_000}
    )  # fmt: skip


# The standard tests take their config at import; the emulator starts with the first test.
SHARED = SharedSandbox("chargebee", KEY, prepare=populate)
shared_sandbox = SHARED.started()
CONFIG = {"api_url": SHARED.url + "/api/v2", "api_key": KEY, "requests_per_minute": 100000}

TestTapChargebee = get_tap_test_class(
    TapChargebee, config=CONFIG, suite_config=SuiteConfig(max_records_limit=None)
)


def run_tap(tmp_path: Path, state: dict | None = None, config: dict = CONFIG) -> list[dict]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    command = [TAP, "--config", str(tmp_path / "config.json")]
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
        command += ["--state", str(tmp_path / "state.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def records(messages: list[dict], stream: str) -> list[dict]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def test_first_read_is_complete_then_runs_read_only_changes(tmp_path):
    SHARED.reset_stats()
    first = run_tap(tmp_path)
    assert len(records(first, "customers")) >= 130
    requests_made = SHARED.stats()["operations"]["list_customers"]["200"]
    assert requests_made >= 2  # pages of 100 walked through next_offset
    state = [m["value"] for m in first if m["type"] == "STATE"][-1]

    cb = client(SHARED)
    cb.Customer.update("c050", {"company": "Changed"})
    cb.Customer.create({"id": "gone", "email": "gone@example.com"})
    cb.Customer.delete("gone")
    second = run_tap(tmp_path, state)
    changed = {row["id"]: row for row in records(second, "customers")}
    assert {"c050", "gone"} <= changed.keys()
    # besides the changes, only the bookmark's last second is read again (`after` is
    # exclusive and counts whole seconds)
    bookmark = unix_seconds(state["bookmarks"]["customers"]["replication_key_value"])
    assert all(row["updated_at"] >= date_time(bookmark - 1) for row in changed.values())
    assert len(changed) < 130
    assert changed["c050"]["company"] == "Changed"
    assert changed["gone"]["deleted"] is True  # deletions arrive as tombstones


def test_transferred_customers_are_emitted_once(tmp_path):
    cb = client(SHARED)
    cb.BusinessEntity.create_transfers(
        {"active_resource_ids": ["c007"], "destination_business_entity_ids": ["eu"],
         "reason_codes": ["correction"], "resource_types": ["customer"]}
    )  # fmt: skip
    emitted = [
        row for row in records(run_tap(tmp_path), "customers") if row["email"] == "c7@example.com"
    ]
    assert [(row["id"], row["business_entity_id"]) for row in emitted] == [("c007", "eu")]
