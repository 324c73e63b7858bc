"""The upsert engine every sink shares: links, references to parents, waiting for parents,
no-op suppression, rejections, the dry-run plan.

One record's journey (`submit`):
1. The references to parents (an invoice's `customer_id`, its lines' item prices, an order's
   `invoice_id`, a price's `item_id`) are deterministic Chargebee ids computed by the maps. Each
   is resolved to the id the parent really has in Chargebee (the same id, or the id of a record
   it was matched to). A parent that is not in Chargebee yet makes the record wait; it is
   retried as soon as the parent is written, and at the end of the run; a record whose parent
   never appears is dead-lettered with that reason.
2. With no link: the sink creates the record under its deterministic id, or adopts the
   Chargebee record it matches (an answer `duplicate_entry` for the id, a customer with the
   same e-mail, an item with the same name), updating what differs.
3. With a link: if the record's content hash equals the one the link store holds for
   Chargebee's side, nothing is sent; otherwise only the parts that changed are written.
4. A refusal by Chargebee (4xx) dead-letters the record with Chargebee's reason and the run
   goes on. Anything else (network, 5xx or 429 after the client's retries, the link store)
   raises: the target stops without emitting state, so nothing is lost.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sync_common.chargebee import ChargebeeClient
from sync_common.guard import DeleteGuard
from sync_common.http import ApiError
from sync_common.report import RunReport
from target_chargebee.params import (
    Params,
    composite_hash,
    encode,
    idempotency_key,
    split_hash,
    to_params,
)
from target_chargebee.store import Link, Links

if TYPE_CHECKING:
    from target_chargebee.sinks import ResourceSink

Ref = tuple[str, str]  # (resource, deterministic Chargebee id)


class Rejected(Exception):  # noqa: N818 (a decision, not a failure)
    """Raised by sink code to dead-letter the current record with a reason."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass
class Job:
    """One record on its way to Chargebee."""

    sink: ResourceSink
    record: dict[str, Any]
    webshop_id: str
    webshop_version: Any
    deleted: bool
    det_id: str  # the deterministic Chargebee id from the map
    params: Params  # with references resolved to real Chargebee ids
    link: Link | None = None
    chargebee_id: str = ""  # the id in Chargebee (linked, matched or det_id)
    version: Any = None  # Chargebee's resource_version after the last write or read
    recreated: bool = False  # linked, but gone from Chargebee: made again
    notes: list[str] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return self.sink.stream_name

    @property
    def resource(self) -> str:
        return self.sink.resource


class Engine:
    def __init__(
        self,
        *,
        api: ChargebeeClient,
        links: Links,
        settings: dict[str, Any],
        logger: logging.Logger,
    ) -> None:
        self.api = api
        self.links = links
        self.settings = settings
        self.logger = logger
        self.dry_run = bool(settings.get("dry_run"))
        self.report = RunReport("target-chargebee", dry_run=self.dry_run)
        self.delete_guard = DeleteGuard(links, settings.get("max_delete_percent"))
        self.known: dict[Ref, str] = {}  # parents that exist in Chargebee (or will, in a plan)
        self.absent: set[Ref] = set()  # parents looked up this run and not found
        self.rejected_refs: dict[Ref, str] = {}  # parents refused this run, with the reason
        self.waiting: dict[Ref, list[tuple[ResourceSink, dict]]] = defaultdict(list)
        self.blocked: dict[Ref, int] = defaultdict(int)  # records with a job waiting
        self.once: set[str] = set()  # per-run one-time preparations (the item family)
        self.writes: Counter[str] = Counter()  # write calls by resource and operation

    # ---------------------------------------------------------------- entry points

    @property
    def pending(self) -> int:
        return sum(len(jobs) for jobs in self.waiting.values())

    def submit(self, sink: ResourceSink, record: dict[str, Any], *, retry: bool = False) -> None:
        if not retry:
            self.report.received(sink.stream_name)
        det_id = str(record.get("id") or "")
        if not det_id:
            self._dead_letter_raw(sink, record, "the record has no `id` (check the stream map)")
            return
        own: Ref = (sink.resource, det_id)
        if not retry and self.blocked[own]:
            # An earlier version of this record waits for a parent: keep the order.
            self._wait(sink, record, own, own)
            return
        params = to_params(record)
        resolved, missing = self._resolve_references(sink, record, params)
        if missing is not None:
            self._wait(sink, record, missing, own)
            return
        job = Job(
            sink=sink,
            record=record,
            webshop_id=str(record.get("webshop_id") or det_id),
            webshop_version=record.get("webshop_version"),
            deleted=bool(record.get("deleted")),
            det_id=det_id,
            params=resolved,
        )
        self._run(job)

    def finish(self) -> None:
        """End of input: retry what waits for a parent; dead-letter what still cannot go."""
        progress = True
        while self.waiting and progress:
            progress = False
            for ref in list(self.waiting):
                if ref not in self.waiting:
                    continue
                self.absent.discard(ref)
                if self._lookup(ref) is not None:
                    progress = True
                    self._release(ref)
        for ref, jobs in list(self.waiting.items()):
            del self.waiting[ref]
            resource, det_id = ref
            reason = f"its parent {resource} {det_id} does not exist in Chargebee"
            if ref in self.rejected_refs:
                reason += f" (the parent was rejected: {self.rejected_refs[ref]})"
            for sink, record in jobs:
                self.blocked[(sink.resource, str(record.get("id")))] -= 1
                if self.dry_run:
                    self.report.planned(sink.stream_name, "waiting")
                    continue
                self._dead_letter_raw(sink, record, reason, parent=f"{resource}/{det_id}")

    # ---------------------------------------------------------------- references

    def _resolve_references(
        self, sink: ResourceSink, record: dict[str, Any], params: Params
    ) -> tuple[Params, Ref | None]:
        resolved = dict(params)
        for key, resource in sink.reference_keys(params):
            det = params.get(key)
            if not det:
                continue
            actual = self._lookup((resource, det))
            if actual is None:
                return params, (resource, det)
            resolved[key] = actual
        return resolved, None

    def _lookup(self, ref: Ref) -> str | None:
        """The Chargebee id of a parent given by its deterministic id, or None if absent."""
        if ref in self.known:
            return self.known[ref]
        if ref in self.absent:
            return None
        resource, det_id = ref
        actual = self.links.resolve(resource, det_id)
        if actual is None:
            remote = self.retrieve(resource, det_id)
            actual = det_id if remote is not None else None
        if actual is None:
            self.absent.add(ref)
        else:
            self.known[ref] = actual
        return actual

    def _wait(self, sink: ResourceSink, record: dict, parent: Ref, own: Ref) -> None:
        if not self.blocked[own] or parent != own:
            self.report.deferred[sink.stream_name] += 1
        self.waiting[parent].append((sink, record))
        self.blocked[own] += 1

    def _release(self, ref: Ref) -> None:
        """A parent now exists: run what waited for it, in arrival order."""
        jobs = self.waiting.pop(ref, [])
        for sink, record in jobs:
            own = (sink.resource, str(record.get("id")))
            self.blocked[own] -= 1
            self.submit(sink, record, retry=True)

    def exists(self, job: Job, chargebee_id: str | None = None) -> None:
        """Record that the job's record exists in Chargebee, and release its waiting children."""
        ref = (job.resource, job.det_id)
        self.known[ref] = chargebee_id or job.chargebee_id or job.det_id
        self.absent.discard(ref)
        if ref in self.waiting:
            self._release(ref)

    # ---------------------------------------------------------------- the upsert

    def _run(self, job: Job) -> None:
        try:
            self._upsert(job)
        except Rejected as refusal:
            self.reject(job, refusal.reason, **refusal.details)
        except ApiError as error:
            if not error.is_refusal:
                raise
            self.reject(job, error.reason, api_error_code=error.code, param=error.param)
        # Later versions of this record that queued behind this one may go now.
        own = (job.resource, job.det_id)
        if own in self.waiting and own not in self.known:
            self._release(own)

    def _upsert(self, job: Job) -> None:
        sink = job.sink
        job.link = self.links.get(job.resource, job.webshop_id)
        parts = sink.hash_parts(job)
        content_hash = composite_hash(parts)
        if job.link is not None:
            job.chargebee_id = job.link.chargebee_id
            if self._is_echo(job):
                # Chargebee already holds this content: it came from there.
                if not self.dry_run:
                    self.save_link(job, content_hash)
                self._outcome(job, "unchanged")
                self.exists(job)
                return
            old = split_hash(job.link.chargebee_hash)
            if job.link.chargebee_hash == content_hash or (job.deleted and old.get("deleted")):
                self._outcome(job, "unchanged")
                if not (job.deleted and sink.delete_removes):
                    self.exists(job)
                return
            changed = {name for name, value in parts.items() if old.get(name) != value}
            if job.deleted:
                if not self.dry_run:
                    self.delete_guard.allow(job.resource)
                outcome = sink.remove(job)
            elif old.get("deleted"):
                outcome = sink.restore(job)
            else:
                try:
                    outcome = sink.update(job, changed)
                except ApiError as error:
                    if error.status != 404 or error.param:
                        raise
                    # The linked record is gone from Chargebee (deleted by hand): make it again.
                    self.logger.warning(
                        "%s %s is linked to %s, which Chargebee no longer has: creating it again",
                        job.stream,
                        job.webshop_id,
                        job.chargebee_id,
                    )
                    job.link, job.chargebee_id, job.recreated = None, job.det_id, True
                    outcome = sink.create(job)
        else:
            job.chargebee_id = job.det_id
            if job.deleted and not sink.create_deleted:
                self._outcome(job, "skipped", plan="unchanged")
                return
            outcome = sink.create(job)
        if not self.dry_run:
            self.save_link(job, content_hash)
        self._outcome(job, outcome)
        if not (job.deleted and sink.delete_removes):
            self.exists(job)

    @staticmethod
    def _is_echo(job: Job) -> bool:
        """The webshop record is the version target-customwebshop wrote from Chargebee (it
        alone sets the webshop hash, and stores the version its write produced)."""
        link = job.link
        return (
            link is not None
            and link.webshop_hash is not None
            and job.webshop_version is not None
            and link.webshop_version == job.webshop_version
        )

    def save_link(self, job: Job, content_hash: str) -> None:
        self.links.save(
            job.resource,
            job.webshop_id,
            job.chargebee_id,
            chargebee_hash=content_hash,
            chargebee_version=job.version,
            webshop_version=job.webshop_version,
            deterministic_id=job.det_id,
        )

    def _outcome(self, job: Job, outcome: str, plan: str | None = None) -> None:
        if self.dry_run:
            category = plan or {
                "created": "new",
                "updated": "update",
                "deleted": "delete",
                "skipped": "unchanged",
            }.get(outcome, outcome)
            self.report.planned(job.stream, category)
        else:
            self.report.count(job.stream, outcome)

    # ---------------------------------------------------------------- rejections

    def reject(self, job: Job, reason: str, **details: Any) -> None:
        ref = (job.resource, job.det_id)
        self.rejected_refs[ref] = reason
        if self.dry_run:
            category = "ambiguous" if "candidates" in details else "refused"
            self.report.planned(job.stream, category)
            if "candidates" in details:
                self.report.ambiguous.append(
                    {"stream": job.stream, "webshop_id": job.webshop_id, **details}
                )
            return
        self.logger.warning(
            "Rejected %s %s (%s): %s", job.stream, job.webshop_id, job.chargebee_id, reason
        )
        self.links.dead_letter(
            job.stream,
            job.webshop_id,
            reason,
            chargebee_id=job.chargebee_id or job.det_id,
            details={k: v for k, v in details.items() if v is not None},
            record=job.record,
        )
        if "candidates" in details:
            self.report.ambiguous.append(
                {"stream": job.stream, "webshop_id": job.webshop_id, **details}
            )
        self.report.rejected(
            job.stream,
            job.webshop_id,
            job.chargebee_id or job.det_id,
            reason,
            **{k: v for k, v in details.items() if v is not None},
        )

    def _dead_letter_raw(self, sink: ResourceSink, record: dict, reason: str, **details) -> None:
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        det_id = str(record.get("id") or "")
        self.rejected_refs[(sink.resource, det_id)] = reason
        if self.dry_run:
            self.report.planned(sink.stream_name, "refused")
            return
        self.logger.warning("Rejected %s %s (%s): %s", sink.stream_name, webshop_id, det_id, reason)
        self.links.dead_letter(
            sink.stream_name,
            webshop_id,
            reason,
            chargebee_id=det_id,
            details=details,
            record=record,
        )
        self.report.rejected(sink.stream_name, webshop_id, det_id or None, reason, **details)

    # ---------------------------------------------------------------- API helpers for sinks

    def retrieve(self, resource: str, chargebee_id: str) -> dict | None:
        """GET /{resource}/{id}: the object, or None if Chargebee does not have it."""
        from target_chargebee.sinks import OBJECT_NAMES

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
        from target_chargebee.sinks import OBJECT_NAMES

        answer = self.api.get(f"/{resource}", {"limit": 100, **filters})
        name = OBJECT_NAMES[resource]
        return [entry[name] for entry in answer.get("list", []) if name in entry]

    def write(
        self,
        job: Job,
        operation: str,
        path: str,
        params: Params,
        *,
        clear: frozenset[str] | set[str] = frozenset(),
        object_name: str | None = None,
    ) -> dict:
        """POST one write with an idempotency key; returns the object from the answer (in a dry
        run, nothing is sent and the params are returned)."""
        body = encode(params, clear=clear)
        if self.dry_run:
            return dict(body)
        previous = job.link.chargebee_hash if job.link else ("again" if job.recreated else None)
        key = idempotency_key(job.resource, operation, job.chargebee_id, path, body, previous)
        answer = self.api.post(path, body, idempotency_key=key)
        self.writes[f"{job.resource}.{operation}"] += 1
        obj = answer.get(object_name or job.sink.object_name) or {}
        if object_name is None and "resource_version" in obj:
            job.version = obj["resource_version"]
        return obj

    def ensure_item_family(self, family_id: str) -> None:
        """Create the item family the items go in, if Chargebee does not have it."""
        if self.retrieve("item_families", family_id) is not None:
            return
        if self.dry_run:
            self.report.notes.append(f"item family {family_id} would be created")
            return
        key = idempotency_key("item_families", "create", family_id)
        try:
            self.api.post(
                "/item_families", {"id": family_id, "name": family_id}, idempotency_key=key
            )
        except ApiError as error:
            if error.code != "duplicate_entry":
                raise
        self.writes["item_families.create"] += 1
        self.report.notes.append(f"item family {family_id} created")

    def api_calls(self) -> dict[str, Any]:
        return {**self.api.calls(), "writes_by_operation": dict(sorted(self.writes.items()))}

    def close(self) -> None:
        self.links.close()
        self.api.close()

    def once_per_run(self, name: str) -> bool:
        """True the first time it is asked for `name` in this run."""
        if name in self.once:
            return False
        self.once.add(name)
        return True
