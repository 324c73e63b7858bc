"""The per-field three-way merge both targets call: for each mapped field of a linked record,
the value the sync last saw on both sides (the base), the source side's value and the
target side's value decide what the target gets.

- changed on one side only: that value goes to (or stays on) both sides;
- changed on both sides to the same value: nothing to write;
- changed on both sides to different values (or no base is known, as when two existing
  records are matched): `conflict_policy` decides for that field alone; an empty winning
  value does not clear a filled one unless `empty_overwrites`.

An address, or an order's list of lines, counts as one field (a dict of its members).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync_common.conflicts import chargebee_wins
from sync_common.links import Side

#: Where a target keeps, beside a mapped record, the source record before the stream maps:
#: it is the other direction's base (the far side's record, in the far side's shape).
SOURCE_RECORD = "_sync_source_record"

#: A base that is not known for a field: both sides count as changed.
UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()


def is_empty(value: Any) -> bool:
    """No value: None, "", or an object or list whose members are all empty."""
    if value is None or value == "":
        return True
    if isinstance(value, Mapping):
        return all(is_empty(member) for member in value.values())
    if isinstance(value, list | tuple):
        return not value
    return False


def same(a: Any, b: Any) -> bool:
    """Equal as both systems store them: empties are alike, objects compare member by
    member (a missing member is empty), and ISO timestamps compare as instants in whole
    seconds (Chargebee keeps no fraction: the maps truncate), also with Chargebee's Unix
    seconds (a form parameter) where tap-chargebee's date-time is the base."""
    if a == b:  # the common case, and what every rule below says of equal values
        return True
    if is_empty(a) and is_empty(b):
        return True
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping | type(None)) and isinstance(b, Mapping | type(None))):
            return False
        a, b = a or {}, b or {}
        return all(same(a.get(key), b.get(key)) for key in set(a) | set(b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        if a.isdigit() and b.isdigit():
            return False  # numbers, or a zip code: no instant on either side
        try:
            return _instant(a) == _instant(b)
        except ValueError:
            return False
    return bool(a == b)


def _instant(text: str) -> datetime.datetime:
    if text.isdigit():  # Unix seconds
        return datetime.datetime.fromtimestamp(int(text), datetime.UTC)
    return datetime.datetime.fromisoformat(text).replace(microsecond=0)


@dataclass(frozen=True)
class FieldConflict:
    field: str
    base: Any  # UNKNOWN when no base was known
    webshop: Any
    chargebee: Any
    winner: Side  # the side whose value both now hold

    def as_dict(self) -> dict[str, Any]:
        base = None if self.base is UNKNOWN else self.base
        return {
            "field": self.field,
            "base": base,
            "base_known": self.base is not UNKNOWN,
            "webshop": self.webshop,
            "chargebee": self.chargebee,
            "winner": self.winner,
        }


@dataclass(frozen=True)
class Merge:
    #: per field, the value both sides hold once the target is written
    values: dict[str, Any]
    #: the fields the target must be written with (their merged values)
    to_target: dict[str, Any]
    #: fields where the source side does not hold the merged value yet: the other direction
    #: of the sync carries them (an edit made on the target side, or a conflict it won)
    pending: frozenset[str]
    conflicts: tuple[FieldConflict, ...]


def merge_fields(
    base: Mapping[str, Any] | None,
    source: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    source_side: Side,
    policy: str | None,
    source_updated_at: Any,
    target_updated_at: Any,
    empty_overwrites: bool = False,
) -> Merge:
    """Merge the fields of `source` (the incoming record, in the target's shape) into
    `target` (the record as the target side holds it now). `base`: per field, the value
    both sides held at the last sync; None, or a field missing from it, is unknown."""
    chargebee_at, webshop_at = (
        (source_updated_at, target_updated_at)
        if source_side == "chargebee"
        else (target_updated_at, source_updated_at)
    )
    target_side: Side = "webshop" if source_side == "chargebee" else "chargebee"
    values: dict[str, Any] = {}
    to_target: dict[str, Any] = {}
    pending: set[str] = set()
    conflicts: list[FieldConflict] = []
    for name, new in source.items():
        held = target.get(name)
        old = UNKNOWN if base is None else base.get(name, UNKNOWN)
        if same(new, held):
            merged = new
        elif old is not UNKNOWN and same(held, old):
            merged = new  # edited on the source side only
        elif old is not UNKNOWN and same(new, old):
            merged = held  # edited on the target side only
        else:
            won = source_side if _wins(source_side, policy, chargebee_at, webshop_at) else None
            winner: Side = won or target_side
            merged = new if winner == source_side else held
            if is_empty(merged) and not empty_overwrites:
                merged = held if winner == source_side else new  # the filled value stays
                winner = target_side if winner == source_side else source_side
            by_side = {source_side: new, target_side: held}
            conflicts.append(
                FieldConflict(name, old, by_side["webshop"], by_side["chargebee"], winner)
            )
        values[name] = merged
        if not same(merged, held):
            to_target[name] = merged
        if not same(merged, new):
            pending.add(name)
    return Merge(values, to_target, frozenset(pending), tuple(conflicts))


def _wins(side: Side, policy: str | None, chargebee_at: Any, webshop_at: Any) -> bool:
    cb_won = chargebee_wins(policy, chargebee_at, webshop_at)
    return cb_won if side == "chargebee" else not cb_won


def conflict_entry(
    stream: str, webshop_id: str, chargebee_id: str, policy: str | None, merge: Merge
) -> dict[str, Any]:
    """The run report's entry for a record with conflicting fields: each field with its
    base, both values and the winner; `winner` is the record's ("both" when fields split)."""
    winners = {conflict.winner for conflict in merge.conflicts}
    return {
        "stream": stream,
        "webshop_id": str(webshop_id),
        "chargebee_id": str(chargebee_id),
        "policy": policy or "newest_wins",
        "winner": winners.pop() if len(winners) == 1 else "both",
        "fields": [conflict.as_dict() for conflict in merge.conflicts],
        "webshop": {c.field: c.webshop for c in merge.conflicts},
        "chargebee": {c.field: c.chargebee for c in merge.conflicts},
    }
