"""tap-chargebee: customers, items, item prices and orders of a Chargebee site (API v2),
incremental by updated_at, deletions included, throttled to the site's request limit."""

from __future__ import annotations

import typing as t
from functools import cached_property

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError

from sync_common.chargebee import chargebee_base_url
from sync_common.http import environment_settings
from sync_common.links import WEBSHOP_API_URL
from sync_common.retry import RETRY_DEAD_LETTERS, TAP_LINK_STORE_URL, records_to_retry
from sync_common.throttle import Throttle, ThrottledSession
from tap_chargebee import streams
from tap_chargebee.reading import StreamReads
from tap_chargebee.timestamps import date_time

#: List requests in flight at once by default: at ~250 ms a call, 8 keep 1,000/min busy.
CONCURRENT_READS = 8


class TapChargebee(Tap):
    """Customers, items, item prices and orders of a Chargebee site (API v2), incremental by
    updated_at, deletions included, throttled to the site's request limit."""

    name = "tap-chargebee"
    message_writer_class = MsgSpecWriter  # the SDK's faster JSON writer (bench/README.md)
    package_name = "webshop-chargebee-sync-tap-chargebee"  # its distribution (--version)

    config_jsonschema = th.PropertiesList(
        th.Property(
            "site",
            th.StringType,
            description="Chargebee site name: the API is https://{site}.chargebee.com/api/v2.",
        ),
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="A Chargebee API key (read access is enough).",
        ),
        th.Property(
            "api_url",
            th.StringType,
            description="Overrides https://{site}.chargebee.com/api/v2 (the emulator, a proxy).",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Read only records updated after this moment on a first run. Leave it "
            "empty for a complete first read: customers untouched since 2016 have no updated_at.",
        ),
        th.Property(
            "requests_per_minute",
            th.IntegerType(minimum=1),
            default=150,
            description="Client-side limit on API calls per rolling minute (the plan's limit; "
            "share it with target-chargebee when both run against one site).",
        ),
        th.Property(
            "concurrent_reads",
            th.IntegerType(minimum=1),
            default=CONCURRENT_READS,
            description="List requests in flight at once, within requests_per_minute: the "
            "streams are read together, and a stream's pages over several updated_at ranges in "
            "parallel, emitted in order. At Chargebee's ~250 ms per call, 8 keep a 1,000/min "
            "budget busy; 1 reads one page at a time.",
        ),
        th.Property(
            "request_timeout",
            th.IntegerType(minimum=1),
            default=60,
            description="Seconds to wait for a response before the request is retried.",
        ),
        RETRY_DEAD_LETTERS,
        TAP_LINK_STORE_URL,
        WEBSHOP_API_URL,
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        located = self.config.get("site") or self.config.get("api_url")
        if kwargs.get("validate_config", True) and not located:
            errors = ["site: missing (the Chargebee site name; or set api_url)"]
            raise ConfigValidationError("Config validation failed", errors=errors)

    def load_state(self, state: dict[str, t.Any]) -> None:
        """A bookmark from a tap-chargebee before date-times is Unix seconds: read as the same
        moment, so an upgrade resumes where it stopped (the SDK compares it with records)."""
        super().load_state(state)
        for stream_state in self.state.get("bookmarks", {}).values():
            for bookmark in (stream_state, *stream_state.get("partitions", [])):
                value = bookmark.get("replication_key_value")
                if bookmark.get("replication_key") == "updated_at" and isinstance(value, int):
                    bookmark["replication_key_value"] = date_time(value)

    @cached_property
    def throttled_session(self) -> ThrottledSession:
        rpm = self.config.get("requests_per_minute") or 150
        session = ThrottledSession(Throttle(rpm, self.concurrent_reads))
        # the streams send prepared requests, which requests sends without these settings
        environment_settings(
            session, chargebee_base_url(self.config.get("site"), self.config.get("api_url"))
        )
        return session

    @property
    def concurrent_reads(self) -> int:
        """List requests in flight at once: the throttle's cap and the readers' workers."""
        return int(self.config.get("concurrent_reads") or CONCURRENT_READS)

    @cached_property
    def stream_reads(self) -> StreamReads:
        """The streams' list reads, started together (tap_chargebee.reading)."""
        return StreamReads(self.concurrent_reads)

    @cached_property
    def dead_letter_ids(self) -> dict[str, list[str]]:
        """Per stream, the Chargebee records with an open dead letter (sync_common.retry)."""
        return records_to_retry(self.config, "chargebee", self.logger)

    # private SDK hook (@final): the SDK's sorts by name; no public hook keeps discovery order
    def load_streams(self) -> list[Stream]:  # type: ignore[misc]
        """Discovery order: customers and items before what refers to them."""
        return list(self.discover_streams())

    def discover_streams(self) -> list[streams.ChargebeeStream]:
        return [
            streams.CustomersStream(self),
            streams.ItemsStream(self),
            streams.ItemPricesStream(self),
            streams.OrdersStream(self),
        ]


if __name__ == "__main__":
    TapChargebee.cli()
