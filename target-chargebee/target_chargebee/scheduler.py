"""The scheduler: which record's upsert runs when, in which thread. The only owner of the
lock, and of what it guards: the records waiting for a parent, the records running, the
parents known to exist, the report's counts.

1. The references to parents (an invoice's `customer_id`, its lines' item prices, an order's
   `invoice_id`, a price's `item_id`) are deterministic Chargebee ids computed by the maps. Each
   is resolved to the id the parent really has in Chargebee (the same id, or the id of a record
   it was matched to). A parent that is not in Chargebee yet makes the record wait; it is
   retried as soon as the parent is written, and at the end of the run; a record whose parent
   never appears is dead-lettered with that reason.
2. A record whose parents exist becomes a `Job`; a worker thread hands it to the upsert
   decisions (upsert.py) without the lock, and counts the outcome under it.

Up to `max_concurrency` records are upserted at once, so that network latency does not cap
throughput below the request budget. A record never runs while its parent or an earlier
version of itself is still running; it waits as for a missing parent and goes when that one
is done.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sync_common.report import RunReport
from target_chargebee.gateway import Gateway
from target_chargebee.jobs import REJECTED, Attempt, Job, Outcome, Ref
from target_chargebee.params import Params, to_params
from target_chargebee.resources import AnyLinks
from target_chargebee.upsert import Decisions

T = TypeVar("T")

#: Parents kept in memory, the most recently used: an older one is found again in the link
#: store (one indexed read), so memory stays flat however many records a run brings. (With
#: 20,000, bench/volume.py's target-chargebee peaked at 104 MB at 100,000 records, 100 MB
#: with 10,000: a 10,000-record first sync has about 11,000 parents.)
KNOWN_PARENTS = 10_000
#: New items to archive that wait for a batch: archiving waits until no record is being
#: written (their prices among them), so one at a time stalled every write in flight once
#: per inactive product. Before a state message and at the end the rest go too.
ARCHIVE_BATCH = 100


class Scheduler:
    def __init__(
        self,
        *,
        decisions: Decisions,
        gateway: Gateway,
        links: AnyLinks,
        report: RunReport,
        max_concurrency: int,
    ) -> None:
        self.decisions = decisions
        self.gateway = gateway
        self.links = links
        self.report = report
        # parents that exist in Chargebee (or will, in a plan), recently used last
        self.known: OrderedDict[Ref, str] = OrderedDict()
        # read per run, not at import: tests lower it to reach the link store
        self.known_parents = int(os.environ.get("SYNC_KNOWN_PARENTS") or KNOWN_PARENTS)
        self.archive_batch = int(os.environ.get("SYNC_ARCHIVE_BATCH") or ARCHIVE_BATCH)
        self.found: dict[Ref, str] = {}  # parents only Chargebee has (no link): never evicted
        self.absent: set[Ref] = set()  # parents looked up this run and not found
        self.rejected_refs: dict[Ref, str] = {}  # parents refused this run, with the reason
        self.waiting: dict[Ref, list[tuple[str, dict]]] = defaultdict(list)  # (resource, record)
        self.blocked: Counter[Ref] = Counter()  # records with a job waiting (no entry at 0)
        self.unverified: set[Ref] = set()  # missing parents not yet looked up in Chargebee
        self.to_archive: list[Attempt] = []  # new items archived after their prices
        self.lock = threading.Lock()  # all of the above; never held during an API call
        self.changed = threading.Condition(self.lock)  # a job finished
        self.running: Counter[Ref] = Counter()  # records queued or upserting in a worker
        self.failure: BaseException | None = None  # a worker's error, raised in the reader
        workers = max(1, max_concurrency)
        self.max_queued = 2 * workers  # the reader waits beyond this: memory stays flat
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="upsert")

    # ---------------------------------------------------------------- entry points

    @property
    def pending(self) -> int:
        """Records received and not yet written or refused."""
        with self.lock:
            return sum(len(jobs) for jobs in self.waiting.values()) + sum(self.running.values())

    @property
    def has_unfinished_checks(self) -> bool:
        """Missing parents to look up, or a batch of new items to archive (`verify` does
        both)."""
        return bool(self.unverified) or len(self.to_archive) >= self.archive_batch

    def submit(self, resource: str, record: dict[str, Any]) -> None:
        """One record from the stream maps (the reader's thread)."""
        with self.lock:
            self._raise_failure()
            while sum(self.running.values()) >= self.max_queued:
                self.changed.wait()
                self._raise_failure()
            self._submit(resource, record)

    def skip_unsubmitted(self, resource: str, record: dict[str, Any], entry: dict) -> None:
        """A record first-contact matching held back and found ambiguous (the reader's
        thread): counted as received and skipped, never written."""
        chargebee_id = str(record.get("id") or "")
        outcome = self.decisions.skip_ambiguous(resource, record, entry, chargebee_id=chargebee_id)
        with self.lock:
            self.report.received(resource)
            self._count(outcome)

    def reject_unmappable(self, resource: str, record: dict[str, Any], reason: str) -> None:
        """A record the stream map could not translate (the reader's thread): dead-lettered."""
        outcome = self.decisions.refuse_record(resource, record, reason)
        with self.lock:
            self.report.received(resource)
            self._count(outcome)

    def verify(self) -> None:
        """After the maps of one source record ran: parents still missing are looked up in
        Chargebee now. Not before, because the same source record often brings them (an
        order's invoice comes from the same webshop order, after it). And new items that
        are to be archived are archived, after their prices, once a batch of them waits."""
        with self.lock:
            refs, self.unverified = self.unverified, set()
            for ref in refs:
                pending = self.running[ref] or self.blocked[ref]  # this run writes it
                if ref in self.waiting and not pending and self._lookup(ref):
                    self._release(ref)
            if len(self.to_archive) >= self.archive_batch:
                self._archive_deferred()

    def settle(self) -> None:
        """Wait until no record is upserting, and archive the new items that wait for it
        (before state is taken: a bookmark past a product means its item is as it says)."""
        with self.lock:
            self._drain()
            if self.to_archive:
                self._archive_deferred()
                self._drain()

    def finish(self) -> None:
        """End of input: retry what waits for a parent; dead-letter what still cannot go."""
        self.settle()
        with self.lock:
            self._finish()
            if self.to_archive:  # items released by the retries above
                self._archive_deferred()
                self._drain()

    def close(self) -> None:
        self.pool.shutdown()

    # ---------------------------------------------------------------- jobs

    def _drain(self) -> None:
        """Wait until no record is upserting (under the lock)."""
        while sum(self.running.values()):
            self.changed.wait()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _submit(self, resource: str, record: dict[str, Any], *, retry: bool = False) -> None:
        if not retry:
            self.report.received(resource)
        det_id = str(record.get("id") or "")
        if not det_id:
            reason = "the record has no `id` (check the stream map)"
            self._count(self.decisions.refuse_record(resource, record, reason))
            return
        own: Ref = (resource, det_id)
        if not retry and self.blocked[own]:
            # An earlier version of this record waits for a parent: keep the order.
            self._wait(resource, record, own, own)
            return
        if self.running[own]:  # an earlier version of this record is being written
            self._wait(resource, record, own, own)
            return
        params = to_params(record)
        resolved, missing = self._resolve_references(resource, params, ask_store=retry)
        if missing is not None:
            self._wait(resource, record, missing, own)
            return
        job = Job(
            resource=resource,
            record=record,
            webshop_id=str(record.get("webshop_id") or det_id),
            webshop_version=record.get("webshop_version"),
            deleted=bool(record.get("deleted")),
            det_id=det_id,
            params=resolved,
        )
        self._start(own, partial(self.decisions.decide, job))

    def _start(self, ref: Ref, decide: Callable[[], Outcome | None]) -> None:
        """Hand a decision about record `ref` to a worker (under the lock): until it is done,
        the record's children and later versions wait."""
        self.running[ref] += 1
        self.pool.submit(self._work, ref, decide)

    def _work(self, ref: Ref, decide: Callable[[], Outcome | None]) -> None:
        """A worker's part: the decision (without the lock), its outcome counted, then what
        waited for this record."""
        outcome = None
        error: BaseException | None = None
        if self.failure is None:
            try:
                outcome = decide()
            except BaseException as failure:  # noqa: BLE001 (handed to the reader's thread)
                error = failure
        with self.lock:
            try:
                if error is not None:
                    self.failure = error
                elif outcome is not None and self.failure is None:
                    self._count(outcome)
            finally:
                self.running[ref] -= 1
                if not self.running[ref]:
                    del self.running[ref]
                self.changed.notify_all()
            if self.failure is None and ref in self.waiting:
                # its children, and later versions of it that queued behind it
                try:
                    self._release(ref)
                except BaseException as failure:  # noqa: BLE001
                    self.failure = failure

    def _count(self, outcome: Outcome) -> None:
        """The outcome in the report and in what the scheduler knows (under the lock)."""
        report = self.report
        report.notes.extend(outcome.notes)
        report.conflicts.extend(outcome.conflicts)
        stream = outcome.stream
        if outcome.kind == REJECTED:
            self.rejected_refs[outcome.ref] = outcome.reason
            if outcome.dead_letter_attempts is not None:
                report.dead_lettered(outcome.dead_letter_attempts)
            if "candidates" in outcome.details:
                report.ambiguous.append(
                    {"stream": stream, "webshop_id": outcome.webshop_id, **outcome.details}
                )
            report.rejected(
                stream, outcome.webshop_id, outcome.chargebee_id, outcome.reason,
                **outcome.details,
            )  # fmt: skip
            return
        if outcome.ambiguous is not None:
            self.rejected_refs[outcome.ref] = outcome.reason
            report.ambiguous.append(outcome.ambiguous)
        if outcome.dead_letter_resolved:
            report.dead_letter_resolved()
        report.count(stream, outcome.kind)
        report.change(
            stream,
            outcome.kind,
            webshop_id=outcome.webshop_id,
            chargebee_id=outcome.chargebee_id,
            fields=outcome.changes,
        )
        if outcome.exists_as is not None:
            self._exists(outcome.ref, outcome.exists_as)
        if outcome.deferred is not None:
            self.to_archive.append(outcome.deferred)

    def _archive_deferred(self) -> None:
        """Archive the new items that wait for it, once nothing is being written (their
        prices among them), each in a worker: one after the other, 100 archivals at 250 ms
        a call held every write back for 25 s."""
        self._drain()  # the prices of these items
        attempts, self.to_archive = self.to_archive, []
        for attempt in attempts:
            self._start(attempt.job.ref, partial(self.decisions.archive, attempt))

    def _finish(self) -> None:
        progress = True
        while self.waiting and progress:
            progress = False
            for ref in list(self.waiting):
                if ref not in self.waiting or self.running[ref] or self.blocked[ref]:
                    continue  # written, or refused, with (or for want of) its own parent
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
            for child, record in jobs:
                self._unblock((child, str(record.get("id"))))
                parent = f"{resource}/{det_id}"
                self._count(self.decisions.refuse_record(child, record, reason, parent=parent))

    # ---------------------------------------------------------------- references

    def _resolve_references(
        self, resource: str, params: Params, *, ask_store: bool
    ) -> tuple[Params, Ref | None]:
        """The params with each parent's Chargebee id, or the first parent missing. A record
        new to the scheduler asks only what this run knows: the link store is asked in
        verify(), once the source record's maps ran (an order's invoice comes after the
        order, from the same webshop order: asking at once cost two queries per order, both
        misses). A record released to run again (`ask_store`) asks the link store too: a
        parent found there may have left the run's memory since."""
        resolved = dict(params)
        for key, parent in self.decisions.references(resource, params):
            det = params.get(key)
            if not det:
                continue
            ref = (parent, det)
            if self.running[ref]:
                actual = None
            else:
                actual = self._lookup(ref, remote=False) if ask_store else self._known(ref)
            if actual is None:
                # a parent running, or waiting for its own parent, is this run's to write
                pending = self.running[ref] or self.blocked[ref]
                if not pending and ref not in self.absent:
                    self.unverified.add(ref)  # looked up in Chargebee by verify()
                return params, ref
            resolved[key] = actual
        return resolved, None

    def _known(self, ref: Ref) -> str | None:
        """The Chargebee id of a parent this run knows, without asking anyone."""
        if ref in self.known:
            self.known.move_to_end(ref)
            return self.known[ref]
        return self.found.get(ref)

    def _lookup(self, ref: Ref, *, remote: bool = True) -> str | None:
        """The Chargebee id of a parent given by its deterministic id, or None if absent:
        from this run, else the link store, else (unless not `remote`) Chargebee."""
        known = self._known(ref)
        if known is not None or ref in self.absent:
            return known
        resource, det_id = ref
        link = self.links.get_by_deterministic(resource, det_id)
        if link is None and not remote:
            return None
        if link is None:
            if self._unlocked(lambda: self.gateway.retrieve(resource, det_id)) is None:
                self.absent.add(ref)
                return None
            self.found[ref] = det_id  # no link finds it again: evicted, it would cost a GET
            return det_id
        self._know(ref, link.chargebee_id)
        return link.chargebee_id

    def _unlocked(self, call: Callable[[], T]) -> T:
        """An API call with the lock let go, so that the workers' calls overlap with it."""
        self.lock.release()
        try:
            return call()
        finally:
            self.lock.acquire()

    def _know(self, ref: Ref, chargebee_id: str) -> None:
        self.known[ref] = chargebee_id
        self.known.move_to_end(ref)
        if len(self.known) > self.known_parents:  # found again in the link store (a plan's too)
            self.known.popitem(last=False)

    def _exists(self, ref: Ref, chargebee_id: str) -> None:
        """The record exists in Chargebee; its waiting children go when its job is done
        (`_work`)."""
        self._know(ref, chargebee_id)
        self.found.pop(ref, None)
        self.absent.discard(ref)

    def _wait(self, resource: str, record: dict, parent: Ref, own: Ref) -> None:
        if not self.blocked[own] or parent != own:
            self.report.deferred[resource] += 1
        self.waiting[parent].append((resource, record))
        self.blocked[own] += 1

    def _release(self, ref: Ref) -> None:
        """A parent now exists: run what waited for it, in arrival order."""
        jobs = self.waiting.pop(ref, [])
        for resource, record in jobs:
            self._unblock((resource, str(record.get("id"))))
            self._submit(resource, record, retry=True)

    def _unblock(self, own: Ref) -> None:
        self.blocked[own] -= 1
        if not self.blocked[own]:
            del self.blocked[own]  # one entry per record otherwise: memory would grow
