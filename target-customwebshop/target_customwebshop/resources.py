"""The webshop's rules, one class per Chargebee stream, each writing into one webshop
resource: the upsert decision of one record, through the API client (a dry run's planning
client) and the link store. No SDK here: the sinks (sinks.py) hand each record in.

A record carries webshop fields (flat `billing_address[city]` keys are nested here) plus
control fields from the stream maps: `chargebee_id`, `chargebee_version`
(`resource_version`), `chargebee_updated_at` and `deleted`. Its journey:
1. Linked and `chargebee_version` is one the link store accounts for (the sync wrote or saw
   it), or no mapped field differs from the base: nothing to do, no call (this is how the
   sync's own writes are not read back as edits).
2. Linked: the webshop record is read and merged field by field (sync_common.merge): a field
   edited only in Chargebee is written, one edited only in the webshop stays (the forward
   sync carries it), one edited on both is decided by `conflict_policy` and reported. The
   PATCH carries `If-Match`; a 412 (edited meanwhile) reads and merges again.
3. Not linked: customers are matched by e-mail or created; an item price creates its product
   (the item's own record only updates it later); orders born in Chargebee are reported.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from sync_common.guard import DeleteGuard
from sync_common.http import ApiClient, ApiError
from sync_common.links import Link, LinkStore, content_hash, superseded
from sync_common.matching import (
    CandidateIndex,
    ambiguous_entry,
    ambiguous_letter,
    email_key,
    name_key,
    sku_key,
)
from sync_common.merge import SOURCE_RECORD, conflict_entry, merge_fields, same
from sync_common.planning import PlanningLinks
from sync_common.report import RunReport
from target_customwebshop.plan import PlanningClient

CONTROL_FIELDS = frozenset((
    "chargebee_id", "chargebee_version", "chargebee_updated_at", "deleted", SOURCE_RECORD,
))  # fmt: skip
_BRACKET = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")


class Skip(Exception):  # noqa: N818 (an outcome, not a failure)
    """The record is not written, for the reason given (reported; an ambiguous match is also
    kept as a dead letter, by keep_ambiguous)."""


def webshop_fields(record: dict, references: tuple[str, ...] = ()) -> dict[str, Any]:
    """The record's webshop fields (not its control fields, nor `references` to other
    records); `address[x]` keys become one object (null if all empty)."""
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if key in CONTROL_FIELDS or key in references:
            continue
        if isinstance(value, datetime.datetime):  # the SDK parses date-time fields; JSON wants text
            value = value.isoformat()
        name, member = _field_of(key)
        if member is None:
            fields[name] = value
        else:
            fields.setdefault(name, {})[member] = value
    for key, value in fields.items():
        if isinstance(value, dict) and not any(v not in (None, "") for v in value.values()):
            fields[key] = None
    return fields


@functools.cache
def _field_of(key: str) -> tuple[str, str | None]:
    """A mapped key's webshop field, and its member for `field[member]` (once per key: this
    ran for every key of every record)."""
    match = _BRACKET.match(key)
    return (match.group(1), match.group(2)) if match else (key, None)


@dataclass(kw_only=True, eq=False)
class WebshopRules:
    """The upsert of one webshop resource, from one Chargebee stream."""

    #: the webshop resource written, and the link-store resource (forward stream) it uses
    webshop_resource: ClassVar[str]
    link_resource: ClassVar[str]
    #: mapped fields that name another Chargebee record (to find its webshop record), not
    #: fields of this one: neither compared nor written
    references: ClassVar[tuple[str, ...]] = ()

    stream: str
    api: ApiClient | PlanningClient
    links: LinkStore | PlanningLinks
    report: RunReport
    delete_guard: DeleteGuard
    settings: dict[str, Any]
    logger: logging.Logger
    #: the tap stream this stream comes from, for its dead letters (the target's maps)
    source_stream_of: Callable[[str], str]
    #: Unlinked Chargebee items of this run (rules, record): their prices match a product
    #: by the item's name too, and merge the item into it once linked.
    unlinked_items: dict[str, tuple[WebshopRules, dict]]

    def upsert(self, record: dict, *, link: Link | None = None) -> None:
        """One record: written, matched, left unchanged, skipped or rejected, and counted.
        `link`: the record's, when the caller has just read it."""
        self.report.received(self.stream)
        chargebee_id = str(record["chargebee_id"])
        fields = webshop_fields(record, self.references)
        try:
            link = link or self.links.get_by_chargebee(self.link_resource, chargebee_id)
            if link is None:
                outcome = self.without_link(record, fields)
            elif self.accounted_for(link, record, fields):
                outcome = "unchanged"
            else:
                outcome = self.update(link, record, fields)
        except Skip as skip:
            self.report.count(self.stream, "skipped")
            self.report.notes.append(f"{self.stream} {chargebee_id}: {skip}")
            self.planned_fields()
            return
        except ApiError as error:
            if not error.is_refusal:
                raise
            self.reject(record, error.reason, link)
            self.planned_fields()
            return
        if self.links.resolve_dead_letter("chargebee", self.stream, chargebee_id):
            self.report.dead_letter_resolved()  # it went through: written or in sync
        self.report.count(self.stream, outcome)
        self.report.change(
            self.stream,
            outcome,
            webshop_id=link.webshop_id if link else None,
            chargebee_id=chargebee_id,
            fields=self.planned_fields(),
        )

    def accounted_for(self, link: Link, record: dict, fields: dict) -> bool:
        """Nothing of this Chargebee version is missing in the webshop, known without a call:
        the sync wrote or saw this very version, or no mapped field differs from the base."""
        version = record.get("chargebee_version")
        if superseded(version, link.chargebee_version):
            return True  # read before an overlapping run's newer write: that run merged it
        if link.chargebee_version is not None and version == link.chargebee_version:
            if not same_fields(fields, link.webshop_base):  # what both held: the next base
                self.links.save(self.link_resource, link.webshop_id, link.chargebee_id,
                                webshop_base=fields,
                                chargebee_base=record.get(SOURCE_RECORD))  # fmt: skip
            return True
        if record.get("deleted"):
            return False
        if link.webshop_base is None:  # a link made before bases were kept: its hash says
            unchanged = content_hash(fields) == link.webshop_hash
        else:
            unchanged = same_fields(fields, link.webshop_base)
        if unchanged:
            self.links.save(self.link_resource, link.webshop_id, link.chargebee_id,
                            chargebee_version=version, webshop_base=fields,
                            chargebee_base=record.get(SOURCE_RECORD))  # fmt: skip
        return unchanged

    def planned_fields(self) -> dict | None:
        """Dry run: the fields this record's writes would change, {field: [old, new]}."""
        return self.api.take_changes() if isinstance(self.api, PlanningClient) else None

    # ---------------------------------------------------------------- writes

    def update(self, link: Link, record: dict, fields: dict) -> str:
        if record.get("deleted"):
            self.delete_guard.allow(self.link_resource)
            return self.delete(link, record, fields)
        return self.merge_into(link, record, fields, None)

    def delete(self, link: Link, record: dict, fields: dict) -> str:
        raise Skip(f"deleted in Chargebee; a webshop {self.webshop_resource[:-1]} is not deleted")

    def create(self, record: dict, fields: dict) -> str:
        chargebee_id = str(record["chargebee_id"])
        # The key makes a retry replay the first answer. The webshop replays a refusal too:
        # after each refused create (a dead letter) the next one is a new request.
        failed = self.links.failed_attempts("chargebee", self.stream, chargebee_id)
        key = f"{self.stream}:{chargebee_id}" + (f":after-{failed}" if failed else "")
        key = hashlib.sha256(key.encode()).hexdigest()
        written = self.api.post(
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
        """Link the webshop record found by e-mail or SKU. No base is known for a pair that
        was never synced: fields that differ are decided by the conflict policy."""
        link = self.links.save(self.link_resource, str(match["id"]), str(record["chargebee_id"]))
        self.merge_into(link, record, fields, match)
        return "matched"

    def merge_into(self, link: Link, record: dict, fields: dict, current: dict | None) -> str:
        """The per-field merge of Chargebee's record into the webshop's (read now, or
        `current`), written with `If-Match`; a 412 (edited meanwhile) reads and merges again."""
        path = f"/{self.webshop_resource}/{link.webshop_id}"
        current = current or as_accounted(link, fields)
        for _attempt in range(3):
            current = current or self.api.get(path)
            if current.get("deleted_at"):
                return self.deleted_in_webshop(link, record, fields)
            held = {name: held_value(current.get(name), new) for name, new in fields.items()}
            # the webshop version the sync accounted for: what it holds now is the base
            accounted = link.webshop_version is not None and (
                current["version"] == link.webshop_version
            )
            policy = self.settings.get("conflict_policy") or "newest_wins"
            base = held if accounted else base_fields(link.webshop_base, fields)
            merge = merge_fields(
                base, fields, held,
                source_side="chargebee", policy=policy,
                source_updated_at=record.get("chargebee_updated_at"),
                target_updated_at=current.get("updated_at"),
                empty_overwrites=bool(self.settings.get("empty_overwrites")),
            )  # fmt: skip
            version = current["version"]
            if merge.to_target:
                if merge.to_target.get("active") is False:
                    self.delete_guard.allow(self.link_resource)
                headers = {"If-Match": f'"{version}"'}  # a repeat is harmless: 412
                try:
                    version = self.api.patch(
                        path, json=merge.to_target, headers=headers, idempotent=True
                    )["version"]
                except ApiError as error:
                    if error.status != 412:
                        raise
                    current = None
                    continue
            if merge.conflicts:
                chargebee_id = str(record["chargebee_id"])
                self.report.conflicts.append(
                    conflict_entry(self.stream, link.webshop_id, chargebee_id, policy, merge)
                )
            self.links.save(
                self.link_resource, link.webshop_id, str(record["chargebee_id"]),
                webshop_base=fields, chargebee_base=record.get(SOURCE_RECORD),
                chargebee_version=record.get("chargebee_version"),
                # the webshop's own edits still go to Chargebee: its version is not done yet
                webshop_version=None if merge.pending else version,
            )  # fmt: skip
            return "updated" if merge.to_target else "unchanged"
        raise ApiError(412, "version_mismatch", "the webshop record kept changing during the sync")

    def deleted_in_webshop(self, link: Link, record: dict, fields: dict) -> str:
        """Chargebee edited a record the webshop has deleted: the delete wins (the forward
        sync carries it to Chargebee), and the overruled edit is reported."""
        self.report.conflicts.append({
            "stream": self.stream, "webshop_id": link.webshop_id,
            "chargebee_id": str(record["chargebee_id"]),
            "policy": self.settings.get("conflict_policy") or "newest_wins", "winner": "webshop",
            "fields": [{"field": "deleted", "base": False, "webshop": True, "chargebee": False,
                        "winner": "webshop"}],
            "webshop": {"deleted": True}, "chargebee": fields,
        })  # fmt: skip
        raise Skip("deleted in the webshop; the delete wins over the edit made in Chargebee")

    def remember(self, webshop_id: str, record: dict, fields: dict, version: int | None) -> None:
        """The webshop record now holds Chargebee's version of this record, entirely."""
        self.links.save(
            self.link_resource,
            webshop_id,
            str(record["chargebee_id"]),
            webshop_version=version,
            webshop_hash=content_hash(fields),
            webshop_base=fields,
            chargebee_base=record.get(SOURCE_RECORD),
            chargebee_version=record.get("chargebee_version"),
        )

    def reject(self, record: dict, reason: str, link: Link | None = None) -> None:
        chargebee_id = str(record["chargebee_id"])
        webshop_id = link.webshop_id if link else ""
        letter = self.links.add_dead_letter(
            self.stream, chargebee_id, reason, record, source="chargebee",
            source_stream=self.source_stream_of(self.stream),
        )  # fmt: skip
        if letter is not None:  # None: a dry run keeps none
            self.report.dead_lettered(letter.attempts)
        self.report.rejected(self.stream, webshop_id, chargebee_id, reason)
        self.logger.warning("Rejected %s %s: %s", self.stream, chargebee_id, reason)


def held_value(value: Any, like: Any) -> Any:
    """The webshop's value in the shape of the mapped field: an object only with the members
    the map gives (the webshop may hold more)."""
    if isinstance(like, dict) and isinstance(value, dict):
        return {member: value.get(member) for member in like}
    return value


def as_accounted(link: Link, fields: dict) -> dict | None:
    """The webshop record as the link says it was at the version the sync accounted for (its
    mapped fields and that version), or None when the link does not know both. merge_into
    writes against it with `If-Match` on that version instead of reading the record first: a
    webshop edit since then changed the version, so the PATCH gets a 412 and the record is
    read and merged. This saves a GET per record edited only in Chargebee."""
    held = base_fields(link.webshop_base, fields)
    if link.webshop_version is None or held is None:
        return None
    return {**held, "version": link.webshop_version}


def base_fields(base: dict | None, fields: dict) -> dict | None:
    """The base of each mapped field, from a webshop-shaped record (the one the forward sync
    read, or what this target last merged)."""
    if base is None:
        return None
    return {name: held_value(base.get(name), value) for name, value in fields.items()}


def same_fields(fields: dict, base: dict | None) -> bool:
    values = base_fields(base, fields)
    if values is None:
        return False
    return fields == values or all(same(v, values[k]) for k, v in fields.items())


class CustomersRules(WebshopRules):
    """Customers: matched by e-mail or created; a customer deleted in Chargebee is deleted
    (softly) in the webshop."""

    webshop_resource = link_resource = "customers"

    def skip_ambiguous(self, records: dict[str, dict]) -> None:
        """Several unlinked Chargebee customers with one e-mail (the sink held them): none
        is linked or created; each is skipped, in `ambiguous_matches`."""
        ids = sorted(records)
        reason = (
            f"Chargebee customers {', '.join(ids)} have this e-mail; none is linked or "
            "created until they differ, or one is linked by hand"
        )
        for chargebee_id, record in records.items():
            self.report.received(self.stream)
            self.report.count(self.stream, "skipped")
            keep_ambiguous(self, record, ambiguous_entry(
                self.stream, chargebee_id=chargebee_id, by="e-mail",
                candidates_in="chargebee", candidates=ids, reason=reason,
            ))  # fmt: skip

    @cached_property
    def email_index(self) -> CandidateIndex:
        """The webshop's live customers by e-mail key, read once per run when needed."""
        return CandidateIndex(
            (email_key(row.get("email")), row["id"])
            for row in every(self.api, "/customers")
            if not row.get("deleted_at")
        )

    def without_link(self, record: dict, fields: dict) -> str:
        """Matched by e-mail, compared without case and surrounding spaces (the webshop's
        `?email=` is exact, so against an index of all customers); else created."""
        if record.get("deleted"):
            raise Skip("deleted in Chargebee before it was ever synced")
        key = email_key(fields.get("email"))
        match = self.match(record, key) if key else None
        if match is not None:
            return self.adopt(match, record, fields)
        outcome = self.create(record, fields)
        link = self.links.get_by_chargebee(self.link_resource, str(record["chargebee_id"]))
        if link is not None and "email_index" in self.__dict__:
            self.email_index.add(key, link.webshop_id)  # a later one with this e-mail sees it
        return outcome

    def match(self, record: dict, key: str) -> dict | None:
        """The one live webshop customer with this e-mail key that no other Chargebee
        customer has; several, or one another has: ambiguous (Skip, reported)."""
        index = self.email_index
        ids = index.get(key)
        chargebee_id = str(record["chargebee_id"])
        if len(ids) > 1:
            raise ambiguous(self, record, "e-mail", "webshop", ids, (
                f"webshop customers {', '.join(ids)} have this e-mail; none is linked or "
                "created until they differ, or one is linked by hand"
            ))  # fmt: skip
        if not ids:
            return None
        link = self.links.get_by_webshop(self.link_resource, ids[0])
        if link is not None and link.chargebee_id != chargebee_id:
            others = [link.chargebee_id, chargebee_id]
            raise ambiguous(self, record, "e-mail", "chargebee", others, (
                f"it matches webshop customer {ids[0]} by e-mail, which Chargebee customer "
                f"{link.chargebee_id} has; two Chargebee customers cannot share one webshop "
                "customer: make them differ, or merge them"
            ))  # fmt: skip
        current = self.api.get(f"/customers/{ids[0]}")
        if current.get("deleted_at") or email_key(current.get("email")) != key:
            index.discard(key, ids[0])  # changed since the index was read
            return None
        return current

    def delete(self, link: Link, record: dict, fields: dict) -> str:
        """Deleted in Chargebee: deleted (softly) in the webshop; a webshop edit made since the
        last sync is overruled by the delete, and reported."""
        path = f"/customers/{link.webshop_id}"
        current = self.api.get(path)
        if current.get("deleted_at"):
            self.remember(link.webshop_id, record, fields, current["version"])
            return "unchanged"
        if link.webshop_version is not None and current["version"] != link.webshop_version:
            self.report.conflicts.append({
                "stream": self.stream, "webshop_id": link.webshop_id,
                "chargebee_id": str(record["chargebee_id"]),
                "policy": self.settings.get("conflict_policy") or "newest_wins",
                "winner": "chargebee",
                "fields": [{"field": "deleted", "base": False, "webshop": False,
                            "chargebee": True, "winner": "chargebee"}],
                "webshop": {"deleted": False}, "chargebee": {"deleted": True},
            })  # fmt: skip
        written = self.api.delete(path, idempotent=True)  # soft, once
        self.remember(link.webshop_id, record, fields, written["version"])
        return "deleted"


class ItemsRules(WebshopRules):
    """Item name, description, shippable and archival update their product."""

    webshop_resource = "products"
    link_resource = "items"

    def without_link(self, record: dict, fields: dict) -> str:
        # kept for its item price: it matches the product by the item's name too, and
        # once it has linked the item, merges this record into the product
        self.unlinked_items[str(record["chargebee_id"])] = (self, record)
        raise Skip("not linked yet; its item price creates the webshop product")


class ItemPricesRules(WebshopRules):
    """Price, currency, SKU and archival update the product; a price of an item born in
    Chargebee creates the product and links both."""

    webshop_resource = "products"
    link_resource = "item_prices"
    references = ("item_id",)

    @cached_property
    def product_index(self) -> tuple[CandidateIndex, CandidateIndex]:
        """The webshop's live products by SKU key and by name key, read once per run."""
        by_sku, by_name = CandidateIndex(), CandidateIndex()
        for row in every(self.api, "/products"):
            if not row.get("deleted_at"):
                by_sku.add(sku_key(row.get("sku")), row["id"])
                by_name.add(name_key(row.get("name")), row["id"])
        return by_sku, by_name

    def without_link(self, record: dict, fields: dict) -> str:
        item_id = record.get("item_id")
        item_link = self.links.get_by_chargebee("items", str(item_id)) if item_id else None
        if item_link is not None:  # the product exists: a further price is not a product
            raise Skip(f"item {item_id} already has its webshop product")
        match = self.match(record, fields, item_id)
        outcome = self.adopt(match, record, fields) if match else self.create(record, fields)
        product = self.links.get_by_chargebee("item_prices", str(record["chargebee_id"]))
        if match is None and product is not None and "product_index" in self.__dict__:
            by_sku, by_name = self.product_index  # a later price with this SKU or name sees it
            by_sku.add(sku_key(fields.get("sku")), product.webshop_id)
            by_name.add(name_key(fields.get("name")), product.webshop_id)
        if item_id and product is not None:
            self.links.save(
                "items", product.webshop_id, str(item_id),
                webshop_version=product.webshop_version, webshop_hash=product.webshop_hash,
            )  # fmt: skip
            # (a plan's new product has no id to read back: its item is left for the run)
            self.merge_item(item_id, planned=match is None and isinstance(self.api, PlanningClient))
        return outcome

    def match(self, record: dict, fields: dict, item_id: Any) -> dict | None:
        """The live webshop product of this item price, matched by SKU, then by name (the
        price's external name, then its item's name), each compared without case and
        surrounding spaces, the same rule as the forward sync's; several, or one linked to
        another Chargebee item or price: ambiguous (Skip, reported)."""
        by_sku, by_name = self.product_index
        chargebee_id = str(record["chargebee_id"])
        keys = [
            ("SKU", by_sku, sku_key(fields.get("sku"))),
            ("name", by_name, name_key(fields.get("name"))),
            ("item name", by_name, name_key(self.item_record(item_id).get("name"))),
        ]
        for by, index, key in keys:
            ids = index.get(key)
            if len(ids) > 1:
                raise ambiguous(self, record, by, "webshop", ids, (
                    f"webshop products {', '.join(ids)} have this {by}; none is linked or "
                    "created until they differ, or one is linked by hand"
                ))  # fmt: skip
            if not ids:
                continue
            for resource, ours in (("item_prices", chargebee_id), ("items", item_id)):
                link = self.links.get_by_webshop(resource, ids[0])
                if link is not None and link.chargebee_id != str(ours):
                    raise ambiguous(self, record, by, "chargebee", [link.chargebee_id, ours], (
                        f"it matches webshop product {ids[0]} by {by}, which Chargebee "
                        f"{resource[:-1].replace('_', ' ')} {link.chargebee_id} has; make them "
                        "differ, or merge them"
                    ))  # fmt: skip
            current = self.api.get(f"/products/{ids[0]}")
            if not current.get("deleted_at"):
                return current
            index.discard(key, ids[0])  # deleted since the index was read
        return None

    def item_record(self, item_id: Any) -> dict:
        """The record of this price's item, if it came unlinked earlier in this run."""
        return self.unlinked_items.get(str(item_id), (None, {}))[1] if item_id else {}

    def merge_item(self, item_id: Any, *, planned: bool = False) -> None:
        """The price has linked its item: the item's record, skipped earlier in this run as
        not linked yet, is merged into the product now (not only when it is read again)."""
        sink, record = self.unlinked_items.pop(str(item_id), (None, None))
        link = self.links.get_by_chargebee("items", str(item_id)) if item_id else None
        if sink is not None and record is not None and link is not None and not planned:
            sink.update(link, record, webshop_fields(record))


class OrdersRules(WebshopRules):
    """Status, tracking and dates of linked orders; orders born in Chargebee are reported."""

    webshop_resource = link_resource = "orders"


RULES: dict[str, type[WebshopRules]] = {
    rules.link_resource: rules
    for rules in (CustomersRules, ItemsRules, ItemPricesRules, OrdersRules)
}


def every(api: ApiClient | PlanningClient, path: str) -> Iterator[dict]:
    """Every record of a webshop list, page by page (500 each, `cursor` = `next_cursor`)."""
    cursor = None
    while True:
        page = api.get(path, params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        yield from page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def ambiguous(
    sink: WebshopRules, record: dict, by: str, side: str, candidates: list, reason: str
) -> Skip:
    """First contact found several candidates (sync_common.matching): the record is listed
    in `ambiguous_matches` and skipped with the reason, neither linked nor created."""
    keep_ambiguous(sink, record, ambiguous_entry(
        sink.stream, chargebee_id=record["chargebee_id"], by=by,
        candidates_in=side, candidates=candidates, reason=reason,  # type: ignore[arg-type]
    ))  # fmt: skip
    return Skip(f"ambiguous: {reason}")


def keep_ambiguous(sink: WebshopRules, record: dict, entry: dict) -> None:
    """List the record in `ambiguous_matches` and keep it as an open dead letter
    (sync_common.matching.ambiguous_letter)."""
    sink.report.ambiguous.append(entry)
    reason, details = ambiguous_letter(entry)
    sink.links.add_dead_letter(
        sink.stream, str(record["chargebee_id"]), reason, record, source="chargebee",
        source_stream=sink.source_stream_of(sink.stream), details=details,
    )  # fmt: skip
