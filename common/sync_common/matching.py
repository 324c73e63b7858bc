"""First contact: how a record with no link yet is recognised on the other side, the same rule
in both directions (target-chargebee and target-customwebshop).

- Customers match by e-mail, products and items by SKU, then by name. Keys compare after
  trimming and case-folding (`str.strip().casefold()`): `Mixed.Case@example.com ` is
  `mixed.case@example.com`.
- Neither API filters case-insensitively (`email[is]`, `?email=` are exact), so each target
  builds, once per run and only when the first unlinked record needs it, an index of the other
  side's live records: normalized key -> ids, kept in a temporary SQLite database (keys and
  ids, nothing else; its memory does not grow with the data); a record the run creates is
  added to it.
- Exactly one candidate, not linked to another record: matched (linked). Several candidates,
  or several records of this side with one key, or the one candidate already linked to another
  record: ambiguous. Such a record is neither linked nor created; it is counted as skipped,
  listed in the report's `ambiguous_matches`, and kept as an open dead letter, which the tap
  emits again each run: it stays so until a person makes the keys differ (or links by hand).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from sync_common.links import Side

#: Unlinked records a target holds back to see whether another one shares their key, before
#: it decides (target-customwebshop and target-chargebee customers). Beyond this, the key held
#: longest is decided; a later one with that key then finds its match taken (and is reported
#: ambiguous, never linked twice). A held record keeps its source record too, some
#: KB: 10,000 of them made a first sync's memory grow with the shop's size (issue 15, goal 5).
MAX_HELD = 1_000


def text_key(value: Any) -> str | None:
    """The matching key of a text value: trimmed and case-folded; None when empty or not text."""
    if not isinstance(value, str):
        return None
    key = value.strip().casefold()
    return key or None


def email_key(value: Any) -> str | None:
    """The key customers match by: `" Mixed.Case@Example.com"` -> `"mixed.case@example.com"`."""
    return text_key(value)


def name_key(value: Any) -> str | None:
    """The key a product and an item (or an item price's external name) match by."""
    return text_key(value)


def sku_key(value: Any) -> str | None:
    """The key a product and an item price's `accounting_detail[sku]` match by."""
    return text_key(value)


class CandidateIndex:
    """One side's live records of one resource: normalized key -> ids (in the order added),
    and the ids of all of them, keyed or not (so "does id X exist?" needs no call).

    Kept in a private temporary SQLite database, not in Python objects: it holds every live
    record of the other side plus every one the run creates, and as dicts it grew a first
    sync's memory with the data (issue 15, goal 5: bench/volume.py). SQLite keeps
    such a database in its page cache (2 MB by default) and spills the rest to a file it
    deletes when the connection closes. Thread-safe: a target's workers share one index."""

    def __init__(self, rows: Iterable[tuple[str | None, Any]] = ()) -> None:
        # "": a temporary on-disk database, private to this connection
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.executescript(
            """
            CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE keyed (
                added INTEGER PRIMARY KEY, key TEXT NOT NULL, id TEXT NOT NULL,
                UNIQUE (key, id)
            );
            """
        )
        with self._lock:
            self._db.execute("BEGIN")  # the first read in one transaction, not one per row
            for key, record_id in rows:
                self._add(key, record_id)
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM ids").fetchone()[0]

    def has(self, record_id: Any) -> bool:
        with self._lock:
            found = self._db.execute("SELECT 1 FROM ids WHERE id = ?", (str(record_id),))
            return found.fetchone() is not None

    def get(self, key: str | None) -> list[str]:
        if not key:
            return []
        with self._lock:
            rows = self._db.execute("SELECT id FROM keyed WHERE key = ? ORDER BY added", (key,))
            return [record_id for (record_id,) in rows]

    def add(self, key: str | None, record_id: Any) -> None:
        with self._lock:
            self._add(key, record_id)

    def _add(self, key: str | None, record_id: Any) -> None:
        if record_id in (None, ""):
            return
        self._db.execute("INSERT OR IGNORE INTO ids VALUES (?)", (str(record_id),))
        if key:
            self._db.execute(
                "INSERT OR IGNORE INTO keyed (key, id) VALUES (?, ?)", (key, str(record_id))
            )

    def discard(self, key: str | None, record_id: Any) -> None:
        """The record is gone (or no longer has this key)."""
        with self._lock:
            self._db.execute("DELETE FROM ids WHERE id = ?", (str(record_id),))
            if key:
                self._db.execute(
                    "DELETE FROM keyed WHERE key = ? AND id = ?", (key, str(record_id))
                )


def ambiguous_entry(
    stream: str,
    *,
    by: str,
    candidates_in: Side,
    candidates: Iterable[Any],
    reason: str,
    webshop_id: Any = None,
    chargebee_id: Any = None,
) -> dict[str, Any]:
    """One entry of the report's `ambiguous_matches`: the record, the key it was matched by
    (`email`, `sku`, `name`: not the value, which is personal data), the side where several
    records share that key, their ids, and why nothing was linked."""
    return {
        "stream": stream,
        "webshop_id": None if webshop_id is None else str(webshop_id),
        "chargebee_id": None if chargebee_id is None else str(chargebee_id),
        "by": by,
        "candidates_in": candidates_in,
        "candidates": sorted({str(c) for c in candidates}),
        "reason": reason,
    }


def ambiguous_letter(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The reason and details under which a target keeps an ambiguous record (an entry of
    `ambiguous_matches`) as an open dead letter. Kept, the tap emits it again each run, so it
    is decided again together with the records that share its key (an incremental read may
    bring just one of them), until it goes through and its dead letter is resolved."""
    details = {"candidates_in": entry["candidates_in"], "candidates": entry["candidates"]}
    return f"ambiguous: {entry['reason']}", details


class HeldByKey:
    """Unlinked records held until the tap's next state message, by matching key, so that
    several with one key are seen together (ambiguous), whichever came first. Beyond
    MAX_HELD, the key held longest is let go at each new record: a target keeps writing while
    it reads (letting all go at once left the writers idle while the next ones were read)."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, dict]] = {}  # key -> record id -> record, oldest first
        self._keys: dict[str, str] = {}  # record id -> its key

    def __len__(self) -> int:
        return len(self._keys)

    def hold(self, record_id: str, key: str, record: dict) -> list[dict[str, dict]]:
        """Hold the record (its latest version); the groups let go to stay within MAX_HELD
        (record id -> record, one key each), the longest held first."""
        previous = self._keys.get(record_id)
        if previous is not None and previous != key:  # its key changed within the run
            self._held[previous].pop(record_id, None)
            if not self._held[previous]:
                del self._held[previous]
        self._held.setdefault(key, {})[record_id] = record
        self._keys[record_id] = key
        let_go = []
        while len(self._keys) > MAX_HELD:
            group = self._held.pop(next(iter(self._held)))
            for held_id in group:
                del self._keys[held_id]
            let_go.append(group)
        return let_go

    def take(self) -> list[dict[str, dict]]:
        """The held records, grouped by key (record id -> record), and none held after."""
        held, self._held, self._keys = self._held, {}, {}
        return list(held.values())


def release_held(sinks: Iterable[Any]) -> None:
    """Let every sink that holds records decide them (before a state message covers them,
    and at the end)."""
    for sink in sinks:
        release = getattr(sink, "release_held", None)
        if release is not None:
            release()
