"""The SDK's side of target-chargebee: one RecordSink per Chargebee resource, which hands
each record to the scheduler in arrival order, once the target has read the links of it and
the records around it (sync_common.target.SyncSink). What a resource's upsert is lives in
resources.py; when it runs, in scheduler.py."""

from __future__ import annotations

from typing import Any

from singer_sdk.sinks import RecordSink

from sync_common.links import ReadAheadKey
from sync_common.matching import HeldByKey, ambiguous_entry, email_key
from sync_common.target import SyncSink, SyncTarget
from target_chargebee.scheduler import Scheduler


class ResourceSink(SyncSink):
    """The records of one Chargebee resource (the stream is named after it)."""

    def __init__(self, target: SyncTarget, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.scheduler: Scheduler = target.scheduler  # type: ignore[attr-defined]

    def link_key(self, record: dict) -> ReadAheadKey | None:
        """The upsert's first look (upsert.py): the link of the record's webshop id."""
        webshop_id = record.get("webshop_id") or record.get("id")
        return (self.stream_name, "webshop_id", str(webshop_id)) if webshop_id else None

    def handle(self, record: dict) -> None:
        self.scheduler.submit(self.stream_name, record)


class CustomersSink(ResourceSink):
    """Customers; an unlinked one is held until the tap's next state message, by e-mail key:
    several webshop customers with one e-mail are ambiguous, whichever comes first."""

    def __init__(self, target: SyncTarget, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.links = target.links
        self.held = HeldByKey()

    def handle(self, record: dict) -> None:
        key = email_key(record.get("email"))
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        if (
            key is None
            or record.get("deleted")
            or not webshop_id
            or self.links.get_by_webshop(self.stream_name, webshop_id) is not None
        ):
            super().handle(record)
            return
        for records in self.held.hold(webshop_id, key, record):
            self.decide(records)

    def release_held(self) -> None:
        """Decide the held customers (the target calls this at each state message and at
        the end)."""
        for records in self.held.take():
            self.decide(records)

    def decide(self, records: dict[str, dict]) -> None:
        """Held customers with one e-mail: one goes on to be matched or created; several are
        neither (skipped, in `ambiguous_matches`)."""
        if len(records) == 1:
            self.scheduler.submit(self.stream_name, next(iter(records.values())))
        else:
            ids = sorted(records)
            for webshop_id, record in records.items():
                entry = ambiguous_entry(
                    self.stream_name, webshop_id=webshop_id, chargebee_id=record.get("id"),
                    by="e-mail", candidates_in="webshop", candidates=ids,
                    reason=f"webshop customers {', '.join(ids)} have this e-mail; none is "
                    "linked or created until they differ, or one is linked by hand",
                )  # fmt: skip
                self.scheduler.skip_unsubmitted(self.stream_name, record, entry)


class DroppedStreamSink(RecordSink):
    """A stream the stream maps drop (`products: __NULL__`); it never receives a record."""

    def process_record(self, record: dict, context: dict) -> None:
        raise AssertionError(f"a record of dropped stream {self.stream_name} arrived")


SINKS: dict[str, type[ResourceSink]] = {
    "customers": CustomersSink,
    "items": ResourceSink,
    "item_prices": ResourceSink,
    "invoices": ResourceSink,
    "orders": ResourceSink,
}
