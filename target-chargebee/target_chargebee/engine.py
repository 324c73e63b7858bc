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

Concurrency: up to `max_concurrency` records are upserted at once, in worker threads, so that
network latency does not cap throughput below the request budget. All engine state is guarded
by one lock that a worker lets go only while it waits for an API answer. A record never runs
while its parent or an earlier version of itself is still running; it waits as for a missing
parent and goes when that one is done.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sync_common.chargebee import ChargebeeClient
from sync_common.guard import DeleteGuard
from sync_common.http import ApiError
from sync_common.links import superseded
from sync_common.matching import ambiguous_letter
from sync_common.merge import SOURCE_RECORD, conflict_entry, merge_fields, same
from sync_common.report import RunReport
from target_chargebee.params import (
    Params,
    as_fields,
    composite_hash,
    differences,
    encode,
    from_fields,
    held,
    idempotency_key,
    remote_value,
    split_hash,
    to_params,
    to_remote,
    wire_value,
)
from target_chargebee.store import Link, Links

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sync_common.matching import CandidateIndex
    from target_chargebee.sinks import ResourceSink

Ref = tuple[str, str]  # (resource, deterministic Chargebee id)
UPDATED = "updated"

#: Parents kept in memory, the most recently used: an older one is found again in the link
#: store (one indexed read), so memory stays flat however many records a run brings.
KNOWN_PARENTS = int(os.environ.get("SYNC_KNOWN_PARENTS") or 20_000)


class Rejected(Exception):  # noqa: N818 (a decision, not a failure)
    """Raised by sink code to dead-letter the current record with a reason."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class Ambiguous(Exception):  # noqa: N818 (a decision, not a failure)
    """Raised by sink code when a record with no link matches several Chargebee records, or
    one that another record has (sync_common.matching): it is neither linked nor created, but
    counted as skipped, listed in the report's `ambiguous_matches` (`entry`) and kept for the
    next run (`Engine.skip_ambiguous`) until a person resolves it."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry["reason"])
        self.entry = entry


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
    provisional_hash: str | None = None  # saved until a deferred write (archive_later) is done
    remote: dict | None = None  # the Chargebee record as read (dry run: the "old" values)
    changes: dict[str, list] = field(default_factory=dict)  # dry run: field -> [old, new]
    #: Chargebee holds a value the webshop does not have yet (an edit made there, or a
    #: conflict it won): its new version is left for the way back to carry over
    pending: bool = False
    base: dict[str, Any] | None = None  # the webshop's fields as merged: the next base

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
        self.report = RunReport(
            "target-chargebee", run_id=links.run_id, dry_run=self.dry_run, logger=logger
        )
        self.delete_guard = DeleteGuard(links, settings.get("max_delete_percent"))
        # parents that exist in Chargebee (or will, in a plan), recently used last
        self.known: OrderedDict[Ref, str] = OrderedDict()
        self.found: dict[Ref, str] = {}  # parents only Chargebee has (no link): never evicted
        self.absent: set[Ref] = set()  # parents looked up this run and not found
        self.rejected_refs: dict[Ref, str] = {}  # parents refused this run, with the reason
        self.waiting: dict[Ref, list[tuple[ResourceSink, dict]]] = defaultdict(list)
        self.blocked: Counter[Ref] = Counter()  # records with a job waiting (no entry at 0)
        self.once: set[str] = set()  # per-run one-time preparations (the item family)
        self.indexes: dict[str, CandidateIndex] = {}  # first contact: key -> Chargebee ids
        self.indexing: set[str] = set()  # indexes being read (by one worker; others wait)
        self.claimed: dict[Ref, str] = {}  # Chargebee records matched or created: webshop id
        self.writes: Counter[str] = Counter()  # write calls by resource and operation
        self.unverified: set[Ref] = set()  # missing parents not yet looked up in Chargebee
        self.to_archive: list[tuple[Job, str]] = []  # archive_later: (job, path)
        self.lock = threading.Lock()  # all of the above; let go while an API call waits
        self.changed = threading.Condition(self.lock)  # a job finished
        self.running: Counter[Ref] = Counter()  # records queued or upserting in a worker
        self.failure: BaseException | None = None  # a worker's error, raised in the reader
        workers = max(1, int(settings.get("max_concurrency") or 1))
        self.max_queued = 2 * workers  # the reader waits beyond this: memory stays flat
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="upsert")
        #: the webshop record the maps are translating now (the target sets it)
        self.source_record: dict[str, Any] | None = None
        #: the tap stream a target stream comes from, for its dead letters (the target's maps)
        self.source_stream_of: Callable[[str], str] = lambda stream: stream

    # ---------------------------------------------------------------- entry points

    @property
    def pending(self) -> int:
        """Records received and not yet written or refused."""
        with self.lock:
            return sum(len(jobs) for jobs in self.waiting.values()) + sum(self.running.values())

    def submit(self, sink: ResourceSink, record: dict[str, Any]) -> None:
        """One record from the stream maps (the reader's thread)."""
        with self.lock:
            self._raise_failure()
            while sum(self.running.values()) >= self.max_queued:
                self.changed.wait()
                self._raise_failure()
            self._submit(sink, record)

    def skip_unsubmitted(self, sink: ResourceSink, record: dict[str, Any], entry: dict) -> None:
        """A record first-contact matching held back and found ambiguous (the reader's
        thread): counted as received and skipped, never written."""
        with self.lock:
            self.report.received(sink.stream_name)
            self.skip_ambiguous(sink, record, entry, chargebee_id=str(record.get("id") or ""))

    def reject_unmappable(self, sink: ResourceSink, record: dict[str, Any], reason: str) -> None:
        """A record the stream map could not translate (the reader's thread): dead-lettered."""
        with self.lock:
            self.report.received(sink.stream_name)
            self._dead_letter_raw(sink, record, reason)

    def verify(self) -> None:
        """After the maps of one source record ran: parents still missing are looked up in
        Chargebee now. Not before, because the same source record often brings them (an
        order's invoice comes from the same webshop order, after it). And new items that
        are to be archived are archived now, after their prices."""
        with self.lock:
            refs, self.unverified = self.unverified, set()
            for ref in refs:
                if ref in self.waiting and not self.running[ref] and self._lookup(ref):
                    self._release(ref)
            if self.to_archive:
                self._archive_deferred()

    def archive_later(self, job: Job, path: str) -> None:
        """Archive a new item once the rest of its source record (its prices) is written:
        Chargebee adds no price to an archived item. Until then its link holds the hash of
        the active item, so a run that stops in between archives it the next time."""
        active = replace(job, params={**job.params, "status": "active"})
        job.provisional_hash = composite_hash(job.sink.hash_parts(active))
        self.to_archive.append((job, path))

    def _archive_deferred(self) -> None:
        while sum(self.running.values()):  # the prices of these items
            self.changed.wait()
        self._raise_failure()
        jobs, self.to_archive = self.to_archive, []
        for job, path in jobs:
            try:
                self.write(job, "archive", path, {"status": "archived"})
            except ApiError as error:
                if not error.is_refusal:
                    raise
                self.reject(job, error.reason, api_error_code=error.code, param=error.param)
                continue
            if not self.dry_run:
                job.provisional_hash = None
                self.save_link(job, composite_hash(job.sink.hash_parts(job)))

    def settle(self) -> None:
        """Wait until no record is upserting (before state is taken, at the end)."""
        with self.lock:
            while sum(self.running.values()):
                self.changed.wait()
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _submit(self, sink: ResourceSink, record: dict[str, Any], *, retry: bool = False) -> None:
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
        if self.running[own]:  # an earlier version of this record is being written
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
        self.running[own] += 1
        self.pool.submit(self._work, job)

    def _work(self, job: Job) -> None:
        """A worker's part: the upsert, then what waited for this record."""
        own = (job.resource, job.det_id)
        with self.lock:
            try:
                if self.failure is None:
                    self._run(job)
            except BaseException as error:  # noqa: BLE001 (handed to the reader's thread)
                self.failure = error
            finally:
                self.running[own] -= 1
                if not self.running[own]:
                    del self.running[own]
                self.changed.notify_all()
            if self.failure is None and own in self.waiting:
                # its children, and later versions of it that queued behind it
                try:
                    self._release(own)
                except BaseException as error:  # noqa: BLE001
                    self.failure = error

    def finish(self) -> None:
        """End of input: retry what waits for a parent; dead-letter what still cannot go."""
        self.settle()
        with self.lock:
            if self.to_archive:
                self._archive_deferred()
            self._finish()

    def _finish(self) -> None:
        progress = True
        while self.waiting and progress:
            progress = False
            for ref in list(self.waiting):
                if ref not in self.waiting or self.running[ref]:
                    continue
                self.absent.discard(ref)
                if self._lookup(ref) is not None:
                    progress = True
                    self._release(ref)
            while sum(self.running.values()):  # what was released, and what it released
                self.changed.wait()
                progress = True
            self._raise_failure()
        for ref, jobs in list(self.waiting.items()):
            del self.waiting[ref]
            resource, det_id = ref
            reason = f"its parent {resource} {det_id} does not exist in Chargebee"
            if ref in self.rejected_refs:
                reason += f" (the parent was rejected: {self.rejected_refs[ref]})"
            for sink, record in jobs:
                self._unblock((sink.resource, str(record.get("id"))))
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
            ref = (resource, det)
            actual = None if self.running[ref] else self._lookup(ref, remote=False)
            if actual is None:
                if not self.running[ref] and ref not in self.absent:
                    self.unverified.add(ref)  # looked up in Chargebee by verify()
                return params, ref
            resolved[key] = actual
        return resolved, None

    def _lookup(self, ref: Ref, *, remote: bool = True) -> str | None:
        """The Chargebee id of a parent given by its deterministic id, or None if absent
        (with remote=False: if neither this run nor the link store knows it)."""
        if ref in self.known:
            self.known.move_to_end(ref)
            return self.known[ref]
        if ref in self.found:
            return self.found[ref]
        if ref in self.absent:
            return None
        resource, det_id = ref
        actual = self.links.resolve(resource, det_id)
        if actual is None and not remote:
            return None
        if actual is None:
            if self.retrieve(resource, det_id) is None:
                self.absent.add(ref)
                return None
            self.found[ref] = det_id  # no link finds it again: evicted, it would cost a GET
            return det_id
        self._know(ref, actual)
        return actual

    def _know(self, ref: Ref, chargebee_id: str) -> None:
        self.known[ref] = chargebee_id
        self.known.move_to_end(ref)
        # A dry run saves no links: what it plans to create is known only here.
        if len(self.known) > KNOWN_PARENTS and not self.dry_run:
            self.known.popitem(last=False)

    def _wait(self, sink: ResourceSink, record: dict, parent: Ref, own: Ref) -> None:
        if not self.blocked[own] or parent != own:
            self.report.deferred[sink.stream_name] += 1
        self.waiting[parent].append((sink, record))
        self.blocked[own] += 1

    def _release(self, ref: Ref) -> None:
        """A parent now exists: run what waited for it, in arrival order."""
        jobs = self.waiting.pop(ref, [])
        for sink, record in jobs:
            self._unblock((sink.resource, str(record.get("id"))))
            self._submit(sink, record, retry=True)

    def _unblock(self, own: Ref) -> None:
        self.blocked[own] -= 1
        if not self.blocked[own]:
            del self.blocked[own]  # one entry per record otherwise: memory would grow

    def exists(self, job: Job, chargebee_id: str | None = None) -> None:
        """Record that the job's record exists in Chargebee; its waiting children go when its
        job is done (`_work`)."""
        ref = (job.resource, job.det_id)
        self._know(ref, chargebee_id or job.chargebee_id or job.det_id)
        self.found.pop(ref, None)
        self.absent.discard(ref)

    # ---------------------------------------------------------------- the upsert

    def _run(self, job: Job) -> None:
        try:
            self._upsert(job)
        except Rejected as refusal:
            self.reject(job, refusal.reason, **refusal.details)
        except Ambiguous as ambiguous:
            self.skip_ambiguous(job.sink, job.record, ambiguous.entry, chargebee_id=job.det_id)
        except ApiError as error:
            if not error.is_refusal:
                raise
            self.reject(job, error.reason, api_error_code=error.code, param=error.param)

    def _upsert(self, job: Job) -> None:
        sink = job.sink
        job.link = self.links.get(job.resource, job.webshop_id)
        parts = sink.hash_parts(job)
        content_hash = composite_hash(parts)
        if job.link is not None:
            job.chargebee_id = job.link.chargebee_id
            old = split_hash(job.link.chargebee_hash)
            if self._accounted_for(job, content_hash, old):
                self._outcome(job, "unchanged")
                if not (job.deleted and sink.delete_removes):
                    self.exists(job)
                return
            changed = {name for name, value in parts.items() if old.get(name) != value}
            if job.deleted:
                self.delete_guard.allow(job.resource)  # a dry run stops where the run would
                outcome = sink.remove(job)
            elif old.get("deleted"):
                outcome = sink.restore(job)
            elif not sink.merges:
                outcome = sink.update(job, changed)
            else:
                remote = self.retrieve(job.resource, job.chargebee_id)
                if remote is not None:
                    outcome = UPDATED if self.merge_remote(job, remote) else "unchanged"
                else:
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
                self._outcome(job, "skipped")
                return
            outcome = sink.create(job)
        if not self.dry_run:
            self.save_link(job, job.provisional_hash or content_hash)
        self._outcome(job, outcome)
        if not (job.deleted and sink.delete_removes):
            self.exists(job)

    def _accounted_for(self, job: Job, content_hash: str, old: dict[str, str]) -> bool:
        """Nothing of this webshop version is missing in Chargebee, known without a call: the
        sync wrote or saw this very version (e.g. target-customwebshop wrote it from
        Chargebee), or no mapped field differs from the base."""
        link = job.link
        assert link is not None
        if superseded(job.webshop_version, link.webshop_version):
            return True  # read before an overlapping run's newer write: that run merged it
        source = job.sink.merged(job)
        fields = as_fields(source)
        if link.webshop_version is not None and job.webshop_version == link.webshop_version:
            base = link.chargebee_base and as_fields(held(link.chargebee_base, source))
            if not self.dry_run and base != fields:  # both held it: the next base
                self.links.save(job.resource, job.webshop_id, job.chargebee_id,
                                chargebee_base=to_remote(source), deterministic_id=job.det_id,
                                webshop_base=job.record.get(SOURCE_RECORD))  # fmt: skip
            return True
        if job.deleted != bool(old.get("deleted")):
            return False
        if job.deleted:
            return True  # deleted before, and still
        if link.chargebee_base is None or not job.sink.merges:  # a link made before bases
            unchanged = link.chargebee_hash == content_hash
        else:
            base = as_fields(held(link.chargebee_base, source))
            unchanged = all(same(value, base[name]) for name, value in fields.items())
        if unchanged and not self.dry_run:
            self.links.save(job.resource, job.webshop_id, job.chargebee_id,
                            webshop_version=job.webshop_version, deterministic_id=job.det_id,
                            chargebee_base=to_remote(source),
                            webshop_base=job.record.get(SOURCE_RECORD))  # fmt: skip
        return unchanged

    def merge_remote(self, job: Job, remote: dict) -> bool:
        """Merge the webshop's record into Chargebee's (`remote`, read now) field by field
        (sync_common.merge) and write what it decides; True when something was written.
        Without a link's base (a record matched on first contact) every field that differs
        is decided by `conflict_policy`; a record under the derived id is the sync's own, and
        the webshop's values stand."""
        sink = job.sink
        source = sink.merged(job)
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
            self.report.conflicts.append(
                conflict_entry(job.stream, job.webshop_id, job.chargebee_id, policy, merge)
            )
        job.remote, job.version = remote, remote.get("resource_version")
        job.pending, job.base = bool(merge.pending), to_remote(source)
        if not merge.to_target:
            return False
        before = sink.hash_parts(replace(job, params={**job.params, **theirs}))
        job.params = {**job.params, **from_fields(merge.values)}
        after = sink.hash_parts(job)
        sink.update(job, {name for name, value in after.items() if before.get(name) != value})
        return True

    def save_link(self, job: Job, content_hash: str) -> None:
        # until a deferred archival is done, the link holds the active item: a run that
        # stops in between finds it differs from the webshop's and archives it next time
        provisional = job.provisional_hash is not None
        basis = job
        if provisional:
            basis = replace(job, params={**job.params, "status": "active"}, deleted=False)
        self.links.save(
            job.resource,
            job.webshop_id,
            job.chargebee_id,
            chargebee_hash=content_hash,
            # Chargebee's own edits still go to the webshop: its version is not done yet
            chargebee_version=None if job.pending else job.version,
            chargebee_base=(job.base or to_remote(job.sink.merged(basis)))
            if job.sink.merges
            else None,
            webshop_base=job.record.get(SOURCE_RECORD),
            webshop_version=None if provisional else job.webshop_version,
            deterministic_id=job.det_id,
        )

    def _outcome(self, job: Job, outcome: str) -> None:
        # written, in sync, or deleted before it reached Chargebee: its dead letter is done
        if not self.dry_run and (
            self.links.resolve_dead_letter("webshop", job.stream, job.webshop_id)
        ):
            self.report.dead_letter_resolved()
        self.report.count(job.stream, outcome)
        self.report.change(
            job.stream,
            outcome,
            webshop_id=job.webshop_id,
            chargebee_id=job.chargebee_id,
            fields=job.changes,
        )

    # ---------------------------------------------------------------- rejections

    def reject(self, job: Job, reason: str, **details: Any) -> None:
        ref = (job.resource, job.det_id)
        self.rejected_refs[ref] = reason
        if not self.dry_run:
            self.logger.warning(
                "Rejected %s %s (%s): %s", job.stream, job.webshop_id, job.chargebee_id, reason
            )
            letter = self.links.dead_letter(
                job.stream,
                job.webshop_id,
                reason,
                source_stream=self.source_stream_of(job.stream),
                chargebee_id=job.chargebee_id or job.det_id,
                details={k: v for k, v in details.items() if v is not None},
                record=job.record,
            )
            self.report.dead_lettered(letter.attempts)
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

    def skip_ambiguous(
        self, sink: ResourceSink, record: dict, entry: dict[str, Any], *, chargebee_id: str
    ) -> None:
        """A record matching is unsure about: not written; skipped with the reason, listed in
        `ambiguous_matches` and kept as an open dead letter, not counted as one
        (sync_common.matching.ambiguous_letter). Its children wait for it and are refused."""
        self.rejected_refs[(sink.resource, chargebee_id)] = entry["reason"]
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        self.logger.warning("Skipped %s %s: %s", sink.stream_name, webshop_id, entry["reason"])
        self.report.ambiguous.append(entry)
        if not self.dry_run:
            reason, details = ambiguous_letter(entry)
            self.links.dead_letter(
                sink.stream_name,
                webshop_id,
                reason,
                source_stream=self.source_stream_of(sink.stream_name),
                chargebee_id=None,
                details=details,
                record=record,
            )
        self.report.count(sink.stream_name, "skipped")
        self.report.change(
            sink.stream_name, "skipped", webshop_id=webshop_id, chargebee_id=chargebee_id
        )

    def _dead_letter_raw(self, sink: ResourceSink, record: dict, reason: str, **details) -> None:
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        det_id = str(record.get("id") or "")
        self.rejected_refs[(sink.resource, det_id)] = reason
        if not self.dry_run:
            self.logger.warning(
                "Rejected %s %s (%s): %s", sink.stream_name, webshop_id, det_id, reason
            )
            letter = self.links.dead_letter(
                sink.stream_name,
                webshop_id,
                reason,
                source_stream=self.source_stream_of(sink.stream_name),
                chargebee_id=det_id,
                details=details,
                record=record,
            )
            self.report.dead_lettered(letter.attempts)
        self.report.rejected(sink.stream_name, webshop_id, det_id or None, reason, **details)

    # ---------------------------------------------------------------- API helpers for sinks

    def _unlocked(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """An API call with the engine lock let go, so other records' calls overlap with it."""
        self.lock.release()
        try:
            return call(*args, **kwargs)
        finally:
            self.lock.acquire()

    def retrieve(self, resource: str, chargebee_id: str, *, unlock: bool = True) -> dict | None:
        """GET /{resource}/{id}: the object, or None if Chargebee does not have it."""
        from target_chargebee.sinks import OBJECT_NAMES

        try:
            call = self._unlocked if unlock else lambda get, *a: get(*a)
            answer = call(self.api.get, f"/{resource}/{chargebee_id}")
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

        answer = self._unlocked(self.api.get, f"/{resource}", {"limit": 100, **filters})
        name = OBJECT_NAMES[resource]
        return [entry[name] for entry in answer.get("list", []) if name in entry]

    def list_all(self, resource: str, **filters: Any) -> Iterator[dict]:
        """Every record of a list, page by page (100 each, `offset` = the last `next_offset`),
        the lock let go during each call."""
        from target_chargebee.sinks import OBJECT_NAMES

        name, offset = OBJECT_NAMES[resource], None
        while True:
            params = {"limit": 100, **filters, **({"offset": offset} if offset else {})}
            answer = self._unlocked(self.api.get, f"/{resource}", params)
            yield from (entry[name] for entry in answer.get("list", []) if name in entry)
            offset = answer.get("next_offset")
            if not offset:
                return

    def index(self, name: str, load: Callable[[], CandidateIndex]) -> CandidateIndex:
        """The first-contact index `name`, read once per run by the first record that needs
        it (`load` pages through Chargebee with the lock let go); records that need it
        meanwhile wait for that one."""
        while name not in self.indexes and name in self.indexing:
            self.changed.wait()
        if name in self.indexes:
            return self.indexes[name]
        self.indexing.add(name)
        try:
            self.indexes[name] = index = load()
        finally:
            self.indexing.discard(name)
            self.changed.notify_all()
        return index

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
            self._plan_write(job, operation, {key: params[key] for key in body})  # what is sent
            return dict(body)
        previous = job.link.chargebee_hash if job.link else ("again" if job.recreated else None)
        # the version the write was decided against: the same body after an edit made in
        # Chargebee (A, then B there, then A again) is a new write, not a replay of the first
        read = (job.remote or {}).get("resource_version")
        key = idempotency_key(job.resource, operation, job.chargebee_id, path, body, previous, read)
        answer = self._unlocked(self.api.post, path, body, idempotency_key=key)
        self.writes[f"{job.resource}.{operation}"] += 1
        obj = answer.get(object_name or job.sink.object_name) or {}
        if object_name is None and "resource_version" in obj:
            job.version = obj["resource_version"]
        return obj

    def _plan_write(self, job: Job, operation: str, params: Params) -> None:
        """Dry run: note the fields a write to an existing record would change, old -> new,
        read from Chargebee's current record (a create changes no existing field)."""
        if operation in ("create", "delete") or job.chargebee_id == "":
            return
        if job.remote is None:
            job.remote = self.retrieve(job.resource, job.chargebee_id) or {}
        if operation == "transfer":
            old = job.remote.get("business_entity_id")
            new = params.get("destination_business_entity_ids[0]")
            job.changes["business_entity_id"] = [old, new]
            return
        for key in differences(params, job.remote):
            job.changes[key] = [wire_value(remote_value(job.remote, key)), params[key]]

    def ensure_item_family(self, family_id: str) -> None:
        """Create the item family the items go in, if Chargebee does not have it. The lock is
        kept throughout: no other item may be created before its family exists."""
        if self.retrieve("item_families", family_id, unlock=False) is not None:
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
        self.pool.shutdown()
        self.links.close()
        self.api.close()

    def once_per_run(self, name: str) -> bool:
        """True the first time it is asked for `name` in this run."""
        if name in self.once:
            return False
        self.once.add(name)
        return True
