"""What a run did, or in a dry run would do, per stream: progress lines while it runs, the
summary table in the log, and the JSON report file (one per run).

A dry run counts with the same outcomes as a real run, so the plan and the run compare one to
one. Neither output holds a secret: counts, ids, the far side's reasons for refusals, the API
call counts, for conflicts the two versions of the record, and in a dry run the fields an
update would change (old and new value).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

#: Outcomes of a run (a dry run: what the real run would do), in the order the summary shows
#: them. `matched`: linked to a record the far side already had (updated where it differed).
OUTCOMES = ("created", "matched", "updated", "unchanged", "deleted", "skipped", "rejected")
#: Records the report file lists per stream with their outcome, and rejections it lists with
#: their reasons (all are counted; rejections are all in the dead-letter table).
MAX_LISTED = 1000
#: Records per stream and outcome a dry run's log lists (the report file lists more).
LOG_LISTED = 10
#: Seconds between progress lines. No total is known in advance (a Singer target reads a
#: stream, and neither API announces a count), so a line shows records done and the rate,
#: not the time left.
PROGRESS_SECONDS = 30.0


def default_report_dir() -> Path:
    """`.meltano/sync/reports/` of the Meltano project that runs the target (Meltano passes
    MELTANO_SYS_DIR_ROOT / MELTANO_PROJECT_ROOT), else of the working directory."""
    if sys_dir := os.environ.get("MELTANO_SYS_DIR_ROOT"):
        return Path(sys_dir) / "sync" / "reports"
    root = os.environ.get("MELTANO_PROJECT_ROOT") or os.getcwd()
    return Path(root) / ".meltano" / "sync" / "reports"


def current_run_id() -> str:
    """Meltano's run id when it gives one (`MELTANO_RUN_ID`, or `meltano run --run-id`), so
    that reports and dead letters name the run Meltano knows; else a fresh one."""
    return os.environ.get("MELTANO_RUN_ID") or uuid.uuid4().hex


class RunReport:
    def __init__(
        self,
        plugin: str,
        *,
        run_id: str | None = None,
        dry_run: bool = False,
        logger: logging.Logger | None = None,
        progress_seconds: float | None = None,
    ) -> None:
        self.plugin = plugin
        self.run_id = run_id or current_run_id()
        self.dry_run = dry_run
        self.logger = logger
        self.started = datetime.datetime.now(datetime.UTC)
        self._clock = time.monotonic()
        if progress_seconds is None:  # the environment may ask for more frequent lines
            progress_seconds = float(os.environ.get("SYNC_PROGRESS_SECONDS") or PROGRESS_SECONDS)
        self._progress_seconds = progress_seconds
        self._next_progress = self._clock + progress_seconds
        self.outcomes: dict[str, Counter[str]] = {}
        #: Records with an outcome other than unchanged: ids, and in a dry run the fields an
        #: update changes as {field: [old, new]}.
        self.changes: list[dict[str, Any]] = []
        self.not_listed: Counter[str] = Counter()
        self._listed: Counter[str] = Counter()
        self.records_in: Counter[str] = Counter()
        self.deferred: Counter[str] = Counter()
        self.rejections: list[dict[str, Any]] = []
        self.ambiguous: list[dict[str, Any]] = []
        self.notes: list[str] = []
        #: Edits overruled by the conflict policy: both versions, never dropped silently.
        self.conflicts: list[dict[str, Any]] = []
        #: Seconds this run waited for another run of the same pair (sync_common.run_lock).
        self.run_lock_waited = 0.0
        #: Dead letters this run opened (`new`), failed again, and resolved; `open`: how
        #: many of the target's direction are open at the end (the target sets it).
        self.dead_letters: Counter[str] = Counter()
        self.dead_letters_open: int | None = None

    def dead_lettered(self, attempts: int) -> None:
        self.dead_letters["new" if attempts == 1 else "failed_again"] += 1

    def dead_letter_resolved(self) -> None:
        self.dead_letters["resolved"] += 1

    def received(self, stream: str) -> None:
        self.records_in[stream] += 1
        self.outcomes.setdefault(stream, Counter())
        if self.logger is not None and time.monotonic() >= self._next_progress:
            self._next_progress = time.monotonic() + self._progress_seconds
            self.logger.info("%s", self.progress_line())

    def progress_line(self) -> str:
        seconds = time.monotonic() - self._clock
        done = sum(self.records_in.values())
        streams = ", ".join(f"{s} {n}" for s, n in self.records_in.items())
        outcomes = ", ".join(f"{k} {self.total(k)}" for k in OUTCOMES if self.total(k))
        rate = done / seconds if seconds else 0.0
        return f"Progress: {done} records in {seconds:.0f} s ({rate:.1f}/s): {streams}; {outcomes}"

    def count(self, stream: str, outcome: str) -> None:
        self.outcomes.setdefault(stream, Counter())[outcome] += 1

    def change(
        self,
        stream: str,
        outcome: str,
        *,
        webshop_id: str | None,
        chargebee_id: str | None,
        fields: dict[str, list[Any]] | None = None,
    ) -> None:
        """List one record's outcome in the report (unchanged records are only counted)."""
        if outcome == "unchanged":
            return
        if self._listed[stream] >= MAX_LISTED:
            self.not_listed[stream] += 1
            return
        self._listed[stream] += 1
        entry: dict[str, Any] = {"stream": stream, "outcome": outcome}
        entry.update(webshop_id=webshop_id, chargebee_id=chargebee_id)
        if fields:
            entry["fields"] = fields
        self.changes.append(entry)

    def rejected(
        self, stream: str, webshop_id: str, chargebee_id: str | None, reason: str, **extra: Any
    ) -> None:
        self.count(stream, "rejected")
        if len(self.rejections) < MAX_LISTED:
            entry = {"stream": stream, "webshop_id": webshop_id, "chargebee_id": chargebee_id}
            self.rejections.append({**entry, "reason": reason, **extra})

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.outcomes.values())

    def as_dict(self, api_calls: dict[str, Any]) -> dict[str, Any]:
        seconds = round(time.monotonic() - self._clock, 3)
        records = sum(self.records_in.values())
        conflicts = Counter(c["stream"] for c in self.conflicts)
        per_stream: dict[str, Any] = {}
        for stream in sorted(self.outcomes):
            entry: dict[str, Any] = {"records": self.records_in[stream]}
            entry.update({k: self.outcomes[stream][k] for k in OUTCOMES})
            entry["conflicts"] = conflicts[stream]
            if self.deferred[stream]:
                entry["waited_for_parent"] = self.deferred[stream]
            per_stream[stream] = entry
        return {
            "plugin": self.plugin,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seconds": seconds,
            "run_lock_waited_seconds": round(self.run_lock_waited, 1),
            "records": records,
            "records_per_second": round(records / seconds, 1) if seconds else None,
            "streams": per_stream,
            "rejected": self.total("rejected"),
            "api_calls_total": sum(v for v in api_calls.values() if isinstance(v, int)),
            "changes": self.changes,
            "changes_not_listed": dict(self.not_listed),
            "rejections": self.rejections,
            "ambiguous_matches": self.ambiguous,
            "match_report": self.match_report(),
            "conflicts": self.conflicts,
            "dead_letters": self.dead_letter_summary(),
            "notes": self.notes,
            "api_calls": api_calls,
        }

    def dead_letter_summary(self) -> dict[str, int | None]:
        """`retried`: records with an open dead letter that came again (failed again or
        resolved); `open`: what is left open for the next run to retry."""
        counts = {name: self.dead_letters[name] for name in ("new", "failed_again", "resolved")}
        retried = counts["failed_again"] + counts["resolved"]
        return {**counts, "retried": retried, "open": self.dead_letters_open}

    def match_report(self) -> dict[str, dict[str, int]]:
        """First contact per stream (the go-live match report): records linked to one the far
        side already had (`matched`), records left unlinked because several share a key
        (`ambiguous`, and by the side where they are), and records the far side gets anew
        (`new`, the creates)."""
        by_side = Counter(
            (a["stream"], a.get("candidates_in") or "unknown") for a in self.ambiguous
        )
        streams = sorted(set(self.outcomes) | {stream for stream, _ in by_side})
        report: dict[str, dict[str, int]] = {}
        for stream in streams:
            counts = self.outcomes.get(stream, Counter())
            sides = {side: n for (s, side), n in sorted(by_side.items()) if s == stream}
            entry = {
                "matched": counts["matched"],
                "ambiguous": sum(sides.values()),
                "new": counts["created"],
            }
            entry.update({f"ambiguous_several_in_{side}": n for side, n in sides.items()})
            if any(entry.values()):
                report[stream] = entry
        return report

    def summary_lines(self, data: dict[str, Any]) -> list[str]:
        title = (
            "Dry-run plan (nothing written; what a real run would do)"
            if self.dry_run
            else "Run summary"
        )
        lines = [
            f"{title}: {self.plugin} (run {self.run_id}), {data['records']} records in "
            f"{data['seconds']} s, "
            f"{data['api_calls_total']} API calls"
        ]
        columns = ("records", *OUTCOMES, "conflicts")
        width = max([len("stream"), *map(len, data["streams"])])
        lines.append(f"  {'stream':<{width}} " + " ".join(f"{c:>9}" for c in columns))
        for stream, entry in data["streams"].items():
            counts = " ".join(f"{entry[c]:>9}" for c in columns)
            lines.append(f"  {stream:<{width}} {counts}")
        if self.dry_run:
            lines.extend(self._plan_lines())
            lines.extend(self._match_lines(data.get("match_report") or self.match_report()))
        writes = data["api_calls"].get("writes_by_operation", {})
        for name, calls in (("API calls", data["api_calls"]), ("writes", writes)):
            listed = [f"{call} {n}" for call, n in calls.items() if isinstance(n, int)]
            if listed:
                lines.append(f"  {name}: " + ", ".join(listed))
        for rejection in self.rejections[:20]:
            lines.append(
                "  rejected {stream} {webshop_id} ({chargebee_id}): {reason}".format(**rejection)
            )
        if len(self.rejections) > 20:
            lines.append(f"  … {len(self.rejections) - 20} more rejections in the report file")
        for conflict in self.conflicts[:20]:
            lines.append(
                "  conflict {stream} {webshop_id} ({chargebee_id}): {winner} won".format(**conflict)
            )
        for entry in self.ambiguous[:20]:
            ids = " / ".join(str(entry[k]) for k in ("webshop_id", "chargebee_id") if entry.get(k))
            candidates = ", ".join(str(c) for c in entry.get("candidates") or [])
            reason = entry.get("reason") or f"candidates {candidates}"
            lines.append(f"  ambiguous {entry['stream']} {ids}: {reason}")
        if len(self.ambiguous) > 20:
            lines.append(
                f"  … {len(self.ambiguous) - 20} more ambiguous matches in the report file"
            )
        letters = data.get("dead_letters") or {}
        if any(letters.get(name) for name in ("new", "retried", "open")):
            lines.append(
                "  dead letters: {new} new, {retried} retried ({failed_again} failed again, "
                "{resolved} resolved), {open} open".format(**letters)
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines

    def _plan_lines(self) -> list[str]:
        """The records a dry run would write, LOG_LISTED per stream and outcome."""
        lines: list[str] = []
        shown: Counter[tuple[str, str]] = Counter()
        for change in self.changes:
            key = (change["stream"], change["outcome"])
            shown[key] += 1
            if shown[key] > LOG_LISTED:
                continue
            ids = " / ".join(str(i) for i in (change["webshop_id"], change["chargebee_id"]) if i)
            line = f"  would be {change['outcome']}: {change['stream']} {ids}"
            fields = change.get("fields") or {}
            if fields:
                line += ": " + "; ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in fields.items())
            lines.append(line)
        for (stream, outcome), count in shown.items():
            if count > LOG_LISTED:
                lines.append(f"  … {count - LOG_LISTED} more {outcome} {stream} in the report file")
        return lines

    @staticmethod
    def _match_lines(report: dict[str, dict[str, int]]) -> list[str]:
        """Dry run: the go-live match report, one line per stream with a first contact."""
        names = {"chargebee": "in Chargebee", "webshop": "in the webshop"}
        lines = []
        for stream, entry in report.items():
            prefix = "ambiguous_several_in_"
            sides = [
                f"{n} several {names.get(key[len(prefix) :], key[len(prefix) :])}"
                for key, n in entry.items()
                if key.startswith(prefix)
            ]
            ambiguous = f"{entry['ambiguous']} ambiguous"
            if sides:
                ambiguous += f" ({', '.join(sides)})"
            lines.append(
                f"  first contact: {stream} {entry['matched']} matched, {ambiguous}, "
                f"{entry['new']} new"
            )
        return lines

    def publish(
        self, logger: logging.Logger, data: dict[str, Any], report_dir: str | None = None
    ) -> Path:
        """The end of a run: the summary table in the log and the JSON report written to
        `report_dir` (default: `default_report_dir()`). Logged by `<logger>.report`, a child
        of the target's logger, so a logging config can show run reports apart from the rest
        (`make demo` shows only them)."""
        reports = logger.getChild("report")
        for line in self.summary_lines(data):
            reports.info("%s", line)
        path = self.write(Path(report_dir) if report_dir else default_report_dir(), data)
        reports.info("Report written to %s", path)
        if self.dry_run:
            reports.info("Dry run: nothing was written and no state is emitted.")
        return path

    def write(self, directory: Path, data: dict[str, Any]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        kind = "dry-run" if self.dry_run else "run"
        path = directory / f"{self.plugin}-{kind}-{stamp}-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return path
