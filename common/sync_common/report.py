"""What a run did, per stream: the log summary and the JSON report file (one per run).

Neither holds a secret: counts, ids, the far side's reasons for refusals, the API call counts,
and for conflicts the two versions of the record.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

#: Outcomes of a real run, in the order the summary shows them.
OUTCOMES = ("created", "updated", "unchanged", "deleted", "skipped", "rejected")
#: Plan categories of a dry run.
PLAN = ("new", "matched", "update", "unchanged", "delete", "ambiguous", "refused", "waiting")
#: Rejections kept in the report file with their reasons (all are in the dead-letter table).
MAX_LISTED = 200


def default_report_dir() -> Path:
    """`.meltano/sync/reports/` of the Meltano project that runs the target (Meltano passes
    MELTANO_SYS_DIR_ROOT / MELTANO_PROJECT_ROOT), else of the working directory."""
    if sys_dir := os.environ.get("MELTANO_SYS_DIR_ROOT"):
        return Path(sys_dir) / "sync" / "reports"
    root = os.environ.get("MELTANO_PROJECT_ROOT") or os.getcwd()
    return Path(root) / ".meltano" / "sync" / "reports"


class RunReport:
    def __init__(self, plugin: str, *, dry_run: bool = False) -> None:
        self.plugin = plugin
        self.dry_run = dry_run
        self.started = datetime.datetime.now(datetime.UTC)
        self._clock = time.monotonic()
        self.outcomes: dict[str, Counter[str]] = {}
        self.plan: dict[str, Counter[str]] = {}
        self.records_in: Counter[str] = Counter()
        self.deferred: Counter[str] = Counter()
        self.rejections: list[dict[str, Any]] = []
        self.ambiguous: list[dict[str, Any]] = []
        self.notes: list[str] = []
        #: Edits overruled by the conflict policy: both versions, never dropped silently.
        self.conflicts: list[dict[str, Any]] = []

    def received(self, stream: str) -> None:
        self.records_in[stream] += 1
        self.outcomes.setdefault(stream, Counter())

    def count(self, stream: str, outcome: str) -> None:
        self.outcomes.setdefault(stream, Counter())[outcome] += 1

    def planned(self, stream: str, category: str) -> None:
        self.plan.setdefault(stream, Counter())[category] += 1

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
        streams = sorted(set(self.outcomes) | set(self.plan))
        per_stream: dict[str, Any] = {}
        for stream in streams:
            entry: dict[str, Any] = {"records": self.records_in[stream]}
            if self.dry_run:
                entry["plan"] = {k: self.plan.get(stream, Counter())[k] for k in PLAN}
            else:
                entry.update({k: self.outcomes.get(stream, Counter())[k] for k in OUTCOMES})
            if self.deferred[stream]:
                entry["waited_for_parent"] = self.deferred[stream]
            per_stream[stream] = entry
        return {
            "plugin": self.plugin,
            "dry_run": self.dry_run,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seconds": seconds,
            "records": records,
            "records_per_second": round(records / seconds, 1) if seconds else None,
            "streams": per_stream,
            "rejected": self.total("rejected"),
            "rejections": self.rejections,
            "ambiguous_matches": self.ambiguous,
            "conflicts": self.conflicts,
            "notes": self.notes,
            "api_calls": api_calls,
        }

    def summary_lines(self, data: dict[str, Any]) -> list[str]:
        title = "Dry run plan (nothing written)" if self.dry_run else "Run summary"
        lines = [f"{title}: {data['records']} records in {data['seconds']} s"]
        for stream, entry in data["streams"].items():
            keys = PLAN if self.dry_run else OUTCOMES
            source = entry["plan"] if self.dry_run else entry
            counts = ", ".join(f"{k} {source[k]}" for k in keys)
            lines.append(f"  {stream}: {entry['records']} records: {counts}")
        calls = data["api_calls"]
        if calls:
            lines.append("  API calls: " + json.dumps(calls, sort_keys=True))
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
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines

    def write(self, directory: Path, data: dict[str, Any]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        kind = "dry-run" if self.dry_run else "run"
        path = directory / f"{self.plugin}-{kind}-{stamp}-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return path
