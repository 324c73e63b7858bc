"""The private singer-sdk hooks the plugins rely on, pinned in-process: `_process_record_message`
is where a RECORD message arrives at a target before the stream maps, and the sinks'
`preprocess_record` (public) then sees the source record beside its translation (the other
direction's base); a tap stream's `_write_record_message` emits the records retried for
their dead letters. An SDK upgrade that changes either fails here, not in a sync."""

from __future__ import annotations

import io
import json

import pytest

from sync_common.merge import SOURCE_RECORD
from target_chargebee.sinks import CustomersSink as ChargebeeCustomers
from target_chargebee.target import TargetChargebee
from target_customwebshop.sinks import CustomersSink as WebshopCustomers
from target_customwebshop.target import TargetCustomwebshop

SCHEMA = {"type": "object", "properties": {"id": {"type": "string"},
                                           "email": {"type": ["string", "null"]}}}  # fmt: skip


def feed(target, record: dict) -> None:
    lines = [
        {"type": "SCHEMA", "stream": "customers", "schema": SCHEMA, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "customers", "record": record},
    ]
    target.listen(file_input=io.StringIO("\n".join(json.dumps(line) for line in lines) + "\n"))


@pytest.mark.parametrize(
    ("target_class", "sink_class", "maps"),
    [
        (TargetCustomwebshop, WebshopCustomers,
         {"customers": {"__key_properties__": ["chargebee_id"], "chargebee_id": "id",
                        "email": "email", "__else__": "__NULL__"}}),
        (TargetChargebee, ChargebeeCustomers,
         {"customers": {"id": "'cws_' + id", "email": "email", "__else__": "__NULL__"}}),
    ],
)  # fmt: skip
def test_the_sinks_see_the_source_record_beside_its_translation(
    tmp_path, monkeypatch, target_class, sink_class, maps
):
    seen: list[dict] = []
    monkeypatch.setattr(sink_class, "process_record", lambda self, record, _: seen.append(record))
    config = {
        "api_url": "http://127.0.0.1:9/api",  # never called: the sink is replaced
        "api_key": "test-key",
        "link_store_url": f"sqlite:///{tmp_path / 'links.db'}",
        "report_dir": str(tmp_path),
        "stream_maps": maps,
    }
    target = target_class(config=config, validate_config=False)
    source = {"id": "7", "email": "a@example.com"}
    feed(target, source)
    [record] = seen
    assert record[SOURCE_RECORD] == source  # the record before the maps
    assert record["email"] == "a@example.com"  # and its translation


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
