"""One sink per Chargebee stream; each writes into one webshop resource.

A record carries webshop fields (flat `billing_address[city]` keys are nested here) plus
control fields from the stream maps: `chargebee_id`, `chargebee_version`
(`resource_version`), `chargebee_updated_at` and `deleted`. Its journey:
1. Linked and `chargebee_version` is what the link store already holds: nothing changed in
   Chargebee since the sync wrote or saw it (this is how the sync's own writes are not read
   back as edits). Same for content equal to what this target last wrote.
2. Linked: PATCH with `If-Match` = the webshop version the sync last saw. A 412 means the
   webshop changed too: `conflict_policy` picks the winner and the overruled edit goes to the
   report with both versions.
3. Not linked: customers are matched by e-mail or created; an item price creates its product
   (the item's own record only updates it later); orders born in Chargebee are reported.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any, ClassVar

from singer_sdk.sinks import RecordSink

from sync_common.conflicts import chargebee_wins, keep_filled
from sync_common.http import ApiClient, ApiError
from sync_common.links import Link, content_hash
from target_customwebshop.plan import PlanningClient

CONTROL_FIELDS = ("chargebee_id", "chargebee_version", "chargebee_updated_at", "deleted")
_BRACKET = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")


class Skip(Exception):  # noqa: N818 (an outcome, not a failure)
    """The record is not written, for the reason given (reported, not dead-lettered)."""


def webshop_fields(record: dict) -> dict[str, Any]:
    """The record's webshop fields; `address[x]` keys become one object (null if all empty)."""
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if key in CONTROL_FIELDS:
            continue
        if isinstance(value, datetime.datetime):  # the SDK parses date-time fields; JSON wants text
            value = value.isoformat()
        match = _BRACKET.match(key)
        if match:
            fields.setdefault(match.group(1), {})[match.group(2)] = value
        else:
            fields[key] = value
    for key, value in fields.items():
        if isinstance(value, dict) and not any(v not in (None, "") for v in value.values()):
            fields[key] = None
    return fields


class WebshopSink(RecordSink):
    #: the webshop resource written, and the link-store resource (forward stream) it uses
    webshop_resource: ClassVar[str]
    link_resource: ClassVar[str]
    #: other link resources that point at the same webshop record (products: item + price)
    sibling_links: ClassVar[tuple[str, ...]] = ()

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.api: ApiClient | PlanningClient = target.api
        self.links = target.links
        self.report = target.report
        self.delete_guard = target.delete_guard

    @property
    def validate_schema(self) -> bool:
        """The SDK's jsonschema check only when `validate_records` is set: the webshop checks
        every body against its contract anyway, and the check costs more CPU than the sink."""
        return bool(self.config.get("validate_records", False))

    def process_record(self, record: dict, context: dict) -> None:
        self.report.received(self.stream_name)
        chargebee_id = str(record["chargebee_id"])
        fields = webshop_fields(record)
        try:
            link = self.links.get_by_chargebee(self.link_resource, chargebee_id)
            if link is None:
                outcome = self.without_link(record, fields)
            elif record.get("chargebee_version") == link.chargebee_version:
                outcome = "unchanged"
            elif content_hash(fields) == link.webshop_hash and not record.get("deleted"):
                self.remember(link.webshop_id, record, fields, None)
                outcome = "unchanged"
            else:
                outcome = self.update(link, record, fields)
        except Skip as skip:
            self.report.count(self.stream_name, "skipped")
            self.report.notes.append(f"{self.stream_name} {chargebee_id}: {skip}")
            self.planned_fields()
            return
        except ApiError as error:
            if not error.is_refusal:
                raise
            self.reject(record, error.reason)
            self.planned_fields()
            return
        self.report.count(self.stream_name, outcome)
        self.report.change(
            self.stream_name,
            outcome,
            webshop_id=link.webshop_id if link else None,
            chargebee_id=chargebee_id,
            fields=self.planned_fields(),
        )

    def planned_fields(self) -> dict | None:
        """Dry run: the fields this record's writes would change, {field: [old, new]}."""
        return self.api.take_changes() if isinstance(self.api, PlanningClient) else None

    # ---------------------------------------------------------------- writes

    def update(self, link: Link, record: dict, fields: dict) -> str:
        path = f"/{self.webshop_resource}/{link.webshop_id}"
        if record.get("deleted") or fields.get("active") is False:
            self.delete_guard.allow(self.link_resource)
        if record.get("deleted"):
            return self.delete(link, record, fields)
        headers = {"If-Match": f'"{link.webshop_version}"'} if link.webshop_version else {}
        try:
            # If-Match makes a repeat harmless (412), so a 5xx or lost answer is retried
            written = self.api.patch(path, json=fields, headers=headers, idempotent=bool(headers))
        except ApiError as error:
            if error.status != 412:
                raise
            written = self.resolve_conflict(link, record, fields, path)
            if written is None:
                return "skipped"
        self.remember(link.webshop_id, record, fields, written["version"])
        return "updated"

    def delete(self, link: Link, record: dict, fields: dict) -> str:
        raise Skip(f"deleted in Chargebee; a webshop {self.webshop_resource[:-1]} is not deleted")

    def create(self, record: dict, fields: dict) -> str:
        key = hashlib.sha256(f"{self.stream_name}:{record['chargebee_id']}".encode()).hexdigest()
        written = self.api.post(  # the key makes a retry replay the first answer
            f"/{self.webshop_resource}",
            json=fields,
            headers={"Idempotency-Key": key},
            idempotent=True,
        )
        self.remember(str(written["id"]), record, fields, written["version"])
        return "created"

    def without_link(self, record: dict, fields: dict) -> str:
        raise Skip(f"born in Chargebee; {self.webshop_resource} are not created from there")

    def adopt(self, match: dict, record: dict, fields: dict) -> str:
        """Link the webshop record found by e-mail or SKU. No link says which side changed
        since they were last alike (a lost link store): equal content is only linked, else
        the conflict policy decides, rather than Chargebee overwriting the webshop."""
        link = self.links.save(self.link_resource, str(match["id"]), str(record["chargebee_id"]),
                               webshop_version=match["version"])  # fmt: skip
        if all(match.get(name) == value for name, value in fields.items()):
            self.remember(link.webshop_id, record, fields, match["version"])
            return "unchanged"
        path = f"/{self.webshop_resource}/{link.webshop_id}"
        written = self.resolve_conflict(link, record, fields, path)
        if written is None:
            return "skipped"
        self.remember(link.webshop_id, record, fields, written["version"])
        return "updated"

    def remember(self, webshop_id: str, record: dict, fields: dict, version: int | None) -> None:
        """Both sides as they now are; siblings learn the new webshop version too, so the
        forward sync recognises its own echo whichever Chargebee stream it arrives as."""
        self.links.save(
            self.link_resource,
            webshop_id,
            str(record["chargebee_id"]),
            webshop_version=version,
            webshop_hash=content_hash(fields),
            chargebee_version=record.get("chargebee_version"),
        )
        if version is None:
            return
        for resource in self.sibling_links:
            sibling = self.links.get_by_webshop(resource, webshop_id)
            if sibling is not None:  # the hash marks "this version was written from Chargebee"
                self.links.save(
                    resource, webshop_id, sibling.chargebee_id,
                    webshop_version=version, webshop_hash=content_hash(fields),
                )  # fmt: skip

    def reject(self, record: dict, reason: str) -> None:
        chargebee_id = str(record["chargebee_id"])
        self.links.add_dead_letter(self.stream_name, chargebee_id, reason, record)
        self.report.rejected(self.stream_name, "", chargebee_id, reason)
        self.logger.warning("Rejected %s %s: %s", self.stream_name, chargebee_id, reason)

    # ---------------------------------------------------------------- conflicts

    def resolve_conflict(self, link: Link, record: dict, fields: dict, path: str) -> dict | None:
        """Both sides changed since the last sync. Returns the webshop record written, or
        None when the webshop's edit wins (the forward sync then carries it to Chargebee)."""
        current = self.api.get(path)
        if all(current.get(name) == value for name, value in fields.items()):
            return current  # both hold the same (e.g. our retried write had landed): no conflict
        policy = self.config.get("conflict_policy") or "newest_wins"
        chargebee_won = chargebee_wins(
            policy, record.get("chargebee_updated_at"), current["updated_at"]
        )
        theirs = {name: current.get(name) for name in fields}
        self.report.conflicts.append({
            "stream": self.stream_name, "webshop_id": link.webshop_id,
            "chargebee_id": str(record["chargebee_id"]), "policy": policy,
            "winner": "chargebee" if chargebee_won else "webshop",
            "chargebee": fields, "webshop": theirs,
        })  # fmt: skip
        if not chargebee_won:
            # Decided: Chargebee's version counts as seen, so the forward run writes the
            # webshop's edit over it rather than meeting the same conflict again.
            self.links.save(
                self.link_resource, link.webshop_id, str(record["chargebee_id"]),
                chargebee_version=record.get("chargebee_version"),
            )  # fmt: skip
            return None
        if not self.config.get("empty_overwrites"):
            fields = keep_filled(fields, theirs)
        headers = {"If-Match": f'"{current["version"]}"'}
        return self.api.patch(path, json=fields, headers=headers, idempotent=True)


class CustomersSink(WebshopSink):
    """Customers: matched by e-mail or created; a customer deleted in Chargebee is deleted
    (softly) in the webshop."""

    webshop_resource = link_resource = "customers"

    def without_link(self, record: dict, fields: dict) -> str:
        if record.get("deleted"):
            raise Skip("deleted in Chargebee before it was ever synced")
        email = fields.get("email")
        if email:
            found = self.api.get("/customers", params={"email": email, "limit": 10})["data"]
            live = [row for row in found if not row["deleted_at"]]
            if len(live) > 1:
                ids = ", ".join(str(row["id"]) for row in live)
                raise Skip(f"ambiguous: webshop customers {ids} have this e-mail")
            if live:
                return self.adopt(live[0], record, fields)
        return self.create(record, fields)

    def delete(self, link: Link, record: dict, fields: dict) -> str:
        written = self.api.delete(f"/customers/{link.webshop_id}", idempotent=True)  # soft, once
        self.remember(link.webshop_id, record, fields, written["version"])
        return "deleted"


class ItemsSink(WebshopSink):
    """Item name, description, shippable and archival update their product."""

    webshop_resource = "products"
    link_resource = "items"
    sibling_links = ("item_prices",)

    def without_link(self, record: dict, fields: dict) -> str:
        raise Skip("not linked yet; its item price creates the webshop product")


class ItemPricesSink(WebshopSink):
    """Price, currency, SKU and archival update the product; a price of an item born in
    Chargebee creates the product and links both."""

    webshop_resource = "products"
    link_resource = "item_prices"
    sibling_links = ("items",)

    def without_link(self, record: dict, fields: dict) -> str:
        item_id = fields.pop("item_id", None)
        item_link = self.links.get_by_chargebee("items", str(item_id)) if item_id else None
        if item_link is not None:  # the product exists: a further price is not a product
            raise Skip(f"item {item_id} already has its webshop product")
        sku = fields.get("sku")
        found = self.api.get("/products", params={"sku": sku, "limit": 10})["data"] if sku else []
        live = [row for row in found if not row["deleted_at"]]  # a SKU is unique among these
        outcome = self.adopt(live[0], record, fields) if live else self.create(record, fields)
        product = self.links.get_by_chargebee("item_prices", str(record["chargebee_id"]))
        if item_id and product is not None:
            self.links.save(
                "items", product.webshop_id, str(item_id),
                webshop_version=product.webshop_version, webshop_hash=product.webshop_hash,
            )  # fmt: skip
        return outcome

    def update(self, link: Link, record: dict, fields: dict) -> str:
        fields.pop("item_id", None)
        return super().update(link, record, fields)


class OrdersSink(WebshopSink):
    """Status, tracking and dates of linked orders; orders born in Chargebee are reported."""

    webshop_resource = link_resource = "orders"
    sibling_links = ("invoices",)


SINKS = {
    sink.link_resource: sink for sink in (CustomersSink, ItemsSink, ItemPricesSink, OrdersSink)
}
