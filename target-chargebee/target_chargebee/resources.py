"""Chargebee's rules, one class per resource: which calls make, change, remove and restore a
record, which fields an update may carry, how an existing record is found on first contact,
and the field-by-field merge with Chargebee's record. Each works on one `Attempt` through the
gateway and the link store; none knows of threads, the scheduler or the dry run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from sync_common.http import ApiError
from sync_common.links import LinkStore
from sync_common.matching import CandidateIndex, ambiguous_entry, email_key, name_key
from sync_common.merge import conflict_entry, merge_fields
from sync_common.planning import PlanningLinks
from target_chargebee.gateway import OBJECT_NAMES, Gateway, Write
from target_chargebee.jobs import (
    CREATED,
    DELETED,
    MATCHED,
    UPDATED,
    Ambiguous,
    Attempt,
    Rejected,
)
from target_chargebee.params import (
    Params,
    as_fields,
    differences,
    digest,
    drop,
    from_fields,
    held,
    part_hash,
    select,
    to_remote,
)

T = TypeVar("T")
AnyLinks = LinkStore | PlanningLinks


class RunOnce:
    """Values made once per run by the first worker that needs one (an index of candidates,
    the item family); workers that need it meanwhile wait for that one."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._gates: dict[str, threading.Lock] = {}
        self._gates_lock = threading.Lock()  # guards only the creation of a gate

    def get(self, name: str, make: Callable[[], T]) -> T:
        if name in self._values:
            return self._values[name]
        with self._gates_lock:
            gate = self._gates.setdefault(name, threading.Lock())
        with gate:
            if name not in self._values:
                self._values[name] = make()
        return self._values[name]

    def peek(self, name: str) -> Any:
        """The value, if it was made."""
        return self._values.get(name)


class FirstContact:
    """What first-contact matching shares across the records of a run: Chargebee's
    candidates by matching key (read once), and the Chargebee records matched or created in
    this run, with the webshop record that has each."""

    def __init__(self) -> None:
        self.indexes = RunOnce()
        self.claimed: dict[tuple[str, str], str] = {}  # (resource, Chargebee id) -> webshop id
        self.prepared = RunOnce()  # per-run preparations (the item family)
        self._claiming = threading.Lock()

    def claim(self, resource: str, chargebee_id: str, webshop_id: str) -> str:
        """The webshop record that has this Chargebee record in this run: `webshop_id`, unless
        another one claimed it first (decisions run in parallel: check and claim are one step)."""
        with self._claiming:
            return self.claimed.setdefault((resource, chargebee_id), webshop_id)

    def release(self, resource: str, chargebee_ids: set[str], webshop_id: str) -> None:
        """Once the link is saved, the link store tells who has the record: forgetting the
        claim keeps the run's memory flat however many records it creates."""
        with self._claiming:
            for chargebee_id in chargebee_ids:
                if self.claimed.get((resource, chargebee_id)) == webshop_id:
                    del self.claimed[(resource, chargebee_id)]


class ResourceRules:
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

    def __init__(
        self,
        *,
        gateway: Gateway,
        links: AnyLinks,
        settings: dict[str, Any],
        first_contact: FirstContact,
    ) -> None:
        self.gateway = gateway
        self.links = links
        self.settings = settings
        self.first_contact = first_contact

    @property
    def stream(self) -> str:
        return self.resource

    # ------------------------------------------------------------ what each resource defines

    def reference_keys(self, params: Params) -> list[tuple[str, str]]:
        return [(key, resource) for key, resource in self.references.items() if key in params]

    def content(self, job: Attempt) -> Params:
        """Everything Chargebee should hold for this record."""
        return job.params

    def hash_parts(self, job: Attempt) -> dict[str, str]:
        parts = {"main": part_hash(drop(self.content(job), ["id"]))}
        if job.deleted:
            parts["deleted"] = "1"
        return parts

    def updatable(self, job: Attempt) -> Params:
        return drop(self.content(job), self.create_only)

    def merged(self, job: Attempt) -> Params:
        """The params the per-field merge decides: all an update can change."""
        fixed = {"id", *self.fixed_params(job), *(self.create_only - self.updated_apart)}
        return drop(self.content(job), fixed)

    def find_existing(self, job: Attempt) -> dict | None:
        """The Chargebee record this one is, when it has no link yet: by deterministic id."""
        return self.gateway.retrieve(self.resource, job.det_id)

    def do_create(self, job: Attempt) -> dict:
        return self.write(job, "create", self.create_path, self.content(job))

    def update(self, job: Attempt, changed: set[str]) -> str:
        self.write(
            job,
            "update",
            f"/{self.resource}/{job.chargebee_id}",
            self.updatable(job),
            clear=self.clearable,
        )
        return UPDATED

    def remove(self, job: Attempt) -> str:
        raise Rejected(f"deleting a {self.object_name} in Chargebee is not supported")

    def restore(self, job: Attempt) -> str:
        """The record was deleted and is back (undeleted in the webshop)."""
        return self.update(job, set(self.hash_parts(job)))

    # ------------------------------------------------------------ shared flow

    def write(
        self,
        job: Attempt,
        operation: str,
        path: str,
        params: Params,
        *,
        clear: frozenset[str] | set[str] = frozenset(),
        object_name: str | None = None,
    ) -> dict:
        """One write through the gateway; returns the object from the answer (a plan's: the
        params) and keeps Chargebee's new version and, in a plan, what it would change."""
        previous = job.link.chargebee_hash if job.link else ("again" if job.recreated else None)
        # the version the write was decided against: the same body after an edit made in
        # Chargebee (A, then B there, then A again) is a new write, not a replay of the first
        read = (job.remote or {}).get("resource_version")
        written = self.gateway.write(Write(
            self.resource, operation, job.chargebee_id, path, params,
            decided_on=(previous, read), clear=clear, current=job.remote,
            object_name=object_name,
        ))  # fmt: skip
        if written.read is not None and job.remote is None:
            job.remote = written.read
        job.changes.update(written.changes)
        if object_name is None and "resource_version" in written.obj:
            job.version = written.obj["resource_version"]
        return written.obj

    def create(self, job: Attempt) -> str:
        if self.match_before_create:
            remote = self.find_existing(job)
            if remote is not None:
                return self.adopt(job, remote)
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

    def before_create(self, job: Attempt) -> None:
        """Preparations a create needs (the item family)."""

    def after_create(self, job: Attempt) -> None:
        """Follow-up writes a create needs (archive an inactive item)."""

    def link_to(self, job: Attempt, remote: dict) -> None:
        owner = self.links.get_by_chargebee(self.resource, str(remote["id"]))
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

    def adopt(self, job: Attempt, remote: dict) -> str:
        """Link to an existing Chargebee record and write what differs from the record."""
        self.link_to(job, remote)
        fixed = [k for k in differences(self.fixed_params(job), remote) if k != "id"]
        if fixed:
            raise Rejected(
                f"a Chargebee {self.object_name} {job.chargebee_id} exists with different "
                f"{', '.join(sorted(fixed))}, which cannot be changed after creation",
                fields=sorted(fixed),
            )
        self.merge_remote(job, remote)
        return MATCHED

    def fixed_params(self, job: Attempt) -> Params:
        return select(self.content(job), self.create_only)

    def merge_remote(self, job: Attempt, remote: dict) -> bool:
        """Merge the webshop's record into Chargebee's (`remote`, read now) field by field
        (sync_common.merge) and write what it decides; True when something was written.
        Without a link's base (a record matched on first contact) every field that differs
        is decided by `conflict_policy`; a record under the derived id is the sync's own, and
        the webshop's values stand."""
        source = self.merged(job)
        theirs = held(remote, source)
        link = job.link
        base = None
        if link is not None and link.chargebee_id == str(remote.get("id")):
            accounted = link.chargebee_version is not None and (
                remote.get("resource_version") == link.chargebee_version
            )
            if accounted:
                base = as_fields(theirs)
            elif link.chargebee_base is not None:
                base = as_fields(held(link.chargebee_base, source))
        elif str(remote.get("id")) == job.det_id:
            # under the id the sync derives: its own record, whose answer or link was lost
            base = as_fields(theirs)
        policy = self.settings.get("conflict_policy") or "newest_wins"
        merge = merge_fields(
            base,
            as_fields(source),
            as_fields(theirs),
            source_side="webshop",
            policy=policy,
            source_updated_at=job.record.get("webshop_updated_at"),
            target_updated_at=remote.get("updated_at"),
            empty_overwrites=bool(self.settings.get("empty_overwrites")),
        )
        if merge.conflicts:
            job.conflicts.append(
                conflict_entry(job.stream, job.webshop_id, job.chargebee_id, policy, merge)
            )
        job.remote, job.version = remote, remote.get("resource_version")
        job.pending, job.base = bool(merge.pending), to_remote(source)
        if not merge.to_target:
            return False
        before = self.hash_parts(replace(job, params={**job.params, **theirs}))
        job.params = {**job.params, **from_fields(merge.values)}
        after = self.hash_parts(job)
        self.update(job, {name for name, value in after.items() if before.get(name) != value})
        return True

    # ------------------------------------------------------------ first contact

    def load_index(self) -> CandidateIndex:
        """Chargebee's live records of this resource by matching key (sync_common.matching)."""
        raise NotImplementedError

    def index(self) -> CandidateIndex:
        """The first-contact index of this resource, read once per run."""
        return self.first_contact.indexes.get(self.resource, self.load_index)

    def match_by_key(self, job: Attempt, key: str | None, by: str) -> dict | None:
        """The Chargebee record this one is, with no link yet: the one under its derived id,
        else the one with its key (e-mail, name), from an index of all of them read once per
        run (Chargebee's list filters are exact, keys are not; and no GET per new record)."""
        index = self.index()
        if index.has(job.det_id):
            remote = self.gateway.retrieve(self.resource, job.det_id)
            if remote is not None:
                return remote
        ids = [i for i in index.get(key) if i != job.det_id]
        remote = self.choose(job, ids, by)
        if remote is None and ids:  # gone since the index was read
            index.discard(key, ids[0])
        return remote

    def choose(
        self, job: Attempt, ids: list[str], by: str, rows: list[dict] | None = None
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
        owner = self.owner(ids[0]) or self.first_contact.claim(
            self.resource, ids[0], job.webshop_id
        )
        if owner != job.webshop_id:
            raise Ambiguous(self.ambiguous(job, by, "webshop", [owner, job.webshop_id], (
                f"it matches Chargebee {self.object_name} {ids[0]} by {by}, which webshop record "
                f"{owner} has; two webshop records cannot share one Chargebee record: make "
                "them differ, or merge them"
            )))  # fmt: skip
        return rows[0] if rows else self.gateway.retrieve(self.resource, ids[0])

    def owner(self, chargebee_id: str) -> str | None:
        """The webshop record that has this Chargebee record, if any (this run's first)."""
        claimed = self.first_contact.claimed.get((self.resource, chargebee_id))
        if claimed is not None:
            return claimed
        link = self.links.get_by_chargebee(self.resource, chargebee_id)
        return link.webshop_id if link is not None else None

    def ambiguous(
        self, job: Attempt, by: str, side: str, candidates: list[str], reason: str
    ) -> dict[str, Any]:
        return ambiguous_entry(
            self.stream, webshop_id=job.webshop_id, chargebee_id=job.det_id, by=by,
            candidates_in=side, candidates=candidates, reason=reason,  # type: ignore[arg-type]
        )  # fmt: skip

    def claim_new(self, job: Attempt, key: str | None) -> None:
        """Before a create: the new record is this one's, and a candidate for later ones."""
        self.first_contact.claimed[(self.resource, job.det_id)] = job.webshop_id
        index = self.first_contact.indexes.peek(self.resource)
        if key is not None and index is not None:
            index.add(key, job.det_id)


# ---------------------------------------------------------------------------- customers


class CustomersRules(ResourceRules):
    """Customers: created in a business entity; update sends the non-address fields,
    update_billing_info the full billing address; a change of entity is a transfer."""

    resource = "customers"
    object_name = "customer"
    create_path = "/customers"
    create_only = frozenset({"id", "business_entity_id", "billing_address"})
    updated_apart = frozenset({"business_entity_id", "billing_address"})
    clearable = frozenset({"first_name", "last_name", "email", "company", "phone"})
    match_before_create = True

    def entity(self, job: Attempt) -> str | None:
        return job.params.get("business_entity_id") or self.settings.get("business_entity_id")

    def content(self, job: Attempt) -> Params:
        params = dict(job.params)
        params["business_entity_id"] = self.entity(job)
        return params

    def address(self, job: Attempt) -> Params:
        return select(job.params, ["billing_address"])

    def hash_parts(self, job: Attempt) -> dict[str, str]:
        parts = {
            "main": part_hash(self.updatable(job)),
            "address": part_hash(self.address(job)),
            "entity": digest(self.entity(job) or "", 16),
        }
        if job.deleted:
            parts["deleted"] = "1"
        return parts

    def load_index(self) -> CandidateIndex:
        return CandidateIndex(
            (email_key(c.get("email")), c.get("id"))
            for c in self.gateway.list_all(self.resource)
            if c.get("active_id") in (None, c.get("id"))  # not a transfer's deprecated copy
        )

    def find_existing(self, job: Attempt) -> dict | None:
        """By deterministic id, else by e-mail (sync_common.matching): the one customer with
        that e-mail is this one; several, or one another webshop customer has, are ambiguous
        (reported with their ids, not guessed)."""
        return self.match_by_key(job, email_key(job.params.get("email")), "e-mail")

    def before_create(self, job: Attempt) -> None:
        self.claim_new(job, email_key(job.params.get("email")))

    def update(self, job: Attempt, changed: set[str]) -> str:
        customer = f"/customers/{job.chargebee_id}"
        if "main" in changed:
            self.write(job, "update", customer, self.updatable(job), clear=self.clearable)
        if "address" in changed:
            # update_billing_info replaces the whole address: always send all of it.
            self.write(job, "billing", f"{customer}/update_billing_info", self.address(job))
        if "entity" in changed and self.entity(job):
            # Chargebee refuses a transfer into the entity the customer is in: a link made by
            # the way back, or a transfer whose answer was lost, may not know where it is.
            remote = self.gateway.retrieve(self.resource, job.chargebee_id)
            if remote is None or remote.get("business_entity_id") != self.entity(job):
                self.transfer(job)
        return UPDATED

    def transfer(self, job: Attempt) -> None:
        self.write(
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

    def fixed_params(self, job: Attempt) -> Params:
        return select(self.content(job), ["id"])  # the address and entity have their calls

    def remove(self, job: Attempt) -> str:
        """Chargebee's delete cascades to the customer's invoices: delete only a customer
        without any; otherwise report it."""
        filters = {"customer_id[is]": job.chargebee_id, "limit": 1}
        if self.gateway.list("invoices", **filters):
            raise Rejected(
                "deleted in the webshop, but the Chargebee customer has invoices, which "
                "Chargebee would delete with it; not deleted"
            )
        self.write(job, "delete", f"/customers/{job.chargebee_id}/delete", {})
        return DELETED

    def restore(self, job: Attempt) -> str:
        return self.create(job)


# ---------------------------------------------------------------------------- catalog


class ItemsRules(ResourceRules):
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

    def content(self, job: Attempt) -> Params:
        params = dict(job.params)
        params.setdefault("item_family_id", self.settings.get("item_family_id"))
        if job.deleted:
            params["status"] = "archived"
        return params

    def fixed_params(self, job: Attempt) -> Params:
        return select(self.content(job), ["type"])

    def load_index(self) -> CandidateIndex:
        return CandidateIndex(
            (name_key(r.get("name")), r.get("id"))
            for r in self.gateway.list_all(self.resource)
            if r.get("status") != "deleted"
        )

    def find_existing(self, job: Attempt) -> dict | None:
        """By id, then by name, compared without case and surrounding spaces (exact item
        names are unique in Chargebee; two differing only so are ambiguous)."""
        return self.match_by_key(job, name_key(job.params.get("name")), "name")

    def before_create(self, job: Attempt) -> None:
        self.claim_new(job, name_key(job.params.get("name")))
        family = self.settings.get("item_family_id")
        if not family:
            return

        def ensure() -> bool:
            note = self.gateway.ensure_item_family(family)
            if note is not None:
                job.notes.append(note)
            return True

        # once per run; no other item is created before its family exists
        self.first_contact.prepared.get("item_family", ensure)

    def do_create(self, job: Attempt) -> dict:
        params = drop(self.content(job), ["status"])  # create takes no status
        return self.write(job, "create", self.create_path, params)

    def after_create(self, job: Attempt) -> None:
        if self.content(job).get("status") == "archived":
            # its prices come next, and an archived item takes none: the decisions archive
            # it once the rest of its source record is written
            job.archive_path = f"/{self.resource}/{job.chargebee_id}"

    def remove(self, job: Attempt) -> str:
        self.update(job, {"main"})
        return DELETED


class ItemPricesRules(ItemsRules):
    """Item prices of the items; inactive or deleted: archived."""

    resource = "item_prices"
    object_name = "item_price"
    create_path = "/item_prices"
    references = {"item_id": "items"}
    create_only = frozenset({"id", "item_id", "currency_code", "item_family_id"})
    clearable = frozenset({"description", "external_name", "invoice_notes"})
    match_before_create = False  # but see create: the price of an item matched by name

    def content(self, job: Attempt) -> Params:
        params = dict(job.params)
        if job.deleted:
            params["status"] = "archived"
        return params

    def fixed_params(self, job: Attempt) -> Params:
        return select(self.content(job), ["item_id", "currency_code"])

    def find_existing(self, job: Attempt) -> dict | None:
        """By id, then the item's price in this currency: an item matched by name has its
        prices under ids of its own, not `cws_<id>-<currency>`; several are ambiguous."""
        remote = self.gateway.retrieve(self.resource, job.det_id)
        item_id, currency = job.params.get("item_id"), job.params.get("currency_code")
        if remote is not None or not item_id or not currency:
            return remote
        filters = {"item_id[is]": item_id, "currency_code[is]": currency}
        rows = [
            row
            for row in self.gateway.list(self.resource, **filters)
            if row.get("status") != "deleted" and row.get("id") != job.det_id
        ]
        ids = [str(row["id"]) for row in rows]
        return self.choose(job, ids, f"item {item_id} and currency {currency}", rows)

    def create(self, job: Attempt) -> str:
        if job.params.get("item_id") != job.record.get("item_id"):
            # its item was matched (by name) under an id of its own: so may its price be
            remote = self.find_existing(job)
            if remote is not None:
                return self.adopt(job, remote)
        return super().create(job)

    def before_create(self, job: Attempt) -> None:
        self.first_contact.claimed[(self.resource, job.det_id)] = job.webshop_id

    def after_create(self, job: Attempt) -> None:
        if self.content(job).get("status") == "archived":
            self.write(
                job, "archive", f"/{self.resource}/{job.chargebee_id}", {"status": "archived"}
            )

    def do_create(self, job: Attempt) -> dict:
        item_id = job.params.get("item_id")
        try:
            return super().do_create(job)
        except ApiError as error:
            # without an item_id there is no item to reopen (Chargebee asks for the param)
            if error.code != "invalid_state_for_request" or not item_id:
                raise
        # Chargebee adds no price to an archived item: reopen it for the create, then re-archive.
        item = f"/items/{item_id}"
        self.write(job, "unarchive_item", item, {"status": "active"}, object_name="item")
        # another idempotency key: the first one would replay the refusal
        params = drop(self.content(job), ["status"])
        created = self.write(job, "create_in_reopened_item", self.create_path, params)
        archived = self.write(job, "archive_item", item, {"status": "archived"}, object_name="item")
        item_link = self.links.get_by_chargebee("items", item_id)
        if item_link is not None:  # so its new version is no edit
            self.links.save(
                "items", item_link.webshop_id, item_link.chargebee_id,
                chargebee_version=archived.get("resource_version"),
            )  # fmt: skip
        return created


# ---------------------------------------------------------------------------- sales


class InvoicesRules(ResourceRules):
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

    def fixed_params(self, job: Attempt) -> Params:
        return select(self.content(job), self.compared)

    def update(self, job: Attempt, changed: set[str]) -> str:
        remote = self.gateway.retrieve(self.resource, job.chargebee_id)
        detail = ""
        if remote is not None:
            fields = sorted({k.split("[")[0] for k in differences(self.fixed_params(job), remote)})
            if fields:
                detail = f" ({', '.join(fields)} differ)"
        raise Rejected(
            f"the order changed in the webshop after its invoice was imported{detail}; Chargebee "
            "has no invoice update, so the change is not applied (void and re-import by hand)"
        )

    def adopt(self, job: Attempt, remote: dict) -> str:
        self.link_to(job, remote)
        different = sorted({k.split("[")[0] for k in differences(self.fixed_params(job), remote)})
        if different:
            raise Rejected(
                f"Chargebee invoice {job.chargebee_id} exists with different "
                f"{', '.join(different)}; invoices cannot be updated",
                fields=different,
            )
        return MATCHED


class OrdersRules(ResourceRules):
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

    def hash_parts(self, job: Attempt) -> dict[str, str]:
        parts = {
            "fixed": part_hash(drop(self.fixed_params(job), ["id"])),
            "main": part_hash(self.updatable(job)),
        }
        if job.deleted:
            parts["deleted"] = "1"
        return parts

    def update(self, job: Attempt, changed: set[str]) -> str:
        if "fixed" in changed:
            raise Rejected(
                "the order's invoice, customer, number or creation date changed in the webshop; "
                "Chargebee cannot change them on an existing order"
            )
        return super().update(job, changed)

    def remove(self, job: Attempt) -> str:
        self.write(job, "delete", f"/orders/{job.chargebee_id}/delete", {})
        return DELETED

    def restore(self, job: Attempt) -> str:
        return self.create(job)


RULES: dict[str, type[ResourceRules]] = {
    rules.resource: rules
    for rules in (CustomersRules, ItemsRules, ItemPricesRules, InvoicesRules, OrdersRules)
}

__all__ = ["OBJECT_NAMES", "RULES", "FirstContact", "ResourceRules"]
