"""What the layers of target-chargebee hand each other: a `Job` (one record, as the scheduler
gives it to the upsert decisions; never changed), an `Attempt` (the working state of one
decision, owned by it alone), the decisions' `Outcome`, and the two refusals resource code
raises (`Rejected`, `Ambiguous`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync_common.links import Link
from target_chargebee.params import Params

Ref = tuple[str, str]  # (resource, deterministic Chargebee id)

CREATED, MATCHED, UPDATED, UNCHANGED = "created", "matched", "updated", "unchanged"
DELETED, SKIPPED, REJECTED = "deleted", "skipped", "rejected"


class Rejected(Exception):  # noqa: N818 (a decision, not a failure)
    """Raised by resource code to dead-letter the current record with a reason."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class Ambiguous(Exception):  # noqa: N818 (a decision, not a failure)
    """Raised by resource code when a record with no link matches several Chargebee records,
    or one that another record has (sync_common.matching): it is neither linked nor created,
    but counted as skipped, listed in the report's `ambiguous_matches` (`entry`) and kept for
    the next run until a person resolves it."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry["reason"])
        self.entry = entry


class _OfRecord:
    """What a Job and an Outcome both name: the record's resource (also the target's stream)
    and its deterministic id."""

    resource: str
    det_id: str

    @property
    def stream(self) -> str:
        return self.resource

    @property
    def ref(self) -> Ref:
        return (self.resource, self.det_id)


@dataclass(frozen=True)
class Job(_OfRecord):
    """One record on its way to Chargebee, its references resolved by the scheduler."""

    resource: str  # the Chargebee resource, which is also the target's stream
    record: dict[str, Any]
    webshop_id: str
    webshop_version: Any
    deleted: bool
    det_id: str  # the deterministic Chargebee id from the map
    params: Params  # with references resolved to real Chargebee ids


def _of_job(name: str) -> Any:
    """An attribute of an Attempt that is its job's."""
    return property(lambda attempt: getattr(attempt.job, name))


@dataclass
class Attempt:
    """One upsert decision's working state: what it has found and written so far."""

    job: Job
    params: Params  # the job's, then as merged with Chargebee's record
    deleted: bool
    link: Link | None = None
    chargebee_id: str = ""  # the id in Chargebee (linked, matched or det_id)
    version: Any = None  # Chargebee's resource_version after the last write or read
    recreated: bool = False  # linked, but gone from Chargebee: made again
    provisional_hash: str | None = None  # saved until a deferred archival is done
    remote: dict | None = None  # the Chargebee record as read (a plan's "old" values)
    changes: dict[str, list] = field(default_factory=dict)  # a plan's field -> [old, new]
    #: Chargebee holds a value the webshop does not have yet (an edit made there, or a
    #: conflict it won): its new version is left for the way back to carry over
    pending: bool = False
    base: dict[str, Any] | None = None  # the webshop's fields as merged: the next base
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    archive_path: str | None = None  # a new item archived once its prices are written

    @classmethod
    def of(cls, job: Job) -> Attempt:
        return cls(job=job, params=dict(job.params), deleted=job.deleted)

    # what the job says, read through
    resource = _of_job("resource")
    stream = _of_job("resource")
    record = _of_job("record")
    det_id = _of_job("det_id")
    webshop_id = _of_job("webshop_id")
    webshop_version = _of_job("webshop_version")


@dataclass
class Outcome(_OfRecord):
    """What became of one record (or, for `rejected` after a deferred archival, of its last
    write): the scheduler counts it in the report and lets the record's children go."""

    resource: str
    webshop_id: str
    det_id: str
    kind: str  # created, matched, updated, unchanged, deleted, skipped or rejected
    chargebee_id: str | None = None
    #: the record exists in Chargebee under this id: records that wait for it may go
    exists_as: str | None = None
    reason: str = ""  # rejected or skipped as ambiguous: why
    details: dict[str, Any] = field(default_factory=dict)
    ambiguous: dict[str, Any] | None = None  # skipped: the `ambiguous_matches` entry
    dead_letter_attempts: int | None = None  # a dead letter was kept (never in a plan)
    dead_letter_resolved: bool = False
    changes: dict[str, list] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deferred: Attempt | None = None  # to archive once the record's prices are written
