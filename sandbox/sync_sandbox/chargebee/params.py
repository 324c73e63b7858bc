"""Chargebee's form encoding: bracket keys in, typed and validated values out.

`billing_address[city]=Berlin` is an object, `line_items[amount][0]=5` an array of objects
grouped by index (indices may be sparse), `active_resource_ids[0]=c1` an array of scalars,
`email[is]=a@b.c` a list filter. Each operation declares its params as `Field`s; anything
else is refused, so a misspelt param is an error rather than silently lost.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync_sandbox.chargebee.errors import blank, wrong_value

_KEY = re.compile(r"^([A-Za-z0-9_]+)((?:\[[A-Za-z0-9_]*\])*)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Group bracket keys: objects become dicts, indexed groups become lists (by index)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise wrong_value(key, "is not a valid parameter name")
        name, parts = match.group(1), re.findall(r"\[([^\]]*)\]", match.group(2))
        try:
            if not parts:
                out[name] = value
            elif len(parts) == 1:  # object member, filter operator or scalar array index
                out.setdefault(name, {})[_index_or_name(parts[0])] = value
            elif len(parts) == 2 and parts[1].isdigit():  # array of objects
                out.setdefault(name, {}).setdefault(int(parts[1]), {})[parts[0]] = value
            else:
                raise wrong_value(key, "nesting this deep is not supported")
        except (TypeError, AttributeError):  # the same name used as a scalar and a group
            raise wrong_value(key, "is given in two incompatible shapes") from None
    return {name: _lists(value) for name, value in out.items()}


def _index_or_name(part: str) -> int | str:
    return int(part) if part.isdigit() else part


def _lists(value: Any) -> Any:
    """A dict keyed by indices becomes the list of its values in index order."""
    if isinstance(value, dict) and value and all(isinstance(k, int) for k in value):
        return [value[index] for index in sorted(value)]
    return value


def parse_list_value(raw: str) -> list[str]:
    """`[a,b]`, `["a","b"]` (docs) and `['a', 'b']` (the Python SDK's repr) alike."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(raw)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list | tuple):
            return [str(item) for item in value]
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        return [item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip()]
    raise ValueError(raw)


def parse_bool(raw: Any, label: str) -> bool:
    """`true` or `false` in any case: the Python SDK sends `true`, a Python bool put straight
    into a query string (as singer-io's tap-chargebee does) arrives as `True`, and Chargebee
    reads both. Anything else is refused, never taken as false."""
    if not isinstance(raw, str):
        raise wrong_value(label, "must be a single value")
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise wrong_value(label, f"invalid boolean value {raw}; use true or false")
    return value == "true"


@dataclass(frozen=True)
class Field:
    """One param: `kind` is str, int, bool, ts (Unix seconds), json, obj (members in `sub`),
    objs (array of objects) or strs (array of strings)."""

    kind: str = "str"
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    email: bool = False
    minimum: int | None = None
    sub: Mapping[str, Field] = field(default_factory=dict)
    country: bool = False  # an ISO 3166-1 alpha-2 code (checked for its shape only)


def validate(
    given: Mapping[str, Any],
    spec: Mapping[str, Field],
    required: Iterable[str] = (),
    prefix: str = "",
    suffix: str = "",
) -> dict[str, Any]:
    """Typed values of `given` per `spec`; an empty value means None ("clear" on update)."""
    out: dict[str, Any] = {}
    for name, raw in given.items():
        label = f"{prefix}[{name}]{suffix}" if prefix else f"{name}{suffix}"
        if name not in spec:
            if name.startswith("cf_") and isinstance(raw, str):  # custom fields, any site
                out[name] = raw or None
                continue
            raise wrong_value(label, "is not a parameter of this operation")
        out[name] = _convert(raw, spec[name], label, name)
    for name in required:
        if out.get(name) in (None, [], {}):
            raise blank(f"{prefix}[{name}]{suffix}" if prefix else name)
    return out


def _convert(raw: Any, spec: Field, label: str, name: str) -> Any:
    if spec.kind == "obj":
        if not isinstance(raw, dict):
            raise wrong_value(label, "must be given as an object, e.g. " + f"{label}[field]")
        return validate(raw, spec.sub, prefix=name)
    if spec.kind == "objs":
        if not isinstance(raw, list) or not all(isinstance(row, dict) for row in raw):
            raise wrong_value(label, f"must be given as {label}[field][index]")
        return [validate(row, spec.sub, prefix=name, suffix=f"[{i}]") for i, row in enumerate(raw)]
    if spec.kind == "strs":
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise wrong_value(label, f"must be given as {label}[index]")
        return raw
    if not isinstance(raw, str):
        raise wrong_value(label, "must be a single value")
    if raw == "":
        return None
    if spec.kind in ("int", "ts"):
        try:
            number = int(raw)
        except ValueError:
            raise wrong_value(label, f"invalid integer value {raw}") from None
        if spec.minimum is not None and number < spec.minimum:
            raise wrong_value(label, f"cannot be less than {spec.minimum}")
        return number
    if spec.kind == "bool":
        return parse_bool(raw, label)
    if spec.kind == "json":
        return _json_param(raw, label)
    if spec.max_length and len(raw) > spec.max_length:
        raise wrong_value(label, f"cannot be more than {spec.max_length} characters.")
    if spec.choices and raw not in spec.choices:
        raise wrong_value(label, f"invalid value {raw}; allowed: {', '.join(spec.choices)}")
    if spec.email and not _EMAIL.match(raw):
        raise wrong_value(label, "invalid email format")
    if spec.country and not _COUNTRY.match(raw):
        raise wrong_value(label, f"invalid country code {raw}; use ISO 3166-1 alpha-2, e.g. DE")
    return raw


def _json_param(raw: str, label: str) -> Any:
    """Strict JSON, or the Python literal the Python SDK 3.29 sends for a dict."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise wrong_value(label, "invalid JSON") from None
    if not isinstance(value, dict | list):
        raise wrong_value(label, "must be a JSON object")
    return value


def s(max_length: int, *choices: str, email: bool = False) -> Field:
    """A string param (shorthand for the operation tables)."""
    return Field("str", max_length, tuple(choices), email)


INT, NONNEG, BOOL, TS, JSON = (
    Field("int"),
    Field("int", minimum=0),
    Field("bool"),
    Field("ts"),
    Field("json"),
)
