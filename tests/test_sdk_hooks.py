"""The private singer-sdk hook both targets rely on, pinned in-process: `_process_record_message`
is where a RECORD message arrives before the stream maps, and the sinks' `preprocess_record`
(public) then sees the source record beside its translation (the other direction's base).
An SDK upgrade that changes either fails here, not in a sync."""

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
