"""Operator experience: a dry run writes nothing yet plans exactly what the real run then does
(both directions, judged at the emulator and at the webshop sandbox), the report's counts are
the servers' counts, progress lines and no secrets, the generated documents are current, and
bad settings fail at start naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from typing import Any

import pytest
import yaml

from sync_common.report import OUTCOMES
from sync_docs import hub
from sync_docs.dataflow import chargebee_type, documents, fields_used
from tap_chargebee.tap import TapChargebee
from tap_customwebshop.tap import TapCustomwebshop
from target_chargebee.params import remote_value, wire_value
from target_chargebee.target import TargetChargebee
from target_customwebshop.target import TargetCustomwebshop
from tests import direct_run
from tests.harness import (
    BIN,
    CHARGEBEE_KEY,
    REPO,
    RESOURCES,
    WEBSHOP_KEY,
    TwoWaySync,
    cb_all,
    cb_client,
    webshop_get,
    webshop_patch,
)
from tests.plugin_forks import start_sandbox

#: The emulator's operation that creates a record of each stream.
CREATES = {
    "customers": "create_customer",
    "items": "create_item",
    "item_prices": "create_price",
    "invoices": "import_invoice",
    "orders": "import_order",
}
VOLATILE = {"updated_at", "resource_version", "status_update_at"}  # change with any write


def counts(report: dict) -> dict[str, dict[str, int]]:
    return {s: {k: e[k] for k in (*OUTCOMES, "conflicts")} for s, e in report["streams"].items()}


def updates(report: dict) -> dict[tuple[str, str], dict[str, list]]:
    """{(stream, chargebee id): {field: [old, new]}} of the records a plan updates."""
    return {
        (c["stream"], c["chargebee_id"]): c.get("fields", {})
        for c in report["changes"]
        if c["outcome"] == "updated"
    }


def posts(report: dict) -> int:
    """Write calls the target sent (retries included), as its report counts them."""
    return sum(n for call, n in report["api_calls"].items() if call.startswith("POST "))


def succeeded(sync) -> Counter:
    """Operations the emulator answered with 2xx."""
    stats = sync.chargebee.stats()["operations"]
    return Counter({op: sum(n for status, n in by.items() if status.startswith("2"))
                    for op, by in stats.items()})  # fmt: skip


def chargebee_now(sync) -> dict[str, dict[str, dict]]:
    client = cb_client(sync.chargebee)
    return {r: {row["id"]: row for row in cb_all(client, r)} for r in RESOURCES}


def plain(value: Any) -> Any:
    return None if value in ("", None) else value


# ---------------------------------------------------------------------------- forward


def test_forward_dry_run_writes_nothing_and_plans_exactly_what_the_run_does(sync):
    # a first run over an empty Chargebee: everything is created
    sync.run(dry_run="true")
    assert sum(sync.writes().values()) == 0
    plan = sync.last_report()
    assert plan["dry_run"] is True
    sync.run()
    report = sync.last_report()
    assert counts(plan) == counts(report)
    assert report["streams"]["customers"]["created"] > 0

    # the report's counts are the emulator's: every POST it answered, and the creates
    assert posts(report) == sum(sync.writes().values())
    done = succeeded(sync)
    for stream, operation in CREATES.items():
        assert report["streams"][stream]["created"] == done[operation], stream

    # edits: the plan names each changed field with Chargebee's old value and the new one
    customer = next(c for c in webshop_get(sync, "customers") if not c["deleted_at"])
    product = next(p for p in webshop_get(sync, "products") if p["active"])
    order = next(o for o in webshop_get(sync, "orders") if o["paid_at"])
    address = {**customer["billing_address"], "city": "Tromsø"}
    webshop_patch(
        sync, "customers", customer["id"], {"phone": "+47 2 1", "billing_address": address}
    )
    webshop_patch(sync, "products", product["id"], {"price": product["price"] + 250})
    webshop_patch(sync, "orders", order["id"], {"carrier": "Bring", "tracking_number": "T-9"})
    before = chargebee_now(sync)
    sync.chargebee.reset_stats()
    sync.run(dry_run="true")
    assert sum(sync.writes().values()) == 0
    plan = sync.last_report()
    assert chargebee_now(sync) == before
    sync.run()
    report = sync.last_report()
    after = chargebee_now(sync)
    assert counts(plan) == counts(report)
    planned = updates(plan)
    assert planned[("customers", f"cws_{customer['id']}")] == {
        "phone": [customer["phone"], "+47 2 1"],
        "billing_address[city]": [customer["billing_address"]["city"], "Tromsø"],
    }
    assert set(planned) == set(updates(report))
    # what changed in Chargebee is exactly what the plan said, old and new values included
    for resource in RESOURCES:
        for record_id, now in after[resource].items():
            old = before[resource][record_id]
            changed = {k for k in set(now) | set(old) if now.get(k) != old.get(k)} - VOLATILE
            fields = planned.get((resource, record_id), {})
            assert changed == {key.split("[")[0] for key in fields}, (resource, record_id)
            for key, (was, will) in fields.items():
                assert plain(wire_value(remote_value(old, key))) == plain(was), key
                assert plain(wire_value(remote_value(now, key))) == plain(will), key


# ---------------------------------------------------------------------------- back


@pytest.fixture
def two_way(tmp_path, chargebee):
    shop = start_sandbox(
        "customwebshop", str(tmp_path / "shop.db"), WEBSHOP_KEY,
        "--generate", "customers=15,products=8,orders=15", "--seed", "4",
    )  # fmt: skip
    sync = TwoWaySync(tmp_path, shop, chargebee)
    sync.run()  # the webshop's records go to Chargebee, linked
    yield sync
    shop.stop()


def run_back(sync: TwoWaySync, **settings: Any) -> dict:
    """`meltano run tap-chargebee target-customwebshop`; returns the target's report."""
    env = {**sync.env, **{f"TARGET_CUSTOMWEBSHOP_{k.upper()}": str(v) for k, v in settings.items()}}
    result = sync.execute(["tap-chargebee", "target-customwebshop"], env)
    assert result.returncode == 0, result.stderr[-4000:]
    return sync.reverse_report()


def test_back_dry_run_writes_nothing_and_plans_exactly_what_the_run_does(two_way):
    cb = cb_client(two_way.chargebee)
    customers = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    product = next(p for p in webshop_get(two_way, "products") if p["active"])
    cb.Customer.update(f"cws_{customers[0]['id']}", {"email": "planned@example.com"})
    cb.ItemPrice.update(f"cws_{product['id']}-{product['currency']}", {"price": 1234})
    cb.Customer.create({"id": "by_hand", "email": "hand.made@example.com", "first_name": "Ida"})
    # both sides edit one customer: the plan shows the conflict the run then meets
    cb.Customer.update(f"cws_{customers[1]['id']}", {"company": "From Chargebee"})
    webshop_patch(two_way, "customers", customers[1]["id"], {"company": "From the webshop"})
    shop_before = {r: webshop_get(two_way, r) for r in ("customers", "products", "orders")}

    two_way.reset_counts()
    plan = run_back(two_way, dry_run="true")
    assert two_way.write_counts() == (Counter(), Counter())
    assert plan["dry_run"] is True
    report = run_back(two_way)

    assert counts(plan) == counts(report)
    assert plan["streams"]["customers"]["created"] == 1
    conflicts = [(c["webshop_id"], c["winner"]) for c in plan["conflicts"]]
    assert conflicts == [(c["webshop_id"], c["winner"]) for c in report["conflicts"]]
    assert [webshop_id for webshop_id, _ in conflicts] == [str(customers[1]["id"])]
    planned = updates(plan)
    assert planned[("customers", f"cws_{customers[0]['id']}")] == {
        "email": [customers[0]["email"], "planned@example.com"]
    }
    assert set(planned) == set(updates(report))
    # what changed in the webshop is exactly what the plan said
    webshop_id = {(c["stream"], c["chargebee_id"]): c["webshop_id"] for c in plan["changes"]}
    by_resource = {"customers": "customers", "items": "products", "item_prices": "products"}
    for (stream, chargebee_id), fields in planned.items():
        resource = by_resource[stream]
        record_id = int(webshop_id[(stream, chargebee_id)])
        old = next(r for r in shop_before[resource] if r["id"] == record_id)
        now = next(r for r in webshop_get(two_way, resource) if r["id"] == record_id)
        for key, (was, will) in fields.items():
            name, _, member = key.partition(".")
            assert plain((old[name] or {}).get(member) if member else old[name]) == plain(was)
            assert plain((now[name] or {}).get(member) if member else now[name]) == plain(will)


# ---------------------------------------------------------------------------- report


def test_report_has_progress_and_totals_and_no_secret(sync):
    sync.env["SYNC_PROGRESS_SECONDS"] = "0.2"
    sync.chargebee.set_knobs(latency_ms=5)
    result = sync.run()
    log = result.stderr
    assert "Progress: " in log and "/s)" in log
    assert "Run summary: target-chargebee" in log
    report = sync.last_report()
    calls = report["api_calls"]
    assert report["api_calls_total"] == sum(v for v in calls.values() if isinstance(v, int))
    assert posts(report) == sum(sync.writes().values())
    files = "".join(p.read_text() for p in sync.reports.glob("*.json"))
    for secret in (CHARGEBEE_KEY, WEBSHOP_KEY):
        assert secret not in log and secret not in files
    assert report["seconds"] > 0
    assert report["records"] == sum(entry["records"] for entry in report["streams"].values())


# ---------------------------------------------------------------------------- settings

PLUGINS = {
    "tap-customwebshop": TapCustomwebshop,
    "tap-chargebee": TapChargebee,
    "target-chargebee": TargetChargebee,
    "target-customwebshop": TargetCustomwebshop,
}
#: meltano.yml `kind`s that fit a JSON-schema type (integers are `integer`, not `decimal`).
KINDS = {
    "string": {"string", "options"},
    "date-time": {"date_iso8601"},
    "integer": {"integer"},
    "boolean": {"boolean"},
    "object": {"object"},
}


def sdk_builtins(plugin: type) -> set[str]:
    """Settings the SDK adds to every plugin of this kind (stream maps, flattening, …)."""
    schema: dict = {"properties": {}}
    plugin.append_builtin_config(schema)
    return set(schema["properties"])


@pytest.mark.parametrize("name", PLUGINS)
def test_every_setting_has_type_description_and_default_alike_in_code_and_meltano_yml(name):
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    plugin = next(
        p
        for kind in ("extractors", "loaders")
        for p in project["plugins"][kind]
        if p["name"] == name
    )
    declared = {setting["name"]: setting for setting in plugin["settings"]}
    keys = {"name", "kind", "description", "sensitive", "value", "options", "label"}
    for setting in declared.values():  # an unquoted ", " in a {…} entry starts a key
        assert set(setting) <= keys, f"{name} {setting['name']}: {sorted(setting)}"
    builtins = sdk_builtins(PLUGINS[name])
    own = {
        k: v for k, v in PLUGINS[name].config_jsonschema["properties"].items() if k not in builtins
    }
    assert set(declared) - builtins == set(own), "meltano.yml and the plugin declare other settings"
    for setting, schema in own.items():
        entry = declared[setting]
        where = f"{name} {setting}"
        assert schema.get("description") and entry.get("description"), where
        types = (
            [t for t in schema["type"] if t != "null"]
            if isinstance(schema["type"], list)
            else [schema["type"]]
        )
        type_ = schema.get("format") if schema.get("format") == "date-time" else types[0]
        assert entry["kind"] in KINDS[type_], where
        assert entry.get("sensitive", False) is bool(schema.get("secret")), where
        assert entry.get("value") == schema.get("default"), where
    for setting in set(declared) & builtins:
        assert declared[setting].get("description"), f"{name} {setting}"


@pytest.mark.parametrize(
    ("plugin", "settings", "named"),
    [
        ("tap-customwebshop", {"api_key": "wrong-key-4711"}, "api_key"),
        ("tap-customwebshop", {"page_size": "0"}, "page_size"),
        ("tap-chargebee", {"site": "", "api_url": ""}, "site"),
        ("tap-chargebee", {"api_key": "wrong-key-4711"}, "api_key"),
        ("target-customwebshop", {"api_key": "wrong-key-4711"}, "api_key"),
        ("target-customwebshop", {"api_url": ""}, "api_url"),
        ("target-chargebee", {"api_url": "not-a-url"}, "api_url"),
        ("target-chargebee", {"webshop_api_url": ""}, "webshop_api_url"),
        ("target-customwebshop", {"chargebee_api_url": "", "chargebee_site": ""}, "chargebee_site"),
    ],
)
def test_a_wrong_or_missing_setting_fails_at_start_naming_it(
    tmp_path, shop, chargebee, plugin, settings, named
):
    """`meltano invoke <plugin>` with the setting as Meltano hands it (the direct runner's
    config, held equal to Meltano's by tests/test_direct_run.py)."""
    sync = TwoWaySync(tmp_path, shop, chargebee)
    prefix = plugin.upper().replace("-", "_")
    env = {**sync.env, **{f"{prefix}_{k.upper()}": v for k, v in settings.items()}}
    result = direct_run.invoke(plugin, env)
    assert result.returncode != 0
    assert named in result.stderr
    assert "wrong-key-4711" not in result.stderr


# ---------------------------------------------------------------------------- documents


def test_generated_documents_are_current():
    stale = [str(path.relative_to(REPO)) for path, text in documents(REPO).items()
             if not path.exists() or path.read_text() != text]  # fmt: skip
    assert not stale, f"run `make docs` and commit: {stale}"


#: A value of each setting kind, as an environment variable gives it.
SAMPLES = {"string": "x", "integer": "7", "boolean": "true", "object": '{"a": 1}',
           "date_iso8601": "2024-01-01T00:00:00Z"}  # fmt: skip


@pytest.mark.meltano
@pytest.mark.parametrize("name", PLUGINS)
def test_a_new_project_added_from_the_hub_definition_knows_every_setting(tmp_path, name):
    """A new user's project: `meltano add --from-ref` the generated definition (no install),
    then every setting the plugin reads, given as an environment variable, reaches its config
    (Meltano drops the variable of a setting the project does not declare)."""
    path = hub.definition_path(REPO, name)
    definition = yaml.safe_load(path.read_text())
    settings = {setting["name"]: setting for setting in definition["settings"]}
    reads = set(PLUGINS[name].config_jsonschema["properties"]) | sdk_builtins(PLUGINS[name])
    assert set(settings) == reads
    (tmp_path / "meltano.yml").write_text(
        "project_id: new-user\ndefault_environment: dev\nenvironments: [{name: dev}]\n"
    )
    kind = hub.plugin_type(name)[:-1]
    meltano = str(BIN / "meltano")
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 60}
    env = {k: v for k, v in direct_run.scheduler_env(os.environ).items()
           if not k.startswith(name.upper().replace("-", "_"))}  # fmt: skip
    added = subprocess.run(
        [meltano, "add", "--plugin-type", kind, name, "--from-ref", str(path), "--no-install"],
        env=env, **run,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    prefix = name.upper().replace("-", "_")
    for setting in settings.values():
        value = setting["options"][0]["value"] if "options" in setting else SAMPLES[setting["kind"]]
        env[f"{prefix}_{setting['name'].upper()}"] = value
    printed = subprocess.run(
        [meltano, "config", "print", name, "--format", "json"], env=env, check=True, **run
    )
    assert set(json.loads(printed.stdout)) == set(settings)


@pytest.mark.parametrize(
    ("expression", "fields"),
    [
        ("first_name", ["first_name"]),
        ("str(config['id_prefix']) + str(id)", ["id"]),
        (
            "billing_address['postal_code'] if billing_address else None",
            ["billing_address.postal_code"],
        ),
        ("(record.get('billing_address') or {}).get('zip')", ["billing_address.zip"]),
        ("record.get('external_name') or record.get('name')", ["external_name", "name"]),
        ("{'paid': 'awaiting_shipment'}[status]", ["status"]),
        (
            "int(datetime.datetime.fromisoformat(shipped_at or placed_at).timestamp())",
            ["shipped_at", "placed_at"],
        ),
        (
            "json.dumps([{'q': line['quantity']} for line in line_items]"
            " + [{'a': a} for n, a in (('Tax', tax_total),) if a])",
            ["line_items[].quantity", "tax_total"],
        ),
        ("'charge'", []),
    ],
)
def test_the_dataflow_reads_the_fields_a_map_expression_uses(expression, fields):
    assert fields_used(expression) == fields


def test_the_dataflow_types_are_the_emulators_parameter_specs():
    assert chargebee_type("customers", "billing_address[zip]") == "string (max 20)"
    assert chargebee_type("invoices", "payments[amount][0]") == "integer ≥ 0"
    assert chargebee_type("items", "status") == "enum: active, archived"
    assert chargebee_type("orders", "resource_version") == "long (millisecond timestamp)"
    assert chargebee_type("orders", "no_such_param") == "(not a Chargebee parameter)"
