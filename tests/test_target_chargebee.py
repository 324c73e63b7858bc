"""target-chargebee end to end: `meltano run tap-customwebshop target-chargebee` against the
webshop sandbox (generated data) and the Chargebee emulator, checked with the official
chargebee SDK, field by field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import chargebee
import psutil
import pytest
import requests
import yaml
from singer_sdk.mapper import PluginMapper

from sync_common.links import LinkStore
from sync_sandbox.process import start_sandbox
from target_chargebee.params import CONTROL_FIELDS, remote_value, to_params, wire_value
from tests.conftest import CHARGEBEE_KEY, WEBSHOP_KEY

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GENERATE = ("--generate", "customers=30,products=20,orders=40", "--seed", "1")
RESOURCES = ("customers", "items", "item_prices", "invoices", "orders")
SDK_MODEL = {
    "customers": ("Customer", "customer"),
    "items": ("Item", "item"),
    "item_prices": ("ItemPrice", "item_price"),
    "invoices": ("Invoice", "invoice"),
    "orders": ("Order", "order"),
}
#: Mapped keys the emulator answers under another name (Chargebee's documented shape).
NOT_ECHOED = ("payments[",)  # an imported payment comes back as linked_payments


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def shop(tmp_path):
    sandbox = start_sandbox("customwebshop", str(tmp_path / "shop.db"), WEBSHOP_KEY, *GENERATE)
    yield sandbox
    sandbox.stop()


class Sync:
    """One isolated Meltano project state (system db, reports, link store) per test."""

    def __init__(self, tmp: Path, shop, chargebee_sandbox, link_store_url: str | None = None):
        self.tmp = tmp
        self.shop = shop
        self.chargebee = chargebee_sandbox
        self.reports = tmp / "reports"
        self.link_store_url = link_store_url or f"sqlite:///{tmp / 'links.db'}"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MELTANO_ENVIRONMENT": "dev",
            "MELTANO_DATABASE_URI": f"sqlite:///{tmp / 'meltano.db'}",
            "MELTANO_SYS_DIR_ROOT": str(tmp / ".meltano"),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_DISABLE_TRACKING": "true",
            "TAP_CUSTOMWEBSHOP_API_URL": shop.url + "/api/v1",
            "TAP_CUSTOMWEBSHOP_API_KEY": WEBSHOP_KEY,
            "TARGET_CHARGEBEE_API_URL": chargebee_sandbox.url + "/api/v2",
            "TARGET_CHARGEBEE_API_KEY": CHARGEBEE_KEY,
            "TARGET_CHARGEBEE_LINK_STORE_URL": self.link_store_url,
            "TARGET_CHARGEBEE_REPORT_DIR": str(self.reports),
            "TARGET_CHARGEBEE_REQUESTS_PER_MINUTE": "100000",
            "TARGET_CHARGEBEE_MAX_CONCURRENCY": "4",
            "SYNC_TEST_MARKER": uuid.uuid4().hex,  # finds this test's processes
        }

    def command(self) -> list[str]:
        return [str(BIN / "meltano"), "run", "tap-customwebshop", "target-chargebee"]

    def run(
        self, check: bool = True, force: bool = False, **settings: Any
    ) -> subprocess.CompletedProcess:
        env = {**self.env, **{f"TARGET_CHARGEBEE_{k.upper()}": str(v) for k, v in settings.items()}}
        command = self.command() + (["--force"] if force else [])
        result = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        if check and result.returncode != 0:
            pytest.fail(f"meltano run failed ({result.returncode}):\n{result.stderr[-6000:]}")
        return result

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "killed-run.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )

    def target_processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if "target-chargebee" in cmdline and "meltano" not in cmdline.split()[0]:
                    marker = process.environ().get("SYNC_TEST_MARKER")
                    if marker == self.env["SYNC_TEST_MARKER"]:
                        found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def last_report(self) -> dict:
        reports = sorted(self.reports.glob("target-chargebee-*.json"), key=os.path.getmtime)
        return json.loads(reports[-1].read_text())

    def writes(self) -> Counter:
        """POSTs the emulator answered, by operation (all statuses)."""
        stats = self.chargebee.stats()["operations"]
        return Counter(
            {op: sum(by_status.values()) for op, by_status in stats.items() if is_write(op)}
        )


def is_write(operation: str) -> bool:
    """Operations of the emulator that are POSTs (everything but retrieve/list)."""
    name = operation.rsplit(".", 1)[-1].lower()
    return not (name.startswith("retrieve") or name.startswith("list") or name == "get")


@pytest.fixture
def sync(tmp_path, shop, chargebee) -> Sync:
    return Sync(tmp_path, shop, chargebee)


def cb_client(sandbox) -> chargebee.Chargebee:
    port = sandbox.url.rsplit(":", 1)[1]
    chargebee.main.Chargebee.verify_ca_certs = False
    return chargebee.Chargebee(
        api_key=CHARGEBEE_KEY, site="127", chargebee_domain=f"0.0.1:{port}", protocol="http"
    )


def cb_all(client: chargebee.Chargebee, resource: str, **filters: Any) -> list[dict]:
    model, name = SDK_MODEL[resource]
    rows, offset = [], None
    while True:
        params = {"limit": 100, **filters}
        if offset:
            params["offset"] = offset
        page = getattr(client, model).list(params)
        rows.extend(getattr(entry, name).raw_data for entry in page.list)
        offset = page.next_offset
        if not offset:
            return rows


# ---------------------------------------------------------------------------- expectations


def webshop_records(sync: Sync) -> dict[str, list[dict]]:
    """What the tap reads from the webshop now (RECORD messages by stream), and schemas."""
    result = subprocess.run(
        [str(BIN / "meltano"), "invoke", "tap-customwebshop"],
        cwd=REPO,
        env=sync.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    records: dict[str, list[dict]] = {"__schemas__": {}}  # type: ignore[dict-item]
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message["type"] == "SCHEMA":
            records["__schemas__"][message["stream"]] = message  # type: ignore[index]
        elif message["type"] == "RECORD":
            records.setdefault(message["stream"], []).append(message["record"])
    return records


def expected_chargebee(sync: Sync) -> dict[str, dict[str, dict]]:
    """The webshop's records through meltano.yml's maps: what Chargebee must hold, by id."""
    config = yaml.safe_load((REPO / "meltano.yml").read_text())
    target = next(p for p in config["plugins"]["loaders"] if p["name"] == "target-chargebee")
    mapper = PluginMapper(plugin_config=target["config"], logger=__import__("logging").getLogger())
    source = webshop_records(sync)
    out: dict[str, dict[str, dict]] = {r: {} for r in RESOURCES}
    for stream, message in source["__schemas__"].items():  # type: ignore[union-attr]
        mapper.register_raw_stream_schema(stream, message["schema"], message["key_properties"])
    for stream, rows in source.items():
        if stream == "__schemas__":
            continue
        for row in rows:
            for stream_map in mapper.stream_maps[stream]:
                mapped = stream_map.transform(dict(row))
                if mapped is not None and stream_map.stream_alias in out:
                    out[stream_map.stream_alias][mapped["id"]] = mapped
    return out


def assert_mirrors(sync: Sync, expected: dict[str, dict[str, dict]]) -> None:
    """Every mapped, non-deleted record exists in Chargebee with every mapped field equal."""
    client = cb_client(sync.chargebee)
    for resource in RESOURCES:
        actual = {row["id"]: row for row in cb_all(client, resource)}
        wanted = {i: r for i, r in expected[resource].items() if not r.get("deleted")}
        assert wanted, f"no {resource} generated"
        missing = sorted(set(wanted) - set(actual))
        assert not missing, f"{resource} missing in Chargebee: {missing[:5]}"
        for record_id, record in wanted.items():
            remote = actual[record_id]
            for key, value in to_params(record).items():
                if key.startswith(NOT_ECHOED):
                    continue
                theirs = wire_value(remote_value(remote, key))
                assert (value or None) == (theirs or None), (
                    f"{resource} {record_id} {key}: webshop {value!r}, Chargebee {theirs!r}"
                )
            assert set(CONTROL_FIELDS).isdisjoint(remote) or "deleted" in remote


# ---------------------------------------------------------------------------- tests


def test_first_run_mirrors_the_webshop_then_reruns_write_nothing(sync):
    sync.run()
    expected = expected_chargebee(sync)
    assert_mirrors(sync, expected)
    report = sync.last_report()
    assert report["rejected"] == 0, report["rejections"]
    # Chargebee holds exactly the webshop's records, no more.
    client = cb_client(sync.chargebee)
    customers = cb_all(client, "customers")
    assert len(customers) == len([c for c in expected["customers"].values() if not c["deleted"]])
    assert len({c["email"] for c in customers}) == len(customers)

    sync.chargebee.reset_stats()
    sync.run()
    assert sum(sync.writes().values()) == 0, sync.writes()
    assert sync.last_report()["rejected"] == 0


def test_edits_make_exactly_the_corresponding_updates(sync):
    sync.run()
    customer = webshop_get(sync, "customers")[0]
    product = next(p for p in webshop_get(sync, "products") if p.get("active"))
    order = next(o for o in webshop_get(sync, "orders") if o.get("paid_at"))
    webshop_patch(sync, "customers", customer["id"], {"phone": "+49 30 5550100"})
    webshop_patch(sync, "products", product["id"], {"price": int(product["price"]) + 100})
    webshop_patch(sync, "orders", order["id"], {"tracking_number": "TRACK-1", "carrier": "DHL"})
    sync.chargebee.reset_stats()
    sync.run()
    writes = +sync.writes()
    assert sum(writes.values()) == 3, writes  # one customer, one item price, one order update
    assert_mirrors(sync, expected_chargebee(sync))
    report = sync.last_report()["streams"]
    assert report["customers"]["updated"] == 1
    assert report["item_prices"]["updated"] == 1
    assert report["items"]["updated"] == 0
    assert report["orders"]["updated"] == 1
    assert report["invoices"]["updated"] == 0


def test_customers_are_placed_in_the_business_entity_and_transferred_on_change(sync):
    sync.run(business_entity_id="eu")
    client = cb_client(sync.chargebee)
    placed = {c["business_entity_id"] for c in cb_all(client, "customers")}
    assert placed == {"eu"}
    customer = next(c for c in webshop_get(sync, "customers") if not c["deleted_at"])
    webshop_patch(sync, "customers", customer["id"], {"phone": "+46 8 123 456"})
    sync.chargebee.reset_stats()
    sync.run(business_entity_id="us")
    writes = +sync.writes()
    # read again: the edited customer and, as updated_since is inclusive, maybe run 1's last
    assert writes["update_customer"] == 1 and writes["transfer"] in (1, 2), writes
    assert set(writes) == {"update_customer", "transfer"}
    moved = client.Customer.retrieve(f"cws_{customer['id']}").customer
    assert (moved.business_entity_id, moved.phone) == ("us", "+46 8 123 456")
    active = [c for c in cb_all(client, "customers") if c.get("active_id") in (None, c["id"])]
    assert len(active) == len({c["email"] for c in active})  # no customer twice


def test_killed_run_then_rerun_converges_without_duplicates(sync):
    sync.chargebee.set_knobs(latency_ms=40)
    process = sync.start()
    deadline = time.monotonic() + 120
    while sum(sync.writes().values()) < 40:
        assert process.poll() is None, (sync.tmp / "killed-run.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run made too few writes"
        time.sleep(0.2)
    targets = sync.target_processes()
    assert targets, "target process not found"
    for target in targets:
        target.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode != 0
    sync.chargebee.set_knobs(latency_ms=0)
    sync.run(force=True)  # the killed run still counts as running for Meltano
    expected = expected_chargebee(sync)
    assert_mirrors(sync, expected)
    client = cb_client(sync.chargebee)
    for resource in RESOURCES:
        ids = [row["id"] for row in cb_all(client, resource)]
        assert len(ids) == len(set(ids))
        wanted = {i for i, r in expected[resource].items() if not r.get("deleted")}
        assert set(ids) == wanted, resource
    emails = [c["email"] for c in cb_all(client, "customers")]
    assert len(emails) == len(set(emails))


def test_server_errors_timeouts_and_lost_answers_lose_nothing_and_duplicate_nothing(sync):
    # 5xx before acting, hangs, and writes that were applied but whose answer was lost:
    # the client retries with the same idempotency key, so each write is applied once
    sync.chargebee.set_knobs(
        error_rate=0.05, timeout_rate=0.01, hang_seconds=3, drop_response_rate=0.05, seed=5
    )
    sync.run(request_timeout=2)
    sync.chargebee.set_knobs(error_rate=0, timeout_rate=0, drop_response_rate=0)
    statuses = Counter()
    for by_status in sync.chargebee.stats()["operations"].values():
        statuses.update({int(status): n for status, n in by_status.items()})
    assert sum(n for status, n in statuses.items() if status >= 500) > 0
    assert sync.last_report()["rejected"] == 0
    expected = expected_chargebee(sync)
    assert_mirrors(sync, expected)
    client = cb_client(sync.chargebee)
    for resource in RESOURCES:
        ids = [row["id"] for row in cb_all(client, resource)]
        wanted = {i for i, r in expected[resource].items() if not r.get("deleted")}
        assert len(ids) == len(set(ids)) and set(ids) == wanted, resource
    sync.chargebee.reset_stats()
    sync.run()
    assert sum(sync.writes().values()) == 0


def test_prepopulated_customers_are_matched_by_email(sync):
    client = cb_client(sync.chargebee)
    expected = expected_chargebee(sync)
    customers = [c for c in expected["customers"].values() if not c["deleted"]][:10]
    for n, customer in enumerate(customers):
        client.Customer.create(
            {"id": f"hand_{n}", "email": customer["email"], "first_name": "Typed by hand"}
        )
    sync.run()
    all_customers = cb_all(client, "customers")
    emails = Counter(c["email"] for c in all_customers)
    assert max(emails.values()) == 1, "duplicate customers"
    assert len(all_customers) == len(
        [c for c in expected["customers"].values() if not c["deleted"]]
    )
    by_email = {c["email"]: c for c in all_customers}
    for n, customer in enumerate(customers):
        matched = by_email[customer["email"]]
        assert matched["id"] == f"hand_{n}"
        assert matched["first_name"] == customer["first_name"]  # updated from the webshop
    # Their invoices point at the hand-made ids.
    hand_ids = {f"hand_{n}" for n in range(len(customers))}
    invoices = cb_all(client, "invoices")
    assert not {i["customer_id"] for i in invoices} & {c["id"] for c in customers}
    assert {i["customer_id"] for i in invoices} & hand_ids


def test_rejected_record_is_dead_lettered_while_the_others_sync(sync):
    customer = webshop_get(sync, "customers")[0]
    webshop_patch(sync, "customers", customer["id"], {"company": "X" * 252})  # > 250 in Chargebee
    sync.run()
    report = sync.last_report()
    assert report["rejected"] == 1
    rejection = report["rejections"][0]
    assert rejection["stream"] == "customers"
    assert rejection["webshop_id"] == str(customer["id"])
    assert "company" in rejection["reason"]
    dead = LinkStore(sync.link_store_url).dead_letters()
    assert [(d.stream, d.record_key) for d in dead] == [("customers", str(customer["id"]))]
    assert dead[0].record["company"] == "X" * 252 and "company" in dead[0].reason
    expected = expected_chargebee(sync)
    expected["customers"].pop(f"cws_{customer['id']}")
    for resource in ("invoices", "orders"):  # its orders wait for it, then dead-letter
        for key in [
            k for k, r in expected[resource].items() if r["customer_id"] == f"cws_{customer['id']}"
        ]:
            expected[resource].pop(key)
    assert_mirrors(sync, expected)


def test_dry_run_plans_and_writes_nothing(sync):
    result = sync.run(dry_run="true")
    assert sum(sync.writes().values()) == 0
    report = sync.last_report()
    assert report["dry_run"] is True
    assert report["streams"]["customers"]["plan"]["new"] > 0
    assert "Dry run plan" in result.stderr
    sync.run()  # the dry run emitted no state: the real run still sees everything
    assert_mirrors(sync, expected_chargebee(sync))


def test_link_store_on_postgresql(tmp_path, shop, chargebee):
    import psycopg

    name = f"links_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        sync = Sync(
            tmp_path, shop, chargebee, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        )
        sync.run()
        assert_mirrors(sync, expected_chargebee(sync))
        sync.chargebee.reset_stats()
        sync.run()
        assert sum(sync.writes().values()) == 0
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_wrong_key_fails_at_start_naming_the_setting(sync):
    result = sync.run(check=False, api_key="wrong")
    assert result.returncode != 0
    assert "api_key" in result.stderr
    assert "wrong" not in result.stderr.replace("api_key", "")


# ---------------------------------------------------------------------------- webshop access


def webshop_get(sync: Sync, resource: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        answer = requests.get(
            f"{sync.shop.url}/api/v1/{resource}",
            params={"limit": 500, **({"cursor": cursor} if cursor else {})},
            headers={"X-API-Key": WEBSHOP_KEY},
            timeout=10,
        )
        answer.raise_for_status()
        page = answer.json()
        rows.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return rows


def webshop_patch(sync: Sync, resource: str, record_id: Any, changes: dict) -> dict:
    answer = requests.patch(
        f"{sync.shop.url}/api/v1/{resource}/{record_id}",
        json=changes,
        headers={"X-API-Key": WEBSHOP_KEY},
        timeout=10,
    )
    assert answer.ok, answer.text
    return answer.json()
