"""Chargebee counts time in Unix seconds; tap-chargebee's records carry RFC 3339 date-time
strings in UTC, the fields its schemas mark `format: date-time`, nested ones included."""

from __future__ import annotations

import datetime
import typing as t

#: Where a record's timestamps are, from its schema: a name maps to True (a timestamp), or to
#: the tree of an object's, or of each list element's, own timestamps.
Tree = dict[str, "bool | Tree"]


def date_time(seconds: int | float) -> str:
    """`1700000000` -> `2023-11-14T22:13:20+00:00`: one format, so text order is time order
    (the SDK compares bookmarks as they are)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def timestamp_tree(schema: t.Mapping[str, t.Any]) -> Tree:
    """The timestamps of an object schema; objects and lists without any are left out."""
    tree: Tree = {}
    for name, prop in schema.get("properties", {}).items():
        if prop.get("format") == "date-time":
            tree[name] = True
            continue
        inner = prop.get("items", prop)
        if "properties" in inner:
            subtree = timestamp_tree(inner)
            if subtree:
                tree[name] = subtree
    return tree


def to_date_times(record: dict, tree: Tree) -> dict:
    """The record with each timestamp of `tree` as date-time text (in place; also returned).
    A value that is not a number is left as it is."""
    for name, node in tree.items():
        value = record.get(name)
        if value is None:
            continue
        if node is True:
            if isinstance(value, int | float) and not isinstance(value, bool):
                record[name] = date_time(value)
        elif isinstance(node, dict):
            for element in value if isinstance(value, list) else [value]:
                if isinstance(element, dict):
                    to_date_times(element, node)
    return record
