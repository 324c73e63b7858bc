"""The SDK's side of target-customwebshop: one RecordSink per Chargebee stream, which hands
each record to the webshop's rules for its resource (resources.py), once the target has read
the links of it and the records around it (sync_common.target.SyncSink)."""

from __future__ import annotations

from typing import Any

from sync_common.links import ReadAheadKey
from sync_common.matching import HeldByKey, email_key
from sync_common.target import SyncSink
from target_customwebshop.resources import CustomersRules, WebshopRules


class WebshopSink(SyncSink):
    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.rules: WebshopRules = target.rules[self.stream_name]

    def link_key(self, record: dict) -> ReadAheadKey:
        return (self.rules.link_resource, "chargebee_id", str(record["chargebee_id"]))

    def handle(self, record: dict) -> None:
        self.rules.upsert(record)


class CustomersSink(WebshopSink):
    """Customers; an unlinked one is held until the tap's next state message, by e-mail
    key: several with one e-mail are ambiguous, whichever comes first."""

    rules: CustomersRules

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.held = HeldByKey()

    def handle(self, record: dict) -> None:
        key = email_key(record.get("email"))
        chargebee_id = str(record["chargebee_id"])
        if key is None or record.get("deleted"):
            super().handle(record)
            return
        link = self.rules.links.get_by_chargebee(self.rules.link_resource, chargebee_id)
        if link is not None:
            self.rules.upsert(record, link=link)
            return
        for records in self.held.hold(chargebee_id, key, record):
            self.decide(records)

    def release_held(self) -> None:
        """Decide the held customers (the target calls this at each state message and at
        the end)."""
        for records in self.held.take():
            self.decide(records)

    def decide(self, records: dict[str, dict]) -> None:
        """Held customers with one e-mail: one goes on to be matched or created; several
        Chargebee customers with one e-mail are neither (skipped, in `ambiguous_matches`)."""
        if len(records) == 1:
            self.rules.upsert(next(iter(records.values())))
        else:
            self.rules.skip_ambiguous(records)


SINKS: dict[str, type[WebshopSink]] = {
    "customers": CustomersSink,
    "items": WebshopSink,
    "item_prices": WebshopSink,
    "orders": WebshopSink,
}
