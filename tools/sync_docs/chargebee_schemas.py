"""tap-chargebee's stream schemas, `tap-chargebee/tap_chargebee/schemas/<stream>.json`, made
by `sync-docs` from the official Chargebee Python SDK's response models (the `chargebee`
distribution, a development dependency): each model's dataclass fields and their Python types
(`typing.get_type_hints`), nested models and lists of them included. The tap reads the
checked-in files; it never imports the SDK.

The SDK types timestamps as `int`, like any other integer. Which integers are timestamps is
decided here, in one place: those whose name ends in `_at`, and those in
`TIMESTAMPS_NOT_NAMED_AT` (checked against the timestamp attributes of the Chargebee Java SDK,
which types them `Timestamp`, for the four streams' models). An integer whose name sounds like
a moment (`date`, `time`, `_on`, `_from`, `_to`) but is in neither list nor in
`NOT_TIMESTAMPS` stops the generator: a new SDK's new attribute is decided, not guessed. A
timestamp is a JSON-schema `date-time` string; tap-chargebee converts Chargebee's Unix
seconds.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import typing
from pathlib import Path
from typing import Any

#: Each tap-chargebee stream and the SDK's response model of the object its list returns.
MODELS = {
    "customers": ("chargebee.models.customer.responses", "CustomerResponse"),
    "items": ("chargebee.models.item.responses", "ItemResponse"),
    "item_prices": ("chargebee.models.item_price.responses", "ItemPriceResponse"),
    "orders": ("chargebee.models.order.responses", "OrderResponse"),
}
#: Timestamps (Unix seconds) whose name does not end in `_at`.
TIMESTAMPS_NOT_NAMED_AT = frozenset({
    "vat_number_validated_time", "order_date", "shipping_date", "shipping_cut_off_date",
    "paid_on", "date_from", "date_to",
})  # fmt: skip
#: Integers whose name sounds like a moment but which are not one.
NOT_TIMESTAMPS = frozenset({
    "billing_date",  # the day of the month a customer is billed on (1-31)
    "billing_month",  # the month of the year (1-12)
})  # fmt: skip
_MOMENT_LIKE = re.compile(r"date|time|_on$|_from$|_to$")
#: The SDK's own field on every model: the response as received, not an attribute.
SDK_ONLY = frozenset({"raw_data"})
#: Chargebee's type tag on every object (`"object": "customer"`, `"order_line_item"`): the SDK
#: picks its model by it and keeps no field for it; it is an attribute of the JSON all the same.
OBJECT_TAG = {"object": {"type": ["string", "null"]}}
SCHEMA_DIR = Path("tap-chargebee") / "tap_chargebee" / "schemas"


class UndecidedAttribute(ValueError):
    """An integer attribute that may or may not be a timestamp: add it to one of the lists."""


def is_timestamp(path: str, python_type: Any) -> bool:
    """Whether the attribute at `path` (`order_line_items[].amount`) holds Unix seconds."""
    if python_type is not int:
        return False
    name = path.rsplit(".", 1)[-1]
    if name.endswith("_at") or name in TIMESTAMPS_NOT_NAMED_AT:
        return True
    if _MOMENT_LIKE.search(name) and name not in NOT_TIMESTAMPS:
        raise UndecidedAttribute(
            f"{path}: an int whose name sounds like a moment; add it to TIMESTAMPS_NOT_NAMED_AT "
            "or NOT_TIMESTAMPS in tools/sync_docs/chargebee_schemas.py"
        )
    return False


def nullable(type_: str) -> list[str]:
    return [type_, "null"]


def model_schema(model: type, path: str = "") -> dict[str, Any]:
    """The JSON schema of an SDK response model (a dataclass): one property per field."""
    hints = typing.get_type_hints(model)
    properties = {}
    for field in dataclasses.fields(model):
        if field.name not in SDK_ONLY and field.name not in OBJECT_TAG:
            name = f"{path}.{field.name}" if path else field.name
            properties[field.name] = type_schema(hints[field.name], name)
    return {"type": nullable("object"), "properties": {**properties, **OBJECT_TAG}}


def type_schema(python_type: Any, path: str) -> dict[str, Any]:
    """The JSON schema of one field's Python type; every value may be null (absent)."""
    if dataclasses.is_dataclass(python_type) and isinstance(python_type, type):
        return model_schema(python_type, path)
    origin, args = typing.get_origin(python_type), typing.get_args(python_type)
    if origin is list:
        items = type_schema(args[0], f"{path}[]")
        items["type"] = items["type"][0]  # an element of a list is never null
        return {"type": nullable("array"), "items": items}
    if origin is dict:
        return {"type": nullable("object")}  # free-form JSON (meta_data)
    if is_timestamp(path, python_type):
        return {"type": nullable("string"), "format": "date-time"}
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if python_type not in simple:
        raise TypeError(f"{path}: no JSON-schema type for the SDK's {python_type!r}")
    return {"type": nullable(simple[python_type])}


def stream_schema(stream: str) -> dict[str, Any]:
    module, name = MODELS[stream]
    model = getattr(importlib.import_module(module), name)
    schema = model_schema(model)
    schema["properties"]["id"] = {"type": "string"}  # the primary key is always there
    version = importlib.metadata.version("chargebee")
    return {
        "$comment": f"Generated by `make docs` (sync-docs) from the Chargebee Python SDK "
        f"{version}'s {name}: do not edit.",
        "type": "object",
        "properties": schema["properties"],
        "required": ["id"],
    }


def render(stream: str) -> str:
    return json.dumps(stream_schema(stream), indent=2) + "\n"


def documents(root: Path) -> dict[Path, str]:
    """Each stream's schema file under the checkout `root`, as it should be now."""
    return {root / SCHEMA_DIR / f"{stream}.json": render(stream) for stream in MODELS}
