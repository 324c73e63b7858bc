"""The singer-sdk floor: a tap and a target that do nothing but what the SDK does per record,
built with the same message reader/writer and validator choice as the plugin they stand for.

    python bench/noop.py tap LIKE RECORDED.singer > out        # emits the recorded records
    python bench/noop.py target LIKE CONFIG.json < RECORDED.singer

LIKE names the plugin (tap-customwebshop, target-chargebee, ...). The no-op target gets the
plugin's config, so the same stream maps run in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from singer_sdk import Stream, Tap, Target
from singer_sdk.sinks import RecordSink

from tap_chargebee.tap import TapChargebee
from tap_customwebshop.tap import TapCustomwebshop
from target_chargebee.target import TargetChargebee
from target_customwebshop.target import TargetCustomwebshop

TAPS = {"tap-customwebshop": TapCustomwebshop, "tap-chargebee": TapChargebee}
TARGETS = {"target-chargebee": TargetChargebee, "target-customwebshop": TargetCustomwebshop}


def noop_tap(like: str, recorded: Path) -> Tap:
    plugin = TAPS[like]
    schemas: dict[str, dict] = {}
    with open(recorded, "rb") as lines:
        for line in lines:
            if line.startswith(b'{"type":"SCHEMA"'):
                message = json.loads(line)
                schemas.setdefault(message["stream"], message)

    class RecordedStream(Stream):
        """Yields the recorded records of one stream, as the plugin's stream yielded them."""

        def get_records(self, context):  # noqa: ANN001, ANN201
            with open(recorded, "rb") as lines:
                for line in lines:
                    if line.startswith(b'{"type":"RECORD"'):
                        message = json.loads(line)
                        if message["stream"] == self.name:
                            yield message["record"]

    class NoopTap(Tap):
        name = "noop-tap"
        config_jsonschema = {"type": "object", "properties": {}}
        message_writer_class = plugin.message_writer_class

        def discover_streams(self) -> list[Stream]:
            streams = []
            for name, message in schemas.items():
                stream = RecordedStream(self, schema=message["schema"], name=name)
                stream.primary_keys = message.get("key_properties") or []
                stream.replication_key = (message.get("bookmark_properties") or [None])[0]
                streams.append(stream)
            return streams

    return NoopTap(config={})


def noop_target(like: str, config: Path) -> Target:
    plugin = TARGETS[like]

    class NoopSink(RecordSink):
        def process_record(self, record: dict, context: dict) -> None:
            pass

    class NoopTarget(Target):
        name = "noop-target"
        # the plugin's settings and their defaults: it validates exactly when the plugin does
        config_jsonschema = plugin.config_jsonschema
        message_reader_class = plugin.message_reader_class
        default_sink_class = NoopSink

    return NoopTarget(config=json.loads(config.read_text()), validate_config=False)


def main() -> None:
    kind, like, path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if kind == "tap":
        noop_tap(like, path).sync_all()
    else:
        noop_target(like, path).listen()


if __name__ == "__main__":
    main()
