"""Chargebee form parameters from a mapped record: encoding, content hashes, idempotency keys.

A record reaches the target already in Chargebee's shape (the stream maps did the renaming):
flat keys, some of them bracket keys such as `billing_address[city]` or `payments[amount][0]`
that are sent as they are. Lists of objects (`line_items`) are encoded here as Chargebee's
arrays of objects, `line_items[description][0]=...`. Every value becomes the string Chargebee
expects on the wire; `None` means "no value".
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sync_common.merge import SOURCE_RECORD

#: Fields a map adds to say which webshop record this is, and what to do; never sent (and
#: the webshop record itself, kept by the target beside it).
CONTROL_FIELDS = ("webshop_id", "webshop_version", "webshop_updated_at", "deleted", SOURCE_RECORD)

#: Parameters that are arrays of objects; a map may give them as a list or as a JSON string
#: (a list built inside a stream map is typed as a string by the SDK).
LIST_PARAMS = frozenset(
    {"line_items", "payments", "taxes", "order_line_items", "item_prices", "charges", "tiers"}
)

_BRACKET = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")

Params = dict[str, "str | None"]


def wire_value(value: Any) -> str | None:
    """The form-encoded text of one scalar: `true`/`false`, integers without a decimal point,
    timestamps as Unix seconds, JSON for objects (`meta_data`)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal | float):
        if value == int(value):
            return str(int(value))
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return str(int(value.timestamp()))
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def to_params(record: Mapping[str, Any]) -> Params:
    """The record's form parameters (control fields left out). `None` values are kept, so an
    update can tell "clear this" from "not mapped"; `encode` drops them for the wire."""
    params: Params = {}
    for key, value in record.items():
        if key in CONTROL_FIELDS:
            continue
        if key in LIST_PARAMS:
            rows = value
            if isinstance(rows, str):
                rows = json.loads(rows) if rows.strip() else []
            if rows is None:
                continue
            if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
                raise ValueError(f"{key} must be a list of objects")
            for index, row in enumerate(rows):
                for field, field_value in row.items():
                    params[f"{key}[{field}][{index}]"] = wire_value(field_value)
        elif isinstance(value, Mapping):  # an object passed through a map: billing_address
            for field, field_value in value.items():
                params[f"{key}[{field}]"] = wire_value(field_value)
        else:
            params[key] = wire_value(value)
    return params


def encode(params: Params, *, clear: Iterable[str] = ()) -> dict[str, str]:
    """What goes on the wire: values that are set, plus an empty value for each key of `clear`
    whose value is None (Chargebee reads `key=` as "clear this field")."""
    clearable = set(clear)
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is not None:
            out[key] = value
        elif key in clearable or _base(key) in clearable:
            out[key] = ""
    return out


def _base(key: str) -> str:
    """`billing_address[city]` -> `billing_address`; `name` -> `name`."""
    return key.split("[", 1)[0]


def as_fields(params: Params) -> dict[str, Any]:
    """The params as the merge's fields: the bracket keys of one object or list
    (`billing_address[city]`, `line_items[amount][0]`) form one field, a dict of those keys."""
    fields: dict[str, Any] = {}
    for key, value in params.items():
        name = _base(key)
        if name == key:
            fields[key] = value
        else:
            fields.setdefault(name, {})[key] = value
    return fields


def from_fields(fields: Mapping[str, Any]) -> Params:
    """`as_fields` undone."""
    params: Params = {}
    for name, value in fields.items():
        if isinstance(value, Mapping):
            params.update(value)
        else:
            params[name] = value
    return params


def select(params: Params, keys: Iterable[str]) -> Params:
    """The params whose key, or whose base name (before `[`), is one of `keys`."""
    wanted = set(keys)
    return {k: v for k, v in params.items() if k in wanted or _base(k) in wanted}


def drop(params: Params, keys: Iterable[str]) -> Params:
    unwanted = set(keys)
    return {k: v for k, v in params.items() if k not in unwanted and _base(k) not in unwanted}


def digest(value: Any, length: int = 32) -> str:
    """A short, stable SHA-256 hex digest of any JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def part_hash(params: Params) -> str:
    """Digest of the values that are set (None and absent are the same thing to Chargebee)."""
    return digest({k: v for k, v in params.items() if v is not None}, 16)


def composite_hash(parts: Mapping[str, str]) -> str:
    """One string holding a digest per part (`main=…;address=…`): equal strings mean "unchanged",
    and comparing parts tells which call an update needs."""
    return ";".join(f"{name}={value}" for name, value in sorted(parts.items()))


def split_hash(value: str | None) -> dict[str, str]:
    if not value or "=" not in value:
        return {}
    return dict(item.split("=", 1) for item in value.split(";") if "=" in item)


def idempotency_key(resource: str, operation: str, object_id: str, *content: Any) -> str:
    """`chargebee-idempotency-key` for one write: a readable prefix and a digest of everything
    that makes the write what it is. The digest covers the previous state (the link's hash,
    and the Chargebee version read) too, so A→B→A edits (B made in Chargebee, say) are not
    answered from its 30-minute replay cache, while a retry of the same write (same record,
    same previous state) is. ≤100 chars."""
    prefix = f"{resource}.{operation}.{object_id}"[:55]
    return f"{prefix}.{digest([resource, operation, object_id, *content], 40)}"


def remote_value(obj: Mapping[str, Any], key: str) -> Any:
    """The value of a form key in a Chargebee JSON object: `billing_address[city]` reads
    obj['billing_address']['city'], `line_items[amount][2]` reads obj['line_items'][2]['amount']."""
    match = _BRACKET.match(key)
    if not match:
        return obj.get(key)
    name = match.group(1)
    parts = re.findall(r"\[([^\[\]]*)\]", match.group(2))
    value: Any = obj.get(name)
    if len(parts) == 2 and parts[1].isdigit():  # array of objects: field first, then index
        field, index = parts[0], int(parts[1])
        if not isinstance(value, list) or index >= len(value):
            return None
        row = value[index]
        return row.get(field) if isinstance(row, Mapping) else None
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def held(remote: Mapping[str, Any] | None, keys: Iterable[str]) -> Params:
    """What a Chargebee object holds under each form key, as wire text."""
    return {key: wire_value(remote_value(remote or {}, key)) for key in keys}


def to_remote(params: Params) -> dict[str, Any]:
    """A Chargebee-shaped object holding the params (`held` undone): `billing_address[city]`
    -> {"billing_address": {"city": ...}}, `line_items[amount][0]` -> a list of objects."""
    obj: dict[str, Any] = {}
    for key, value in params.items():
        match = _BRACKET.match(key)
        if not match:
            obj[key] = value
            continue
        name, parts = match.group(1), re.findall(r"\[([^\[\]]*)\]", match.group(2))
        if len(parts) == 2 and parts[1].isdigit():
            rows = obj.setdefault(name, [])
            while len(rows) <= int(parts[1]):
                rows.append({})
            rows[int(parts[1])][parts[0]] = value
            continue
        node = obj.setdefault(name, {})
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return obj


def differences(params: Params, remote: Mapping[str, Any]) -> list[str]:
    """Keys whose value in Chargebee differs from the params (None, absent and "" are equal)."""
    different = []
    for key, value in params.items():
        theirs = wire_value(remote_value(remote, key))
        if (value or None) != (theirs or None):
            different.append(key)
    return different
