"""Chargebee's list operations: `attr[op]=value` filters, one `sort_by[asc|desc]`, `limit`
1–100 and an opaque `offset` (keyset over the sort order, so pages stay stable while
records change)."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sync_sandbox.chargebee.errors import wrong_value
from sync_sandbox.chargebee.params import parse_bool, parse_list_value

OPERATORS = {
    "str": ("is", "is_not", "starts_with", "is_present", "in", "not_in"),
    "enum": ("is", "is_not", "in", "not_in"),
    "num": ("is", "is_not", "lt", "lte", "gt", "gte", "between"),
    "ts": ("after", "before", "on", "between"),
    "bool": ("is",),
    "is": ("is",),
}
PAGING = {"limit", "offset", "sort_by"}


def list_page(
    objects: Iterable[dict],
    params: Mapping[str, Any],
    filters: Mapping[str, str],
    sorts: tuple[str, ...],
    *,
    extra: Iterable[str] = (),
) -> tuple[list[dict], str | None]:
    """The page of `objects` that `params` asks for, and the next offset (None at the end).
    `extra` names params the caller handles itself (include_deleted, entity scoping)."""
    limit = _limit(params.get("limit"))
    tests = []
    for name, value in params.items():
        if name in PAGING or name in extra:
            continue
        if name not in filters:
            raise wrong_value(name, "is not a filter of this list")
        if not isinstance(value, dict) or len(value) != 1:
            raise wrong_value(name, f"a filter is given as {name}[operator]=value")
        (operator, raw), kind = next(iter(value.items())), filters[name]
        if operator not in OPERATORS[kind]:
            raise wrong_value(f"{name}[{operator}]", "is not a supported operator here")
        tests.append(_test(name, operator, raw, kind))
    attr, descending = _sort(params.get("sort_by"), sorts)
    rows = [
        (_key(obj, attr, position), obj)
        for position, obj in enumerate(objects)
        if all(test(obj) for test in tests)
    ]
    rows.sort(key=lambda row: row[0], reverse=descending)
    if params.get("offset"):
        after = _decode(params["offset"])
        rows = [row for row in rows if (row[0] < after if descending else row[0] > after)]
    page = rows[:limit]
    more = len(rows) > limit
    return [obj for _, obj in page], _encode(page[-1][0]) if more else None


def _limit(raw: Any) -> int:
    if raw is None:
        return 10
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        limit = 0
    if not 1 <= limit <= 100:
        raise wrong_value("limit", f"The value {raw} is invalid. It should be between 1 and 100")
    return limit


def _sort(raw: Any, sorts: tuple[str, ...]) -> tuple[str | None, bool]:
    if raw is None:
        return None, False
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("asc", "desc"):
        raise wrong_value("sort_by", "is given as sort_by[asc]=attr or sort_by[desc]=attr")
    direction, attr = next(iter(raw.items()))
    if attr not in sorts:
        allowed = ", ".join(sorts) or "none"
        raise wrong_value(f"sort_by[{direction}]", f"cannot sort by {attr}; allowed: {allowed}")
    return attr, direction == "desc"


def _key(obj: dict, attr: str | None, position: int) -> list:
    """Sort key with a unique tie-breaker: within one second, the order of the writes.
    Without sort_by, creation order."""
    if attr is None:
        return [position, 0, obj["id"]]
    value = obj.get(attr)
    if value is None:
        value = -1 if attr in ("created_at", "updated_at", "date") else ""
    return [value, obj.get("resource_version") or 0, obj["id"]]


def _encode(key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode(offset: str) -> list:
    try:
        key = json.loads(base64.urlsafe_b64decode(offset.encode()))
    except ValueError:
        key = None
    if not isinstance(key, list) or len(key) != 3:
        raise wrong_value("offset", "is not an offset this list returned")
    return key


def _test(name: str, operator: str, raw: str, kind: str) -> Callable[[dict], bool]:
    label = f"{name}[{operator}]"
    if operator == "is_present":
        want = parse_bool(raw, label)
        return lambda obj: (obj.get(name) not in (None, "")) == want
    values: list[Any] | None  # the filter's operands, as the attribute's kind
    try:
        values = parse_list_value(raw) if operator in ("in", "not_in", "between") else [raw]
        if kind in ("num", "ts"):
            values = [int(value) for value in values]
        elif kind == "bool":
            values = [parse_bool(raw, label)]
    except ValueError:
        values = None
    if not values or (operator == "between" and len(values) != 2):
        raise wrong_value(label, f"invalid value {raw}")
    first: Any = values[0]
    # chosen once per request, not per record: a list scans every record of its kind
    compare: Callable[[Any], bool] = {
        "is": lambda value: value == first,
        "is_not": lambda value: value != first,
        "starts_with": lambda value: value.startswith(first),
        "in": lambda value: value in values,
        "not_in": lambda value: value not in values,
        "lt": lambda value: value < first,
        "lte": lambda value: value <= first,
        "gt": lambda value: value > first,
        "gte": lambda value: value >= first,
        "after": lambda value: value > first,
        "before": lambda value: value < first,
        "on": lambda value: _day(value) == _day(first),
        "between": lambda value: values[0] <= value <= values[1],
    }[operator]
    as_text = kind in ("str", "enum", "is")

    def test(obj: dict) -> bool:
        value = obj.get(name)
        if value is None:  # records without the attribute never match (as on Chargebee)
            return operator in ("is_not", "not_in")
        return compare(str(value) if as_text else value)

    return test


def _day(timestamp: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).date()
