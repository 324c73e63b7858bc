"""The webshop's rules, shared by the HTTP API and the data generator: validation against the
OpenAPI contract, computed fields, uniqueness, versions and soft deletes."""

from __future__ import annotations

import datetime
import re
from importlib import resources
from typing import Any

import jsonschema
import yaml

from sync_sandbox.customwebshop.store import Store, format_timestamp, parse_timestamp

CONTRACT = yaml.safe_load(
    (resources.files("sync_common") / "customwebshop-openapi.yaml").read_text()
)
SCHEMA_NAMES = {"customers": "Customer", "products": "Product", "orders": "Order"}
TIMESTAMP_FIELDS = ("placed_at", "paid_at", "shipped_at", "delivered_at", "cancelled_at")


class ShopError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _validator(name: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": CONTRACT["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


VALIDATORS = {
    (resource, kind): _validator(name + kind)
    for resource, name in SCHEMA_NAMES.items()
    for kind in ("Create", "Change")
}


def validate(resource: str, body: Any, kind: str) -> None:
    """422 naming the first offending field (dotted, with [i] for list positions)."""
    if not isinstance(body, dict):
        raise ShopError(400, "bad_request", "the body must be a JSON object")
    errors = sorted(
        VALIDATORS[(resource, kind)].iter_errors(body), key=lambda e: list(map(str, e.path))
    )
    if not errors:
        for name in TIMESTAMP_FIELDS:  # jsonschema does not check date-time without extras
            if body.get(name) is not None:
                try:
                    parse_timestamp(body[name])
                except (TypeError, ValueError):
                    raise ShopError(
                        422, "validation_error", "not an RFC 3339 date-time with a time zone", name
                    ) from None
        return
    error = errors[0]
    path = list(error.path)
    message = error.message
    if error.validator in ("required", "additionalProperties"):
        named = re.findall(r"'([^']+)'", error.message)
        if named:
            path.append(named[0])
        if error.validator == "additionalProperties":
            message = f"{named[0] if named else 'a field'} is unknown or read-only"
    field = ""
    for part in path:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else part)
    raise ShopError(422, "validation_error", message, field or None)


class Shop:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, resource: str, id_: int) -> dict:
        with self.store.lock:  # one SQLite connection shared by the server's threads
            record = self.store.get(resource, id_)
        if record is None:
            raise ShopError(404, "not_found", f"no {resource[:-1]} with id {id_}")
        return record

    def create(self, resource: str, body: dict, at: datetime.datetime | None = None) -> dict:
        validate(resource, body, "Create")
        with self.store.lock:
            id_ = self.store.next_id(resource)
            now = self.store.stamp(at)
            record = {"id": id_, **self._defaults(resource, id_, now), **body}
            record = self._complete(resource, record)
            record.update(created_at=now, updated_at=now, deleted_at=None, version=1)
            return self.store.put(resource, self._ordered(resource, record))

    def change(
        self,
        resource: str,
        id_: int,
        body: dict,
        if_match: int | None = None,
        at: datetime.datetime | None = None,
    ) -> dict:
        validate(resource, body, "Change")
        with self.store.lock:
            record = self._current(resource, id_, if_match)
            if record["deleted_at"]:
                raise ShopError(409, "conflict", f"{resource[:-1]} {id_} is deleted")
            record = self._complete(resource, {**record, **body}, changed=set(body))
            record.update(updated_at=self.store.stamp(at), version=record["version"] + 1)
            return self.store.put(resource, record)

    def delete(self, resource: str, id_: int, if_match: int | None = None) -> dict:
        with self.store.lock:
            record = self._current(resource, id_, if_match)
            if record["deleted_at"]:
                return record  # deleting twice changes nothing
            now = self.store.stamp()
            record.update(deleted_at=now, updated_at=now, version=record["version"] + 1)
            return self.store.put(resource, record)

    def _current(self, resource: str, id_: int, if_match: int | None) -> dict:
        record = self.get(resource, id_)
        if if_match is not None and if_match != record["version"]:
            raise ShopError(
                412,
                "version_mismatch",
                f"{resource[:-1]} {id_} is at version {record['version']}, not {if_match}",
            )
        return record

    def _defaults(self, resource: str, id_: int, now: str) -> dict:
        if resource == "customers":
            return {"last_name": None, "company": None, "phone": None, "billing_address": None}
        if resource == "products":
            return {"description": None, "active": True, "shippable": True, "weight_grams": None}
        return {
            "number": f"WS-{id_:06d}",
            "status": "pending",
            "shipping_total": 0,
            "tax_total": 0,
            "shipping_address": None,
            "placed_at": now,
            **dict.fromkeys(TIMESTAMP_FIELDS[1:]),
            **dict.fromkeys(("carrier", "tracking_number", "tracking_url", "note")),
        }

    def _complete(self, resource: str, record: dict, changed: set[str] | None = None) -> dict:
        """Uniqueness and references; an order's copied and computed fields."""

        def touched(name: str) -> bool:
            return changed is None or name in changed

        for name, schema in (("billing_address", "BillingAddress"),
                             ("shipping_address", "ShippingAddress")):  # fmt: skip
            if record.get(name):  # every field present, null when not given
                fields = CONTRACT["components"]["schemas"][schema]["properties"]
                record[name] = {field: record[name].get(field) for field in fields}
        if resource == "products" and touched("sku"):
            self._unique(resource, record, "sku")
        if resource != "orders":
            return record
        if touched("number"):
            self._unique(resource, record, "number")
        if touched("customer_id"):
            customer = self.store.get("customers", record["customer_id"])
            if customer is None or customer["deleted_at"]:
                raise ShopError(422, "validation_error", "no such customer", "customer_id")
        for name in TIMESTAMP_FIELDS:
            if touched(name) and record.get(name):
                record[name] = format_timestamp(parse_timestamp(record[name]))
        if touched("line_items"):
            lines = []
            for i, line in enumerate(record["line_items"], start=1):
                product = self.store.get("products", line["product_id"])
                if product is None or product["deleted_at"]:
                    raise ShopError(
                        422,
                        "validation_error",
                        "no such product",
                        f"line_items[{i - 1}].product_id",
                    )
                unit_price = line.get("unit_price", product["price"])
                lines.append({
                    "id": i, "product_id": product["id"], "sku": product["sku"],
                    "name": product["name"], "quantity": line["quantity"],
                    "unit_price": unit_price, "amount": unit_price * line["quantity"],
                })  # fmt: skip
            record["line_items"] = lines
        record["subtotal"] = sum(line["amount"] for line in record["line_items"])
        record["total"] = record["subtotal"] + record["shipping_total"] + record["tax_total"]
        return record

    def _unique(self, resource: str, record: dict, field: str) -> None:
        for other in self.store.find(resource, field, record[field]):
            if other["id"] != record["id"] and not other["deleted_at"]:
                raise ShopError(409, "conflict", f"{field} {record[field]!r} is taken", field)

    @staticmethod
    def _ordered(resource: str, record: dict) -> dict:
        """Fields in the contract's order, so every answer reads alike."""
        names = CONTRACT["components"]["schemas"][SCHEMA_NAMES[resource]]["properties"]
        return {name: record.get(name) for name in names}
