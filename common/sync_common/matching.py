"""First contact: how a record with no link yet is recognised on the other side, the same rule
in both directions (target-chargebee and target-customwebshop).

- Customers match by e-mail, products and items by SKU, then by name. Keys compare after
  trimming and case-folding (`str.strip().casefold()`): `Mixed.Case@example.com ` is
  `mixed.case@example.com`.
- Neither API filters case-insensitively (`email[is]`, `?email=` are exact), so each target
  builds, once per run and only when the first unlinked record needs it, an index of the other
  side's live records: normalized key -> ids. Memory is keys and ids, nothing else; a record
  the run creates is added to it.
- Exactly one candidate, not linked to another record: matched (linked). Several candidates,
  or several records of this side with one key, or the one candidate already linked to another
  record: ambiguous. Such a record is neither linked nor created; it is counted as skipped,
  listed in the report's `ambiguous_matches`, and kept as an open dead letter, which the tap
  emits again each run: it stays so until a person makes the keys differ (or links by hand).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sync_common.links import Side

#: Unlinked records a target holds back to see whether another one shares their key, before
#: it decides (target-customwebshop and target-chargebee customers). Beyond this, the held
#: ones are decided at once; a later one with the same key then finds its match taken (and is
#: reported ambiguous, never linked twice). A held record keeps its source record too, some
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
    and the ids of all of them, keyed or not (so "does id X exist?" needs no call)."""

    def __init__(self, rows: Iterable[tuple[str | None, Any]] = ()) -> None:
        self._ids: dict[str, list[str]] = {}
        self._all: set[str] = set()
        for key, record_id in rows:
            self.add(key, record_id)

    def __len__(self) -> int:
        return len(self._all)

    def has(self, record_id: Any) -> bool:
        return str(record_id) in self._all

    def get(self, key: str | None) -> list[str]:
        return list(self._ids.get(key, ())) if key else []

    def add(self, key: str | None, record_id: Any) -> None:
        if record_id in (None, ""):
            return
        self._all.add(str(record_id))
        if key:
            ids = self._ids.setdefault(key, [])
            if str(record_id) not in ids:
                ids.append(str(record_id))

    def discard(self, key: str | None, record_id: Any) -> None:
        """The record is gone (or no longer has this key)."""
        self._all.discard(str(record_id))
        if not key:  # add keeps no entry for an empty key
            return
        ids = self._ids.get(key)
        if ids and str(record_id) in ids:
            ids.remove(str(record_id))
            if not ids:
                del self._ids[key]


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
    several with one key are seen together (ambiguous), whichever came first."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, dict]] = {}
        self._keys: dict[str, str] = {}  # record id -> its key

    def hold(self, record_id: str, key: str, record: dict) -> bool:
        """Hold the record (its latest version); True when as many are held as may be."""
        previous = self._keys.get(record_id)
        if previous is not None and previous != key:  # its key changed within the run
            self._held[previous].pop(record_id, None)
            if not self._held[previous]:
                del self._held[previous]
        self._held.setdefault(key, {})[record_id] = record
        self._keys[record_id] = key
        return len(self._keys) >= MAX_HELD

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
