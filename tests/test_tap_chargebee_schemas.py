"""tap-chargebee as a general Chargebee extractor: its schemas are the files `make docs`
generates from the official SDK's models (every attribute, nested ones included), its
timestamps are date-times (decided by one rule over the SDK's integers), a bookmark written
before date-times resumes, and a per-field `select` gives only the selected fields."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import typing
from pathlib import Path

import pytest
import yaml

from sync_docs import chargebee_schemas
from sync_docs.dataflow import fields_used, load_maps, read_type
from tap_chargebee.tap import TapChargebee
from tap_chargebee.timestamps import date_time, timestamp_tree, to_date_times
from target_chargebee.params import CONTROL_FIELDS as FORWARD_CONTROL
from tests.test_tap_chargebee import CONFIG, SHARED, TAP, client, records, run_tap

shared_sandbox = SHARED.started()  # the emulator test_tap_chargebee.py fills

REPO = Path(__file__).resolve().parents[1]
STREAMS = ("customers", "items", "item_prices", "orders")


def tap_streams() -> dict:
    return TapChargebee(config=CONFIG, validate_config=False).streams


def sdk_model(stream: str) -> type:
    module, name = chargebee_schemas.MODELS[stream]
    return getattr(__import__(module, fromlist=[name]), name)


# ---------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("stream", STREAMS)
def test_each_stream_reads_the_generated_schema_file_which_is_current(stream):
    path, text = next(
        (path, text) for path, text in chargebee_schemas.documents(REPO).items()
        if path.name == f"{stream}.json"
    )  # fmt: skip
    assert path.read_text() == text, "stale: run `make docs` and commit"
    assert tap_streams()[stream].schema == json.loads(text)


def leaves(model: type, path: str = "") -> set[str]:
    """Every attribute path of an SDK model, nested models included (`order_line_items[].id`)."""
    hints = typing.get_type_hints(model)
    found = set()
    for field in dataclasses.fields(model):
        if field.name == "raw_data":
            continue
        name = f"{path}{field.name}"
        kind = hints[field.name]
        inner = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
        if dataclasses.is_dataclass(inner):
            suffix = "[]." if inner is not kind else "."
            found |= leaves(inner, f"{name}{suffix}")  # type: ignore[arg-type]
        else:
            found.add(name)
    return found


def schema_leaves(schema: dict, path: str = "") -> set[str]:
    found = set()
    for name, prop in schema["properties"].items():
        inner = prop.get("items", prop)
        if "properties" in inner:
            suffix = "[]." if "items" in prop else "."
            found |= schema_leaves(inner, f"{path}{name}{suffix}")
        elif name != "object":  # Chargebee's type tag, which the SDK keeps no field for
            found.add(f"{path}{name}")
    return found


@pytest.mark.parametrize("stream", STREAMS)
def test_every_attribute_of_the_sdk_model_is_in_the_schema_nested_ones_included(stream):
    schema = tap_streams()[stream].schema
    assert schema_leaves(schema) == leaves(sdk_model(stream))


def test_the_attributes_the_issue_names_are_emitted_not_dropped(tmp_path):
    messages = run_tap(tmp_path)
    customer = records(messages, "customers")[0]
    order = next(row for row in records(messages, "orders") if row["id"] == "o1")
    assert {"auto_collection", "taxability", "net_term_days"} <= customer.keys()
    assert {"order_line_items", "total", "currency_code", "payment_status"} <= order.keys()
    assert order["order_line_items"][0]["amount"] > 0
    schema = next(m["schema"] for m in messages if m.get("stream") == "orders" and "schema" in m)
    line = schema["properties"]["order_line_items"]["items"]["properties"]
    assert {"id", "amount", "unit_price", "entity_id", "object"} <= line.keys()


# ---------------------------------------------------------------------------- timestamps


def sdk_integers(stream: str) -> dict[str, bool]:
    """Each integer attribute path of the stream's SDK model: is it a timestamp?"""
    hints_of = {}

    def walk(model: type, path: str) -> None:
        hints = typing.get_type_hints(model)
        for field in dataclasses.fields(model):
            kind = hints[field.name]
            inner = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            if dataclasses.is_dataclass(inner):
                walk(inner, f"{path}{field.name}{'[]' if inner is not kind else ''}.")  # type: ignore[arg-type]
            elif kind is int:
                name = f"{path}{field.name}"
                hints_of[name] = chargebee_schemas.is_timestamp(name, int)

    walk(sdk_model(stream), "")
    return hints_of


def test_timestamps_are_the_sdks_integers_named_as_moments_and_nothing_else():
    timestamps = {f"{s}.{p}" for s in STREAMS for p, yes in sdk_integers(s).items() if yes}
    # the rule's result over the SDK 3.29.0 models, as the Chargebee Java SDK types them
    assert timestamps == {
        "customers.created_at", "customers.updated_at", "customers.vat_number_validated_time",
        "customers.referral_urls[].created_at", "customers.referral_urls[].updated_at",
        "items.updated_at", "items.archived_at",
        "item_prices.created_at", "item_prices.updated_at", "item_prices.archived_at",
        "orders.order_date", "orders.shipping_date", "orders.paid_on",
        "orders.shipping_cut_off_date", "orders.created_at", "orders.status_update_at",
        "orders.delivered_at", "orders.shipped_at", "orders.updated_at", "orders.cancelled_at",
        "orders.line_item_taxes[].date_from", "orders.line_item_taxes[].date_to",
    }  # fmt: skip
    integers = {f"{s}.{p}" for s in STREAMS for p in sdk_integers(s)}
    assert {"customers.billing_date", "orders.total", "customers.resource_version"} <= (
        integers - timestamps
    )


def test_an_integer_that_sounds_like_a_moment_and_is_undecided_stops_the_generator():
    @dataclasses.dataclass
    class Model:
        renewal_date: int = 0

    with pytest.raises(chargebee_schemas.UndecidedAttribute, match="renewal_date"):
        chargebee_schemas.model_schema(Model)


def test_timestamps_become_date_times_at_the_top_and_inside_objects_and_lists():
    schema = chargebee_schemas.model_schema(sdk_model("customers"))
    record = {
        "created_at": 1_700_000_000, "billing_date": 5, "updated_at": None,
        "referral_urls": [{"created_at": 1_700_000_001, "referral_sharing_url": "u"}],
    }  # fmt: skip
    assert to_date_times(record, timestamp_tree(schema)) == {
        "created_at": "2023-11-14T22:13:20+00:00", "billing_date": 5, "updated_at": None,
        "referral_urls": [
            {"created_at": "2023-11-14T22:13:21+00:00", "referral_sharing_url": "u"}
        ],
    }  # fmt: skip


def test_the_dataflow_says_the_sync_reads_timestamps_as_date_times():
    assert read_type("orders", "shipped_at") == "date-time (Unix seconds in the API)"
    assert read_type("orders", "resource_version") == "long (millisecond timestamp)"


def test_emitted_timestamps_are_utc_date_times_and_so_is_the_bookmark(tmp_path):
    messages = run_tap(tmp_path)
    order = next(row for row in records(messages, "orders") if row["id"] == "o1")
    assert order["created_at"] == order["order_date"] == "2023-11-14T22:13:20+00:00"
    for stream in STREAMS:
        for row in records(messages, stream):
            assert row.get("updated_at") is None or row["updated_at"].endswith("+00:00")
    state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    bookmark = state["bookmarks"]["customers"]["replication_key_value"]
    assert bookmark == max(row["updated_at"] for row in records(messages, "customers"))


def test_a_bookmark_of_unix_seconds_from_the_previous_version_resumes_from_it(tmp_path):
    first = run_tap(tmp_path)
    newest = max(row["updated_at"] for row in records(first, "customers"))
    # what tap-chargebee wrote before date-times: the same moment, in Unix seconds
    seconds = int(__import__("datetime").datetime.fromisoformat(newest).timestamp())
    old_state = {"bookmarks": {
        "customers": {"replication_key": "updated_at", "replication_key_value": seconds},
    }}  # fmt: skip
    client(SHARED).Customer.update("c060", {"company": "After the upgrade"})

    SHARED.reset_stats()
    resumed = run_tap(tmp_path, old_state)
    rows = {row["id"]: row for row in records(resumed, "customers")}
    assert rows["c060"]["company"] == "After the upgrade"
    assert len(rows) < 130  # only what changed since the bookmark, not everything again
    assert all(row["updated_at"] >= date_time(seconds - 1) for row in rows.values())
    state = [m["value"] for m in resumed if m["type"] == "STATE"][-1]
    assert state["bookmarks"]["customers"]["replication_key_value"] == rows["c060"]["updated_at"]


# ---------------------------------------------------------------------------- select


def run_with_catalog(tmp_path: Path, selected: dict[str, set[tuple[str, ...]]]) -> list[dict]:
    """The tap's CLI with its discovered catalog, only the `selected` streams and properties
    (paths: `("billing_address", "city")`) selected, as Meltano's `select` writes it."""
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    discovered = subprocess.run(
        [TAP, "--config", str(tmp_path / "config.json"), "--discover"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    catalog = json.loads(discovered.stdout)
    for entry in catalog["streams"]:
        wanted = selected.get(entry["tap_stream_id"])
        for meta in entry["metadata"]:  # one per property, nested ones too
            path = tuple(meta["breadcrumb"][1::2])  # ("properties", a, "properties", b)
            meta["metadata"]["selected"] = wanted is not None and (not path or path in wanted)
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    done = subprocess.run(
        [TAP, "--config", str(tmp_path / "config.json"), "--catalog",
         str(tmp_path / "catalog.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_selecting_two_fields_gives_records_with_only_those_and_the_replication_key(tmp_path):
    messages = run_with_catalog(tmp_path, {"customers": {("id",), ("email",)}})
    rows = records(messages, "customers")
    assert len(rows) >= 130
    # updated_at is the replication key: `inclusion: automatic`, always emitted
    assert {key for row in rows for key in row} == {"id", "email", "updated_at"}
    assert {m["stream"] for m in messages if m["type"] == "RECORD"} == {"customers"}
    schema = next(m["schema"] for m in messages if m["type"] == "SCHEMA")
    assert set(schema["properties"]) == {"id", "email", "updated_at"}


def test_selecting_a_member_of_an_object_gives_only_that_member(tmp_path):
    client(SHARED).Customer.update_billing_info(
        "c061", {"billing_address": {"city": "Aarhus", "line1": "Åboulevarden 1"}}
    )
    wanted = {("id",), ("billing_address",), ("billing_address", "city")}
    rows = {row["id"]: row for row in records(run_with_catalog(tmp_path, {"customers": wanted}),
                                              "customers")}  # fmt: skip
    assert rows["c061"]["billing_address"] == {"city": "Aarhus"}


def test_the_sync_selects_exactly_the_fields_its_maps_read_and_write():
    """meltano.yml's select on tap-chargebee: what target-customwebshop's maps read, and what
    target-chargebee's maps write (a link's base is Chargebee's record of those fields)."""
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    tap = next(p for p in project["plugins"]["extractors"] if p["name"] == "tap-chargebee")
    forward, back, _ = load_maps(REPO / "meltano.yml")
    needed = set()
    for stream in STREAMS:
        needed |= {f"{stream}.id", f"{stream}.updated_at"}  # the key and the bookmark
        for key, expression in back[stream].items():
            if not key.startswith("__"):
                needed |= {f"{stream}.{path}" for path in fields_used(expression)}
        for key in forward[stream]:
            if not key.startswith("__") and key not in FORWARD_CONTROL:
                needed.add(f"{stream}.{key.replace('[', '.').rstrip(']')}")
    assert set(tap["select"]) == needed
    streams = tap_streams()
    for pattern in tap["select"]:  # each one names an attribute of the stream's schema
        stream, *path = pattern.split(".")
        node = streams[stream].schema
        for name in path:
            node = node["properties"][name]
