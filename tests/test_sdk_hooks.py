"""The private singer-sdk hooks the plugins rely on, pinned in-process: `_process_record_message`
is where a RECORD message arrives at a target before the stream maps, and the sinks'
`preprocess_record` (public) then sees the source record beside its translation (the other
direction's base); a tap stream's `_write_record_message` emits the records retried for
their dead letters. Then the targets' STATE hooks, target-chargebee's guard on the maps'
`transform`, the taps' `load_streams`, a stream's `_tap` and `_write_starting_replication_value`
(tap-chargebee reads streams ahead of their turn). Each override that uses one has a
`private SDK hook` comment; an SDK upgrade that changes one fails here, not in a sync."""

from __future__ import annotations

import io
import json

import pytest
from singer_sdk.exceptions import InvalidRecord

from sync_common.merge import SOURCE_RECORD
from target_chargebee.sinks import CustomersSink as ChargebeeCustomers
from target_chargebee.target import TargetChargebee
from target_customwebshop.sinks import CustomersSink as WebshopCustomers
from target_customwebshop.target import TargetCustomwebshop

SCHEMA = {"type": "object", "properties": {"id": {"type": "string"},
                                           "email": {"type": ["string", "null"]}}}  # fmt: skip


def target_config(tmp_path, **settings) -> dict:
    return {
        "api_url": "http://127.0.0.1:9/api",  # never called: the sinks are replaced
        "api_key": "test-key",
        "link_store_url": f"sqlite:///{tmp_path / 'links.db'}",
        "report_dir": str(tmp_path),
        **settings,
    }


#: Each target's customers sink, with a map that translates the id and the e-mail.
each_customers_sink = pytest.mark.parametrize(
    ("target_class", "sink_class", "maps"),
    [
        (TargetCustomwebshop, WebshopCustomers,
         {"customers": {"__key_properties__": ["chargebee_id"], "chargebee_id": "id",
                        "email": "email", "__else__": "__NULL__"}}),
        (TargetChargebee, ChargebeeCustomers,
         {"customers": {"id": "'cws_' + id", "email": "email", "__else__": "__NULL__"}}),
    ],
)  # fmt: skip


def feed(target, record: dict) -> None:
    lines = [
        {"type": "SCHEMA", "stream": "customers", "schema": SCHEMA, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "customers", "record": record},
    ]
    target.listen(file_input=io.StringIO("\n".join(json.dumps(line) for line in lines) + "\n"))


@each_customers_sink
def test_the_sinks_see_the_source_record_beside_its_translation(
    tmp_path, monkeypatch, target_class, sink_class, maps
):
    seen: list[dict] = []
    monkeypatch.setattr(sink_class, "process_record", lambda self, record, _: seen.append(record))
    target = target_class(config=target_config(tmp_path, stream_maps=maps), validate_config=False)
    source = {"id": "7", "email": "a@example.com"}
    feed(target, source)
    [record] = seen
    assert record[SOURCE_RECORD] == source  # the record before the maps
    assert record["email"] == "a@example.com"  # and its translation


@each_customers_sink
def test_the_sdks_schema_check_runs_only_when_validate_records_is_set(
    tmp_path, monkeypatch, target_class, sink_class, maps
):
    """The API judges a record (a refusal is dead-lettered, the run goes on); singer-sdk's
    own check, whose failure stops the run, is off unless the setting turns it on."""
    seen: list[dict] = []
    monkeypatch.setattr(sink_class, "process_record", lambda self, record, _: seen.append(record))
    not_the_schema = {"id": "7", "email": 12}  # the schema says a string
    target = target_class(config=target_config(tmp_path, stream_maps=maps), validate_config=False)
    assert target.config["validate_records"] is False
    feed(target, not_the_schema)
    assert [record["email"] for record in seen] == [12]  # handed on as it came
    checked = target_config(tmp_path / "checked", stream_maps=maps, validate_records=True)
    (tmp_path / "checked").mkdir()
    target = target_class(config=checked, validate_config=False)
    with pytest.raises(InvalidRecord, match="is not of type"):
        feed(target, not_the_schema)


def test_a_tap_stream_writes_a_record_message_that_leaves_its_bookmark_alone(capsys):
    """sync_common.retry emits a record with an open dead letter through the streams' private
    `_write_record_message` (no public hook emits a record outside `get_records`' yield,
    and a yielded record older than the bookmark fails the SDK's sorted-state check): it
    must write a RECORD of the stream, through its schema, and not touch the state."""
    from tap_customwebshop.tap import TapCustomwebshop

    config = {"api_url": "http://127.0.0.1:9/api/v1", "api_key": "test-key"}  # never called
    stream = TapCustomwebshop(config=config).streams["customers"]
    bookmark = {"replication_key": "updated_at", "replication_key_value": "2026-06-01T00:00:00Z"}
    stream.stream_state.update(bookmark)
    old = {"id": 7, "email": "a@example.com", "updated_at": "2026-01-01T00:00:00Z", "x": 1}
    stream._write_record_message(old)
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (line["type"], line["stream"]) == ("RECORD", "customers")
    assert line["record"]["id"] == 7 and "x" not in line["record"]  # conformed to the schema
    assert {k: stream.stream_state[k] for k in bookmark} == bookmark


# ---------------------------------------------------------------- the targets' state hooks


def webshop_target(tmp_path, **settings) -> TargetCustomwebshop:
    config = target_config(tmp_path, chargebee_site="test", **settings)
    return TargetCustomwebshop(config=config, validate_config=False)


def singer_lines(*messages: dict) -> io.StringIO:
    schema = {"type": "SCHEMA", "stream": "customers", "schema": SCHEMA, "key_properties": ["id"]}
    return io.StringIO("\n".join(json.dumps(line) for line in (schema, *messages)) + "\n")


def record(record_id: str) -> dict:
    return {"type": "RECORD", "stream": "customers", "record": {"id": record_id, "email": None}}


def state(value: dict) -> dict:
    return {"type": "STATE", "value": value}


def test_the_sdk_calls_the_state_hook_per_state_line_after_the_records_before_it(
    tmp_path, monkeypatch
):
    """Both targets settle (or release) the records before a STATE line in
    `_process_state_message`: the SDK must call it for each STATE line, in the order of the
    input, after the preceding records reached the sinks, and keep the value as
    `_latest_state` (target-chargebee copies it from there)."""
    events: list = []
    monkeypatch.setattr(WebshopCustomers, "process_record", lambda s, r, _: events.append(r["id"]))
    target = webshop_target(tmp_path, dry_run=True)
    sdk_hook = TargetCustomwebshop._process_state_message

    def spy(self, message_dict: dict) -> None:
        events.append(("state", message_dict["value"]))
        sdk_hook(self, message_dict)
        events.append(("latest", self._latest_state))

    monkeypatch.setattr(TargetCustomwebshop, "_process_state_message", spy)
    target.listen(file_input=singer_lines(
        record("1"), record("2"), state({"a": 1}), record("3"), state({"b": 2}),
    ))  # fmt: skip
    assert events == [
        "1", "2", ("state", {"a": 1}), ("latest", {"a": 1}),
        "3", ("state", {"b": 2}), ("latest", {"b": 2}),
    ]  # fmt: skip


def test_the_sdk_emits_state_only_through_write_state_message(tmp_path, monkeypatch, capsys):
    """Both targets hold state back (dry run; records not yet written) in
    `_write_state_message`: the SDK must call it with the latest state dict (a copy) when it
    drains, and it must be what writes the STATE line to stdout, with no other path."""
    monkeypatch.setattr(WebshopCustomers, "process_record", lambda *_: None)
    target = webshop_target(tmp_path)
    target.listen(file_input=singer_lines(record("1"), state({"bookmarks": {"x": 1}})))
    assert capsys.readouterr().out.splitlines() == [json.dumps({"bookmarks": {"x": 1}})]

    calls: list[dict] = []
    monkeypatch.setattr(TargetCustomwebshop, "_write_state_message", lambda _, s: calls.append(s))
    target = webshop_target(tmp_path)
    target.listen(file_input=singer_lines(record("1"), state({"bookmarks": {"x": 2}})))
    assert calls == [{"bookmarks": {"x": 2}}]
    assert calls[0] is not target._latest_state  # a copy: the hook may keep or change it
    assert capsys.readouterr().out == ""  # nothing else emitted the state


# ---------------------------------------------------------------- target-chargebee's map guard


def chargebee_target(tmp_path) -> TargetChargebee:
    maps = {"customers": {"id": "'cws_' + id", "email": "email", "__else__": "__NULL__"}}
    config = target_config(tmp_path, dry_run=True, stream_maps=maps)
    return TargetChargebee(config=config, validate_config=False)


def test_the_sdk_calls_each_map_objects_transform_per_record(tmp_path, monkeypatch):
    """target-chargebee replaces `transform` on the SDK's StreamMap objects (after the SDK
    registers them in `_process_schema_message`) to dead-letter a record its map fails on:
    the SDK must call that instance attribute for every record, so a record the expression
    cannot translate (an id that is not a string) is rejected and the others go on."""
    from target_chargebee.target import _GuardedTransform

    seen: list[str] = []
    monkeypatch.setattr(ChargebeeCustomers, "process_record", lambda s, r, _: seen.append(r["id"]))
    calls: list[dict] = []
    guard_call = _GuardedTransform.__call__
    monkeypatch.setattr(
        _GuardedTransform, "__call__", lambda self, r: calls.append(r) or guard_call(self, r)
    )
    target = chargebee_target(tmp_path)
    bad = {"type": "RECORD", "stream": "customers", "record": {"id": 7, "email": None}}
    target.listen(file_input=singer_lines(record("1"), bad, record("2")))
    assert [r["id"] for r in calls] == ["1", 7, "2"]
    assert seen == ["cws_1", "cws_2"]
    assert target.report.as_dict({})["rejected"] == 1


def test_the_sdk_keeps_registered_maps_until_the_schema_changes(tmp_path):
    """The guard is put on the map objects the SDK's `_process_schema_message` registers in
    `mapper.stream_maps`: a repeated schema must keep those objects (still guarded), a
    changed one must make new ones, which the override guards again."""
    from target_chargebee.target import _GuardedTransform

    target = chargebee_target(tmp_path)
    message = {"type": "SCHEMA", "stream": "customers", "schema": SCHEMA, "key_properties": ["id"]}
    target._process_schema_message(message)
    [first] = target.mapper.stream_maps["customers"]
    assert isinstance(first.transform, _GuardedTransform)
    target._process_schema_message(json.loads(json.dumps(message)))
    assert target.mapper.stream_maps["customers"] == [first]
    changed = {"type": "object", "properties": {**SCHEMA["properties"], "x": {"type": "string"}}}
    target._process_schema_message({**message, "schema": changed})
    [second] = target.mapper.stream_maps["customers"]
    assert second is not first and isinstance(second.transform, _GuardedTransform)
    assert isinstance(second.transform.transform, type(first.transform.transform))


# ---------------------------------------------------------------- the taps' streams


def taps() -> list:
    from tap_chargebee.tap import TapChargebee
    from tap_customwebshop.tap import TapCustomwebshop

    return [
        TapChargebee(config={"site": "test", "api_key": "test-key"}),
        TapCustomwebshop(config={"api_url": "http://127.0.0.1:9/api/v1", "api_key": "test-key"}),
    ]


def test_load_streams_is_still_final_and_sorts_by_name():
    """Both taps override the SDK's `@final` `load_streams` to keep the discovery order
    (customers and products/items before what refers to them). While the SDK's sorts by name,
    that order differs, so the override is needed; its only other work links parent streams,
    which these taps have none of."""
    from singer_sdk import Tap

    assert getattr(Tap.load_streams, "__final__", False)
    for tap in taps():
        discovered = [stream.name for stream in tap.discover_streams()]
        assert [stream.name for stream in Tap.load_streams(tap)] == sorted(discovered)
        assert sorted(discovered) != discovered  # the SDK's order would change the sync's
        assert list(tap.streams) == discovered  # `streams` comes from the override
        assert all(stream.parent_stream_type is None for stream in tap.streams.values())


def test_a_tap_stream_knows_its_tap_only_by_the_private_tap():
    """tap-chargebee's streams share the tap's throttled session and sync_common.retry reads
    the tap's dead letters through `stream._tap`, the SDK's back-reference: no public
    attribute gives a stream its tap."""
    from singer_sdk.streams import Stream

    assert not hasattr(Stream, "tap")
    for tap in taps():
        for stream in tap.streams.values():
            assert stream._tap is tap
            assert not hasattr(stream, "tap")
    chargebee = taps()[0]
    stream = chargebee.streams["customers"]
    assert stream.requests_session is chargebee.throttled_session


def test_a_tap_stream_has_its_starting_bookmark_once_written_before_its_sync():
    """tap-chargebee reads the streams after the one being synced ahead of their turn, so it
    writes their starting bookmark itself (ChargebeeStream.request_records)."""
    from tap_chargebee.tap import TapChargebee

    state = {"bookmarks": {"orders": {"replication_key": "updated_at",
                                      "replication_key_value": 1_700_000_000}}}  # fmt: skip
    config = {"api_url": "http://127.0.0.1:9/api/v2", "api_key": "never-used"}
    orders = TapChargebee(config=config, state=state, setup_mapper=False).streams["orders"]
    assert orders.get_starting_replication_key_value(None) is None  # not before it is synced
    orders._write_starting_replication_value(None)
    assert orders.get_starting_replication_key_value(None) == "2023-11-14T22:13:20+00:00"
