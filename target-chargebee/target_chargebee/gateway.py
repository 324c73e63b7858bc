"""The only code that talks to Chargebee. `Gateway` reads and writes; `PlanningGateway`, the
dry run, reads for real and answers each write itself, as Chargebee would, noting what it
would change (old -> new). The target picks one of the two; nothing above knows which."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

from sync_common.chargebee import ChargebeeClient
from sync_common.http import ApiError
from target_chargebee.params import (
    Params,
    differences,
    encode,
    idempotency_key,
    remote_value,
    wire_value,
)

OBJECT_NAMES = {
    "customers": "customer",
    "items": "item",
    "item_prices": "item_price",
    "invoices": "invoice",
    "orders": "order",
    "item_families": "item_family",
}


class Write(NamedTuple):
    """One write: `params` POSTed to `path`, for the record `chargebee_id` of `resource`."""

    resource: str
    operation: str
    chargebee_id: str
    path: str
    params: Params
    #: what the write was decided against (in its idempotency key: a retry replays it, a
    #: new decision is a new write)
    decided_on: tuple[Any, ...] = ()
    clear: frozenset[str] | set[str] = frozenset()
    #: the record as the caller last read it (a plan compares with it)
    current: dict | None = None
    #: the object of the answer to return (default: the resource's)
    object_name: str | None = None

    def body(self) -> dict[str, str]:
        return encode(self.params, clear=self.clear)


class Written(NamedTuple):
    """A write's answer: the object, and in a plan the fields it would change."""

    obj: dict[str, Any]
    changes: dict[str, list[Any]]
    #: the record a plan read to tell what changes (None: none read), kept by the caller
    read: dict[str, Any] | None = None


class Gateway:
    def __init__(self, api: ChargebeeClient) -> None:
        self.api = api
        self._writes: Counter[str] = Counter()  # write calls by resource and operation
        self._writes_lock = threading.Lock()  # the workers count at once

    def retrieve(self, resource: str, chargebee_id: str) -> dict | None:
        """GET /{resource}/{id}: the object, or None if Chargebee does not have it."""
        try:
            answer = self.api.get(f"/{resource}/{chargebee_id}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        obj = answer.get(OBJECT_NAMES[resource])
        if not isinstance(obj, dict) or obj.get("deleted") or obj.get("status") == "deleted":
            return None
        return obj

    def list(self, resource: str, **filters: Any) -> list[dict]:
        """One page (up to 100) of a list."""
        answer = self.api.get(f"/{resource}", {"limit": 100, **filters})
        name = OBJECT_NAMES[resource]
        return [entry[name] for entry in answer.get("list", []) if name in entry]

    def list_all(self, resource: str, **filters: Any) -> Iterator[dict]:
        """Every record of a list, page by page (100 each, `offset` = the last
        `next_offset`)."""
        name, offset = OBJECT_NAMES[resource], None
        while True:
            params = {"limit": 100, **filters, **({"offset": offset} if offset else {})}
            answer = self.api.get(f"/{resource}", params)
            yield from (entry[name] for entry in answer.get("list", []) if name in entry)
            offset = answer.get("next_offset")
            if not offset:
                return

    def write(self, write: Write) -> Written:
        """POST one write with an idempotency key."""
        body = write.body()
        key = idempotency_key(
            write.resource, write.operation, write.chargebee_id, write.path, body,
            *write.decided_on,
        )  # fmt: skip
        answer = self.api.post(write.path, body, idempotency_key=key)
        self._count(f"{write.resource}.{write.operation}")
        return Written(answer.get(write.object_name or OBJECT_NAMES[write.resource]) or {}, {})

    def ensure_item_family(self, family_id: str) -> str | None:
        """Create the item family the items go in, if Chargebee does not have it; the note
        for the report, if it was created."""
        if self.retrieve("item_families", family_id) is not None:
            return None
        key = idempotency_key("item_families", "create", family_id)
        try:
            self.api.post(
                "/item_families", {"id": family_id, "name": family_id}, idempotency_key=key
            )
        except ApiError as error:
            if error.code != "duplicate_entry":
                raise
        self._count("item_families.create")
        return f"item family {family_id} created"

    def _count(self, write: str) -> None:
        with self._writes_lock:
            self._writes[write] += 1

    def api_calls(self) -> dict[str, Any]:
        with self._writes_lock:
            writes = dict(sorted(self._writes.items()))
        return {**self.api.calls(), "writes_by_operation": writes}

    def close(self) -> None:
        self.api.close()


class PlanningGateway(Gateway):
    """The dry run: reads go to Chargebee, writes are answered here. A create under an id
    Chargebee has is refused with `duplicate_entry`, as Chargebee would refuse it; a write to
    an existing record notes each field it would change, old -> new."""

    def __init__(self, api: ChargebeeClient) -> None:
        super().__init__(api)
        #: records this plan creates: nothing of theirs exists to change
        self._planned: set[tuple[str, str]] = set()
        #: records looked up and not found (no second GET when the create follows)
        self._absent: set[tuple[str, str]] = set()

    def retrieve(self, resource: str, chargebee_id: str) -> dict | None:
        obj = super().retrieve(resource, chargebee_id)
        if obj is None:
            self._absent.add((resource, chargebee_id))
        return obj

    def write(self, write: Write) -> Written:
        resource, operation, chargebee_id = write.resource, write.operation, write.chargebee_id
        params = write.params
        current = write.current
        body = write.body()
        sent: Params = {name: params[name] for name in body}  # what a real write would send
        if operation == "create":
            new_id = str(params.get("id") or chargebee_id)
            exists = (resource, new_id) not in self._absent and (
                self.retrieve(resource, new_id) is not None
            )
            if exists:
                raise ApiError(
                    400, "duplicate_entry", f"{resource} {new_id} already exists", "id",
                    method="POST", path=write.path,
                )  # fmt: skip
            self._planned.add((resource, new_id))
            return Written(dict(body), {})
        if operation == "delete" or not chargebee_id or (resource, chargebee_id) in self._planned:
            return Written(dict(body), {})
        read = None
        if current is None:
            current = read = self.retrieve(resource, chargebee_id) or {}
        if operation == "transfer":
            old = current.get("business_entity_id")
            new = sent.get("destination_business_entity_ids[0]")
            return Written(dict(body), {"business_entity_id": [old, new]}, read)
        changes = {
            name: [wire_value(remote_value(current, name)), sent[name]]
            for name in differences(sent, current)
        }
        return Written(dict(body), changes, read)

    def ensure_item_family(self, family_id: str) -> str | None:
        if self.retrieve("item_families", family_id) is not None:
            return None
        return f"item family {family_id} would be created"
