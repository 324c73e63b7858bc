"""The upsert decisions: given a job, do what it needs and return its outcome. No threads,
no lock: the scheduler runs a job only when its parents are written and no earlier version
of it is running, and it counts the outcome.

One record's decision (`decide`):
1. With no link: the resource's rules create the record under its deterministic id, or
   adopt the Chargebee record it matches (an answer `duplicate_entry` for the id, a customer
   with the same e-mail, an item with the same name), updating what differs.
2. With a link: if the record's content hash equals the one the link store holds for
   Chargebee's side, nothing is sent; otherwise only the parts that changed are written.
3. A refusal by Chargebee (4xx) dead-letters the record with Chargebee's reason. Anything
   else (network, 5xx or 429 after the client's retries, the link store) raises: the target
   stops without emitting state, so nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sync_common.guard import DeleteGuard
from sync_common.http import ApiError
from sync_common.links import superseded
from sync_common.matching import ambiguous_letter
from sync_common.merge import SOURCE_RECORD, same
from target_chargebee.jobs import (
    REJECTED,
    SKIPPED,
    UNCHANGED,
    UPDATED,
    Ambiguous,
    Attempt,
    Job,
    Outcome,
    Rejected,
)
from target_chargebee.params import as_fields, composite_hash, held, split_hash, to_remote
from target_chargebee.resources import AnyLinks, ResourceRules


class Decisions:
    def __init__(
        self,
        *,
        rules: dict[str, ResourceRules],
        links: AnyLinks,
        delete_guard: DeleteGuard,
        logger: logging.Logger,
        source_stream_of: Callable[[str], str] = lambda stream: stream,
    ) -> None:
        self.rules = rules
        self.links = links
        self.delete_guard = delete_guard
        self.logger = logger
        #: the tap stream a target stream comes from, for its dead letters (the target's maps)
        self.source_stream_of = source_stream_of

    def references(self, resource: str, params: dict) -> list[tuple[str, str]]:
        """The params of a record that name a parent, with the parent's resource."""
        return self.rules[resource].reference_keys(params)

    # ---------------------------------------------------------------- the upsert

    def decide(self, job: Job) -> Outcome:
        attempt = Attempt.of(job)
        try:
            return self._upsert(attempt)
        except Rejected as refusal:
            return self.reject(attempt, refusal.reason, **refusal.details)
        except Ambiguous as ambiguous:
            return self.skip_ambiguous(
                job.resource, job.record, ambiguous.entry, chargebee_id=job.det_id,
                notes=attempt.notes,
            )  # fmt: skip
        except ApiError as error:
            if not error.is_refusal:
                raise
            return self.reject(attempt, error.reason, api_error_code=error.code, param=error.param)

    def _upsert(self, job: Attempt) -> Outcome:
        rules = self.rules[job.resource]
        job.link = self.links.get_by_webshop(job.resource, job.webshop_id)
        parts = rules.hash_parts(job)
        content_hash = composite_hash(parts)
        if job.link is not None:
            job.chargebee_id = job.link.chargebee_id
            old = split_hash(job.link.chargebee_hash)
            if self._accounted_for(rules, job, content_hash, old):
                return self._outcome(rules, job, UNCHANGED)
            changed = {name for name, value in parts.items() if old.get(name) != value}
            if job.deleted:
                self.delete_guard.allow(job.resource)  # a dry run stops where the run would
                outcome = rules.remove(job)
            elif old.get("deleted"):
                outcome = rules.restore(job)
            elif not rules.merges:
                outcome = rules.update(job, changed)
            else:
                remote = rules.gateway.retrieve(job.resource, job.chargebee_id)
                if remote is not None:
                    outcome = UPDATED if rules.merge_remote(job, remote) else UNCHANGED
                else:
                    # The linked record is gone from Chargebee (deleted by hand): make it again.
                    self.logger.warning(
                        "%s %s is linked to %s, which Chargebee no longer has: creating it again",
                        job.stream,
                        job.webshop_id,
                        job.chargebee_id,
                    )
                    job.link, job.chargebee_id, job.recreated = None, job.det_id, True
                    outcome = rules.create(job)
        else:
            job.chargebee_id = job.det_id
            if job.deleted and not rules.create_deleted:
                return self._outcome(rules, job, SKIPPED, exists=False)
            outcome = rules.create(job)
        if job.archive_path is not None:
            # Until the deferred archival is done, the link holds the hash of the active
            # item: a run that stops in between finds it differs and archives it next time.
            active = replace(job, params={**job.params, "status": "active"})
            job.provisional_hash = composite_hash(rules.hash_parts(active))
        self.save_link(rules, job, job.provisional_hash or content_hash)
        return self._outcome(rules, job, outcome)

    def _accounted_for(
        self, rules: ResourceRules, job: Attempt, content_hash: str, old: dict[str, str]
    ) -> bool:
        """Nothing of this webshop version is missing in Chargebee, known without a call: the
        sync wrote or saw this very version (e.g. target-customwebshop wrote it from
        Chargebee), or no mapped field differs from the base."""
        link = job.link
        assert link is not None
        if superseded(job.webshop_version, link.webshop_version):
            return True  # read before an overlapping run's newer write: that run merged it
        source = rules.merged(job)
        fields = as_fields(source)
        if link.webshop_version is not None and job.webshop_version == link.webshop_version:
            base = link.chargebee_base and as_fields(held(link.chargebee_base, source))
            if base != fields:  # both held it: the next base
                self.links.save(job.resource, job.webshop_id, job.chargebee_id,
                                chargebee_base=to_remote(source), deterministic_id=job.det_id,
                                webshop_base=job.record.get(SOURCE_RECORD))  # fmt: skip
            return True
        if job.deleted != bool(old.get("deleted")):
            return False
        if job.deleted:
            return True  # deleted before, and still
        if link.chargebee_base is None or not rules.merges:  # a link made before bases
            unchanged = link.chargebee_hash == content_hash
        else:
            base = as_fields(held(link.chargebee_base, source))
            unchanged = all(same(value, base[name]) for name, value in fields.items())
        if unchanged:
            self.links.save(job.resource, job.webshop_id, job.chargebee_id,
                            webshop_version=job.webshop_version, deterministic_id=job.det_id,
                            chargebee_base=to_remote(source),
                            webshop_base=job.record.get(SOURCE_RECORD))  # fmt: skip
        return unchanged

    def save_link(self, rules: ResourceRules, job: Attempt, content_hash: str) -> None:
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
            chargebee_base=(job.base or to_remote(rules.merged(basis))) if rules.merges else None,
            webshop_base=job.record.get(SOURCE_RECORD),
            webshop_version=None if provisional else job.webshop_version,
            deterministic_id=job.det_id,
        )
        rules.first_contact.release(job.resource, {job.chargebee_id, job.det_id}, job.webshop_id)

    def _outcome(
        self, rules: ResourceRules, job: Attempt, kind: str, *, exists: bool = True
    ) -> Outcome:
        # written, in sync, or deleted before it reached Chargebee: its dead letter is done
        resolved = self.links.resolve_dead_letter("webshop", job.stream, job.webshop_id)
        gone = job.deleted and rules.delete_removes
        return Outcome(
            job.resource, job.webshop_id, job.det_id, kind,
            chargebee_id=job.chargebee_id,
            exists_as=(job.chargebee_id or job.det_id) if exists and not gone else None,
            dead_letter_resolved=resolved, changes=job.changes, conflicts=job.conflicts,
            notes=job.notes, deferred=job if job.archive_path is not None else None,
        )  # fmt: skip

    def archive(self, job: Attempt) -> Outcome | None:
        """The deferred archival of a new item (its prices are written now: Chargebee adds
        no price to an archived item); a refusal is this record's rejection."""
        rules = self.rules[job.resource]
        assert job.archive_path is not None
        try:
            rules.write(job, "archive", job.archive_path, {"status": "archived"})
        except ApiError as error:
            if not error.is_refusal:
                raise
            return self.reject(job, error.reason, api_error_code=error.code, param=error.param)
        job.provisional_hash = None
        self.save_link(rules, job, composite_hash(rules.hash_parts(job)))
        return None

    # ---------------------------------------------------------------- refusals

    def reject(self, job: Attempt, reason: str, **details: Any) -> Outcome:
        """Chargebee refused the record, or its rules did: a dead letter with the reason."""
        given = {k: v for k, v in details.items() if v is not None}
        chargebee_id = job.chargebee_id or job.det_id
        letter = self.links.add_dead_letter(
            job.stream, job.webshop_id, reason, job.record, source="webshop",
            source_stream=self.source_stream_of(job.stream),
            details={**given, "chargebee_id": chargebee_id},
        )  # fmt: skip
        if letter is not None:  # None: a plan keeps none
            self.logger.warning(
                "Rejected %s %s (%s): %s", job.stream, job.webshop_id, chargebee_id, reason
            )
        return Outcome(
            job.resource, job.webshop_id, job.det_id, REJECTED, chargebee_id=chargebee_id,
            reason=reason, details=given, conflicts=job.conflicts, notes=job.notes,
            dead_letter_attempts=letter.attempts if letter is not None else None,
        )  # fmt: skip

    def refuse_record(
        self, resource: str, record: dict[str, Any], reason: str, **details: Any
    ) -> Outcome:
        """A record that never became a job (no id, a map that failed, a parent that never
        appeared): a dead letter with the reason."""
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        det_id = str(record.get("id") or "")
        letter = self.links.add_dead_letter(
            resource, webshop_id, reason, record, source="webshop",
            source_stream=self.source_stream_of(resource),
            details={**details, "chargebee_id": det_id},
        )  # fmt: skip
        if letter is not None:
            self.logger.warning("Rejected %s %s (%s): %s", resource, webshop_id, det_id, reason)
        return Outcome(
            resource, webshop_id, det_id, REJECTED, chargebee_id=det_id or None, reason=reason,
            details=details, dead_letter_attempts=letter.attempts if letter is not None else None,
        )  # fmt: skip

    def skip_ambiguous(
        self,
        resource: str,
        record: dict[str, Any],
        entry: dict[str, Any],
        *,
        chargebee_id: str,
        notes: list[str] | None = None,
    ) -> Outcome:
        """A record matching is unsure about: not written; skipped with the reason, listed in
        `ambiguous_matches` and kept as an open dead letter, not counted as one
        (sync_common.matching.ambiguous_letter). Its children wait for it and are refused."""
        webshop_id = str(record.get("webshop_id") or record.get("id") or "")
        self.logger.warning("Skipped %s %s: %s", resource, webshop_id, entry["reason"])
        reason, details = ambiguous_letter(entry)
        self.links.add_dead_letter(
            resource, webshop_id, reason, record, source="webshop",
            source_stream=self.source_stream_of(resource),
            details={**details, "chargebee_id": None},
        )  # fmt: skip
        return Outcome(
            resource, webshop_id, chargebee_id, SKIPPED, chargebee_id=chargebee_id,
            reason=entry["reason"], ambiguous=entry, notes=notes or [],
        )  # fmt: skip
