"""One RecordSink per Chargebee resource. Records are handed to the engine as they arrive (a
RecordSink keeps arrival order); it writes up to `max_concurrency` at once, never a record
before its parent or an earlier version of itself. The shared upsert logic lives in
`engine.py`, what differs per resource (calls, which fields an update may carry, how an
existing record is found) lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.sinks import RecordSink

from sync_common.http import ApiError
from sync_common.matching import (
    CandidateIndex,
    HeldByKey,
    ambiguous_entry,
    email_key,
    name_key,
)
from sync_common.merge import SOURCE_RECORD
from target_chargebee.engine import Ambiguous, Engine, Job, Rejected
from target_chargebee.params import Params, differences, digest, drop, part_hash, select

if TYPE_CHECKING:
    from singer_sdk import Target

OBJECT_NAMES = {
    "customers": "customer",
    "items": "item",
    "item_prices": "item_price",
    "invoices": "invoice",
    "orders": "order",
    "item_families": "item_family",
}

CREATED, MATCHED, UPDATED, DELETED = "created", "matched", "updated", "deleted"


class ResourceSink(RecordSink):
    """The upsert of one Chargebee resource."""

    resource: ClassVar[str]
    object_name: ClassVar[str]
    create_path: ClassVar[str]
    #: Reference params (deterministic ids of parents) -> the parent's resource.
    references: ClassVar[dict[str, str]] = {}
    #: Params Chargebee takes at create only; an update leaves them out.
    create_only: ClassVar[frozenset[str]] = frozenset({"id"})
    #: Create-only params that have a call of their own to change them (an address).
    updated_apart: ClassVar[frozenset[str]] = frozenset()
    #: Params an update sends empty when the record has no value (Chargebee clears them).
    clearable: ClassVar[frozenset[str]] = frozenset()
    #: Look for an existing Chargebee record before creating (customers: by e-mail).
    match_before_create: ClassVar[bool] = False
    #: Create a record that arrives already deleted (items: yes, archived; others: no).
    create_deleted: ClassVar[bool] = False
    #: A deleted record is gone from Chargebee (customers, orders), not archived (items).
    delete_removes: ClassVar[bool] = True
    #: Changes are merged field by field with Chargebee's record (all but invoices, which
    #: Chargebee cannot update).
    merges: ClassVar[bool] = True

    def __init__(self, target: Target, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.engine: Engine = target.engine  # type: ignore[attr-defined]

    def preprocess_record(self, record: dict, context: dict) -> dict:
        """Keeps the webshop record beside its translation: the base for the way back."""
        return {**record, SOURCE_RECORD: self.engine.source_record}

    def process_record(self, record: dict, context: dict) -> None:
        self.engine.submit(self, record)

    @property
    def validate_schema(self) -> bool:
        """The SDK's jsonschema check only when `validate_records` is set: the API checks
        every field it is sent anyway, and the check cost more CPU than the rest of the sink."""
        return bool(self.config.get("validate_records", False))

    # ------------------------------------------------------------ what each resource defines

    def reference_keys(self, params: Params) -> list[tuple[str, str]]:
        return [(key, resource) for key, resource in self.references.items() if key in params]

    def content(self, job: Job) -> Params:
        """Everything Chargebee should hold for this record."""
        return job.params

    def hash_parts(self, job: Job) -> dict[str, str]:
        parts = {"main": part_hash(drop(self.content(job), ["id"]))}
        if job.deleted:
            parts["deleted"] = "1"
        return parts

    def updatable(self, job: Job) -> Params:
        return drop(self.content(job), self.create_only)

    def merged(self, job: Job) -> Params:
        """The params the per-field merge decides: all an update can change."""
        fixed = {"id", *self.fixed_params(job), *(self.create_only - self.updated_apart)}
        return drop(self.content(job), fixed)

    def find_existing(self, job: Job) -> dict | None:
        """The Chargebee record this one is, when it has no link yet: by deterministic id."""
        return self.engine.retrieve(self.resource, job.det_id)

    def do_create(self, job: Job) -> dict:
        return self.engine.write(job, "create", self.create_path, self.content(job))

    def update(self, job: Job, changed: set[str]) -> str:
        self.engine.write(
            job,
            "update",
            f"/{self.resource}/{job.chargebee_id}",
            self.updatable(job),
            clear=self.clearable,
        )
        return UPDATED

    def remove(self, job: Job) -> str:
        raise Rejected(f"deleting a {self.object_name} in Chargebee is not supported")

    def restore(self, job: Job) -> str:
        """The record was deleted and is back (undeleted in the webshop)."""
        return self.update(job, set(self.hash_parts(job)))

    # ------------------------------------------------------------ shared flow

    def create(self, job: Job) -> str:
        if self.match_before_create or self.engine.dry_run:
            remote = self.find_existing(job)
            if remote is not None:
                return self.adopt(job, remote)
            if self.engine.dry_run:
                self.before_create(job)
                return CREATED
        self.before_create(job)
        try:
            self.do_create(job)
        except ApiError as error:
            if error.code != "duplicate_entry":
                raise
            # It exists already: a lost response, a lost link store, or a record made by hand.
            remote = self.find_existing(job)
            if remote is None:
                raise
            return self.adopt(job, remote)
        self.after_create(job)
        return CREATED

    def before_create(self, job: Job) -> None:
        """Preparations a create needs (the item family)."""

    def after_create(self, job: Job) -> None:
        """Follow-up writes a create needs (archive an inactive item)."""

    def link_to(self, job: Job, remote: dict) -> None:
        owner = self.engine.links.get_by_chargebee(self.resource, str(remote["id"]))
        if owner is not None and owner.webshop_id != job.webshop_id:
            # Matched (same e-mail, same name) a record another webshop record already is:
            # adopting it would overwrite that one with this one.
            raise Rejected(
                f"it matches Chargebee {self.object_name} {remote['id']} (same e-mail or name), "
                f"which is already linked to webshop record {owner.webshop_id}; two webshop "
                "records cannot share one Chargebee record: make them differ, or merge them",
                linked_to=owner.webshop_id,
            )
        job.chargebee_id = str(remote["id"])
        job.version = remote.get("resource_version")
        job.remote = remote

    def adopt(self, job: Job, remote: dict) -> str:
        """Link to an existing Chargebee record and write what differs from the record."""
        self.link_to(job, remote)
        fixed = [k for k in differences(self.fixed_params(job), remote) if k != "id"]
        if fixed:
            raise Rejected(
                f"a Chargebee {self.object_name} {job.chargebee_id} exists with different "
                f"{', '.join(sorted(fixed))}, which cannot be changed after creation",
                fields=sorted(fixed),
            )
        self.engine.merge_remote(job, remote)
        return MATCHED

    def fixed_params(self, job: Job) -> Params:
        return select(self.content(job), self.create_only)

    # ------------------------------------------------------------ first contact

    def load_index(self) -> CandidateIndex:
        """Chargebee's live records of this resource by matching key (sync_common.matching)."""
        raise NotImplementedError

    def match_by_key(self, job: Job, key: str | None, by: str) -> dict | None:
        """The Chargebee record this one is, with no link yet: the one under its derived id,
        else the one with its key (e-mail, name), from an index of all of them read once per
        run (Chargebee's list filters are exact, keys are not; and no GET per new record)."""
        index = self.engine.index(self.resource, self.load_index)
        if index.has(job.det_id):
            remote = self.engine.retrieve(self.resource, job.det_id)
            if remote is not None:
                return remote
        ids = [i for i in index.get(key) if i != job.det_id]
        remote = self.choose(job, ids, by)
        if remote is None and ids:  # gone since the index was read
            index.discard(key, ids[0])
        return remote

    def choose(
        self, job: Job, ids: list[str], by: str, rows: list[dict] | None = None
    ) -> dict | None:
        """The one candidate, if no other webshop record has it; several, or one another
        webshop record has (linked, or matched or created in this run): Ambiguous."""
        if not ids:
            return None
        if len(ids) > 1:
            raise Ambiguous(self.ambiguous(job, by, "chargebee", ids, (
                f"{len(ids)} Chargebee {self.object_name}s have this {by} ({', '.join(ids)}); "
                "none is linked or created until they differ, or one is linked by hand"
            )))  # fmt: skip
        owner = self.owner(ids[0])
        if owner is not None and owner != job.webshop_id:
            raise Ambiguous(self.ambiguous(job, by, "webshop", [owner, job.webshop_id], (
                f"it matches Chargebee {self.object_name} {ids[0]} by {by}, which webshop record "
                f"{owner} has; two webshop records cannot share one Chargebee record: make "
                "them differ, or merge them"
            )))  # fmt: skip
        remote = rows[0] if rows else self.engine.retrieve(self.resource, ids[0])
        if remote is not None:
            self.engine.claimed[(self.resource, ids[0])] = job.webshop_id
        return remote

    def owner(self, chargebee_id: str) -> str | None:
        """The webshop record that has this Chargebee record, if any (this run's first)."""
        claimed = self.engine.claimed.get((self.resource, chargebee_id))
        if claimed is not None:
            return claimed
        link = self.engine.links.get_by_chargebee(self.resource, chargebee_id)
        return link.webshop_id if link is not None else None

    def ambiguous(
        self, job: Job, by: str, side: str, candidates: list[str], reason: str
    ) -> dict[str, Any]:
        return ambiguous_entry(
            self.stream_name, webshop_id=job.webshop_id, chargebee_id=job.det_id, by=by,
            candidates_in=side, candidates=candidates, reason=reason,  # type: ignore[arg-type]
        )  # fmt: skip

    def claim_new(self, job: Job, key: str | None) -> None:
        """Before a create: the new record is this one's, and a candidate for later ones."""
        self.engine.claimed[(self.resource, job.det_id)] = job.webshop_id
        if key is not None and self.resource in self.engine.indexes:
            self.engine.indexes[self.resource].add(key, job.det_id)


# ---------------------------------------------------------------------------- customers


class CustomersSink(ResourceSink):
    """Customers: created in a business entity; update sends the non-address fields,
    update_billing_info the full billing address; a change of entity is a transfer."""

    resource = "customers"
    object_name = "customer"
    create_path = "/customers"
    create_only = frozenset({"id", "business_entity_id", "billing_address"})
    updated_apart = frozenset({"business_entity_id", "billing_address"})
    clearable = frozenset({"first_name", "last_name", "email", "company", "phone"})
    match_before_create = True

    def entity(self, job: Job) -> str | None:
        return job.params.get("business_entity_id") or self.config.get("business_entity_id")

    def content(self, job: Job) -> Params:
        params = dict(job.params)
        params["business_entity_id"] = self.entity(job)
        return params

    def address(self, job: Job) -> Params:
        return select(job.params, ["billing_address"])

    def hash_parts(self, job: Job) -> dict[str, str]:
        parts = {
            "main": part_hash(self.updatable(job)),
            "address": part_hash(self.address(job)),
            "entity": digest(self.entity(job) or "", 16),
        }
        if job.deleted:
            parts["deleted"] = "1"
        return parts

    def __init__(self, target: Target, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        #: Unlinked customers held until the tap's next state message, by e-mail key:
        #: several webshop customers with one e-mail are ambiguous, whichever comes first.
        self.held = HeldByKey()

    def process_record(self, record: dict, context: dict) -> None:
        key = email_key(record.get("email"))
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        if (
            key is None
            or record.get("deleted")
            or not webshop_id
            or self.engine.links.get(self.resource, webshop_id) is not None
        ):
            super().process_record(record, context)
            return
        if self.held.hold(webshop_id, key, record):
            self.release_held()

    def release_held(self) -> None:
        """Decide the held customers (the target calls this at each state message and at
        the end): one per e-mail goes on to be matched or created; several with one e-mail
        are neither (skipped, in `ambiguous_matches`)."""
        for records in self.held.take():
            if len(records) == 1:
                self.engine.submit(self, next(iter(records.values())))
                continue
            ids = sorted(records)
            for webshop_id, record in records.items():
                entry = ambiguous_entry(
                    self.stream_name, webshop_id=webshop_id, chargebee_id=record.get("id"),
                    by="e-mail", candidates_in="webshop", candidates=ids,
                    reason=f"webshop customers {', '.join(ids)} have this e-mail; none is "
                    "linked or created until they differ, or one is linked by hand",
                )  # fmt: skip
                self.engine.skip_unsubmitted(self, record, entry)

    def load_index(self) -> CandidateIndex:
        return CandidateIndex(
            (email_key(c.get("email")), c.get("id"))
            for c in self.engine.list_all(self.resource)
            if c.get("active_id") in (None, c.get("id"))  # not a transfer's deprecated copy
        )

    def find_existing(self, job: Job) -> dict | None:
        """By deterministic id, else by e-mail (sync_common.matching): the one customer with
        that e-mail is this one; several, or one another webshop customer has, are ambiguous
        (reported with their ids, not guessed)."""
        return self.match_by_key(job, email_key(job.params.get("email")), "e-mail")

    def before_create(self, job: Job) -> None:
        self.claim_new(job, email_key(job.params.get("email")))

    def update(self, job: Job, changed: set[str]) -> str:
        customer = f"/customers/{job.chargebee_id}"
        if "main" in changed:
            self.engine.write(job, "update", customer, self.updatable(job), clear=self.clearable)
        if "address" in changed:
            # update_billing_info replaces the whole address: always send all of it.
            self.engine.write(job, "billing", f"{customer}/update_billing_info", self.address(job))
        if "entity" in changed and self.entity(job):
            # Chargebee refuses a transfer into the entity the customer is in: a link made by
            # the way back, or a transfer whose answer was lost, may not know where it is.
            remote = self.engine.retrieve(self.resource, job.chargebee_id)
            if remote is None or remote.get("business_entity_id") != self.entity(job):
                self.transfer(job)
        return UPDATED

    def transfer(self, job: Job) -> None:
        self.engine.write(
            job,
            "transfer",
            "/business_entities/transfers",
            {
                "active_resource_ids[0]": job.chargebee_id,
                "destination_business_entity_ids[0]": self.entity(job),
                "reason_codes[0]": "correction",
                "resource_types[0]": "customer",
            },
            object_name="business_entity_transfer",
        )

    def fixed_params(self, job: Job) -> Params:
        return select(self.content(job), ["id"])  # the address and entity have their calls

    def remove(self, job: Job) -> str:
        """Chargebee's delete cascades to the customer's invoices: delete only a customer
        without any; otherwise report it."""
        invoices = self.engine.list("invoices", **{"customer_id[is]": job.chargebee_id, "limit": 1})
        if invoices:
            raise Rejected(
                "deleted in the webshop, but the Chargebee customer has invoices, which "
                "Chargebee would delete with it; not deleted"
            )
        self.engine.write(job, "delete", f"/customers/{job.chargebee_id}/delete", {})
        return DELETED

    def restore(self, job: Job) -> str:
        return self.create(job)


# ---------------------------------------------------------------------------- catalog


class ItemsSink(ResourceSink):
    """Items, in the item family of the `item_family_id` setting (created once if missing);
    an inactive or deleted product is an archived item."""

    resource = "items"
    object_name = "item"
    create_path = "/items"
    create_only = frozenset({"id", "type", "item_family_id"})
    clearable = frozenset({"description", "external_name"})
    delete_removes = False
    #: A product deleted before it reached Chargebee is made archived: its paid orders,
    #: whose invoice lines name its price, still arrive.
    create_deleted = True
    match_before_create = True  # by name, case-insensitively: a create would not notice

    def content(self, job: Job) -> Params:
        params = dict(job.params)
        params.setdefault("item_family_id", self.config.get("item_family_id"))
        if job.deleted:
            params["status"] = "archived"
        return params

    def fixed_params(self, job: Job) -> Params:
        return select(self.content(job), ["type"])

    def load_index(self) -> CandidateIndex:
        return CandidateIndex(
            (name_key(r.get("name")), r.get("id"))
            for r in self.engine.list_all(self.resource)
            if r.get("status") != "deleted"
        )

    def find_existing(self, job: Job) -> dict | None:
        """By id, then by name, compared without case and surrounding spaces (exact item
        names are unique in Chargebee; two differing only so are ambiguous)."""
        return self.match_by_key(job, name_key(job.params.get("name")), "name")

    def before_create(self, job: Job) -> None:
        self.claim_new(job, name_key(job.params.get("name")))
        family = self.config.get("item_family_id")
        if family and self.engine.once_per_run("item_family"):
            self.engine.ensure_item_family(family)

    def do_create(self, job: Job) -> dict:
        params = drop(self.content(job), ["status"])  # create takes no status
        return self.engine.write(job, "create", self.create_path, params)

    def after_create(self, job: Job) -> None:
        if self.content(job).get("status") != "archived":
            return
        path = f"/{self.resource}/{job.chargebee_id}"
        if self.resource == "items":  # its prices come next, and an archived item takes none
            self.engine.archive_later(job, path)
        else:
            self.engine.write(job, "archive", path, {"status": "archived"})

    def remove(self, job: Job) -> str:
        self.update(job, {"main"})
        return DELETED


class ItemPricesSink(ItemsSink):
    """Item prices of the items; inactive or deleted: archived."""

    resource = "item_prices"
    object_name = "item_price"
    create_path = "/item_prices"
    references = {"item_id": "items"}
    create_only = frozenset({"id", "item_id", "currency_code", "item_family_id"})
    clearable = frozenset({"description", "external_name", "invoice_notes"})
    match_before_create = False  # but see create: the price of an item matched by name

    def content(self, job: Job) -> Params:
        params = dict(job.params)
        if job.deleted:
            params["status"] = "archived"
        return params

    def fixed_params(self, job: Job) -> Params:
        return select(self.content(job), ["item_id", "currency_code"])

    def find_existing(self, job: Job) -> dict | None:
        """By id, then the item's price in this currency: an item matched by name has its
        prices under ids of its own, not `cws_<id>-<currency>`; several are ambiguous."""
        remote = self.engine.retrieve(self.resource, job.det_id)
        item_id, currency = job.params.get("item_id"), job.params.get("currency_code")
        if remote is not None or not item_id or not currency:
            return remote
        filters = {"item_id[is]": item_id, "currency_code[is]": currency}
        rows = [
            row
            for row in self.engine.list(self.resource, **filters)
            if row.get("status") != "deleted" and row.get("id") != job.det_id
        ]
        ids = [str(row["id"]) for row in rows]
        return self.choose(job, ids, f"item {item_id} and currency {currency}", rows)

    def create(self, job: Job) -> str:
        if job.params.get("item_id") != job.record.get("item_id") and not self.engine.dry_run:
            # its item was matched (by name) under an id of its own: so may its price be
            remote = self.find_existing(job)
            if remote is not None:
                return self.adopt(job, remote)
        return super().create(job)

    def before_create(self, job: Job) -> None:
        self.engine.claimed[(self.resource, job.det_id)] = job.webshop_id

    def do_create(self, job: Job) -> dict:
        item_id = job.params.get("item_id")
        try:
            return super().do_create(job)
        except ApiError as error:
            # without an item_id there is no item to reopen (Chargebee asks for the param)
            if error.code != "invalid_state_for_request" or not item_id:
                raise
        # Chargebee adds no price to an archived item: reopen it for the create, then re-archive.
        item = f"/items/{item_id}"
        self.engine.write(job, "unarchive_item", item, {"status": "active"}, object_name="item")
        # another idempotency key: the first one would replay the refusal
        params = drop(self.content(job), ["status"])
        created = self.engine.write(job, "create_in_reopened_item", self.create_path, params)
        archived = self.engine.write(
            job, "archive_item", item, {"status": "archived"}, object_name="item"
        )
        item_link = self.engine.links.get_by_chargebee("items", item_id)
        if item_link is not None and not self.engine.dry_run:  # so its new version is no edit
            self.engine.links.save(
                "items", item_link.webshop_id, item_link.chargebee_id,
                chargebee_version=archived.get("resource_version"),
            )  # fmt: skip
        return created


# ---------------------------------------------------------------------------- sales


class InvoicesSink(ResourceSink):
    """Paid webshop orders, imported as paid invoices (client-chosen id, no collection).
    Chargebee has no invoice update: a later change is reported, never silently dropped."""

    resource = "invoices"
    object_name = "invoice"
    create_path = "/invoices/import_invoice"
    references = {"customer_id": "customers"}
    #: What a retrieved invoice is compared on (its payments come back as linked_payments).
    compared = ("customer_id", "currency_code", "date", "total", "line_items")
    merges = False

    def reference_keys(self, params: Params) -> list[tuple[str, str]]:
        keys = super().reference_keys(params)
        for key in params:
            if key.startswith("line_items[entity_id]["):
                kind = params.get(key.replace("[entity_id]", "[entity_type]", 1))
                if kind in ("charge_item_price", "plan_item_price", "addon_item_price"):
                    keys.append((key, "item_prices"))
        return keys

    def fixed_params(self, job: Job) -> Params:
        return select(self.content(job), self.compared)

    def update(self, job: Job, changed: set[str]) -> str:
        remote = self.engine.retrieve(self.resource, job.chargebee_id)
        detail = ""
        if remote is not None:
            fields = sorted({k.split("[")[0] for k in differences(self.fixed_params(job), remote)})
            if fields:
                detail = f" ({', '.join(fields)} differ)"
        raise Rejected(
            f"the order changed in the webshop after its invoice was imported{detail}; Chargebee "
            "has no invoice update, so the change is not applied (void and re-import by hand)"
        )

    def adopt(self, job: Job, remote: dict) -> str:
        self.link_to(job, remote)
        different = sorted({k.split("[")[0] for k in differences(self.fixed_params(job), remote)})
        if different:
            raise Rejected(
                f"Chargebee invoice {job.chargebee_id} exists with different "
                f"{', '.join(different)}; invoices cannot be updated",
                fields=different,
            )
        return MATCHED


class OrdersSink(ResourceSink):
    """Orders imported on their imported invoice; later changes (status, shipping, tracking,
    dates) go through an order update; a deleted order is deleted (imported orders only)."""

    resource = "orders"
    object_name = "order"
    create_path = "/orders/import_order"
    references = {"invoice_id": "invoices", "customer_id": "customers"}
    create_only = frozenset({"id", "invoice_id", "customer_id", "document_number", "created_at"})
    clearable = frozenset(
        {"note", "tracking_id", "tracking_url", "shipment_carrier", "fulfillment_status"}
    )

    def hash_parts(self, job: Job) -> dict[str, str]:
        parts = {
            "fixed": part_hash(drop(self.fixed_params(job), ["id"])),
            "main": part_hash(self.updatable(job)),
        }
        if job.deleted:
            parts["deleted"] = "1"
        return parts

    def update(self, job: Job, changed: set[str]) -> str:
        if "fixed" in changed:
            raise Rejected(
                "the order's invoice, customer, number or creation date changed in the webshop; "
                "Chargebee cannot change them on an existing order"
            )
        return super().update(job, changed)

    def remove(self, job: Job) -> str:
        self.engine.write(job, "delete", f"/orders/{job.chargebee_id}/delete", {})
        return DELETED

    def restore(self, job: Job) -> str:
        return self.create(job)


class DroppedStreamSink(RecordSink):
    """A stream the stream maps drop (`products: __NULL__`); it never receives a record."""

    def process_record(self, record: dict, context: dict) -> None:
        raise AssertionError(f"a record of dropped stream {self.stream_name} arrived")


SINKS: dict[str, type[ResourceSink]] = {
    sink.resource: sink
    for sink in (CustomersSink, ItemsSink, ItemPricesSink, InvoicesSink, OrdersSink)
}
