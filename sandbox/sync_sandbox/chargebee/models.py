"""The emulated Chargebee site's state and Chargebee's rules, with no HTTP in sight (the
HTTP layer, `responses.py`, parses each request and renders what this returns): client-chosen
ids, parents before children, business-entity context and transfers, idempotency keys,
`resource_version`/`updated_at` renewed on every write. Each operation takes the call's
parsed params and its business-entity header, returns the answer's JSON object, and raises
`ChargebeeError` for a refusal. See docs/chargebee-emulator.md for what is simplified."""

from __future__ import annotations

import datetime
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sync_sandbox.chargebee import operations as ops
from sync_sandbox.chargebee.errors import (
    ChargebeeError,
    blank,
    duplicate,
    invalid_state,
    not_found,
    wrong_value,
)
from sync_sandbox.chargebee.listing import list_page
from sync_sandbox.chargebee.params import BOOL, parse_bool, s, validate
from sync_sandbox.chargebee.store import Store

#: The headers whose values reach the state layer; their names appear in its error params.
ENTITY_HEADER = "chargebee-business-entity-id"
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
_ID = re.compile(r"^[A-Za-z0-9_.@-]+$")
TRANSFERS_PER_YEAR = 3


@dataclass(frozen=True)
class Answer:
    """A write's answer: HTTP status, JSON text, and whether it is a stored one replayed."""

    status: int
    body: str
    replayed: bool = False


def _clean(obj: dict) -> dict:
    """As Chargebee answers: attributes without a value are left out, internals are hidden."""
    out = {}
    for key, value in obj.items():
        if value is None or key.startswith("_"):
            continue
        if isinstance(value, dict) and key not in ("meta_data", "metadata"):
            value = _clean(value)
        elif isinstance(value, list):
            value = [_clean(v) if isinstance(v, dict) else v for v in value]
        out[key] = value
    return out


def _site_level(given: Any) -> bool:
    """`include_site_level_resources[is]=true|false`, a boolean filter."""
    if given is None:
        return False
    if not isinstance(given, dict) or list(given) != ["is"]:
        raise wrong_value(
            "include_site_level_resources", "is given as include_site_level_resources[is]=true"
        )
    return parse_bool(given["is"], "include_site_level_resources[is]")


def _address(given: dict | None, kind: str) -> dict | None:
    return {**given, "object": kind} if given else None


def _check_id(id_: str, param: str = "id") -> str:
    if not _ID.match(id_):
        raise wrong_value(param, "may only contain letters, digits and _ . @ -")
    return id_


def _new_id(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


class ChargebeeBackend:
    """One emulated site: its store, its business entities (the first is the default one, where
    a customer created without any entity lands) and its name."""

    def __init__(self, store: Store, business_entities: list[str], site: str) -> None:
        self.store = store
        self.entities = business_entities
        self.site = site

    # ---------------------------------------------------------------- plumbing

    def write(self, key: str | None, fingerprint: str, operation: Callable[[], dict]) -> Answer:
        """Run a write under the store lock, honouring the idempotency key: the same key with
        the same request (`fingerprint`) within 30 minutes replays the stored answer (2xx or
        4xx); the same key with another request is refused."""
        if key is not None and not 0 < len(key) <= 100:
            raise wrong_value(IDEMPOTENCY_HEADER, "must be 1 to 100 characters")
        with self.store.lock:
            stored = self.store.idempotency.replay(key) if key else None
            if stored is not None:
                if stored[0] != fingerprint:
                    raise ChargebeeError(
                        409,
                        "invalid_request",
                        "The idempotency key was already used with different parameters",
                        IDEMPOTENCY_HEADER,
                    )
                return Answer(stored[1], stored[2], replayed=True)
            try:
                status, body = 200, operation()
            except ChargebeeError as error:
                status, body = error.status, error.body()
            text = json.dumps(body)
            if key and status < 500:
                self.store.idempotency.remember(key, fingerprint, status, text)
        return Answer(status, text)

    def context_entity(self, entity: str | None) -> str | None:
        """The business entity a call is made in (its header), checked to exist."""
        if entity is not None and entity not in self.entities:
            raise not_found("business_entity", entity, ENTITY_HEADER)
        return entity

    def entity_for_create(
        self, entity: str | None, given: str | None, site_default: str | None
    ) -> str | None:
        """Param and header must agree; neither gives `site_default`."""
        header = self.context_entity(entity)
        if given is not None and given not in self.entities:
            raise not_found("business_entity", given, "business_entity_id")
        if given and header and given != header:
            raise wrong_value("business_entity_id", "does not match the business entity header")
        return given or header or site_default

    def live(self, entity: str | None, kind: str, id_: str, param: str | None = None) -> dict:
        """The object, unless it does not exist, is deleted, or lies outside the context."""
        obj = self.store.get(kind, id_)
        context = self.context_entity(entity)
        if (
            obj is None
            or obj.get("deleted")
            or (context and obj.get("business_entity_id") not in (None, context))
        ):
            raise not_found(kind, id_, param)
        return obj

    def retrieve(self, kind: str, id_: str, entity: str | None) -> dict:
        with self.store.lock:
            return {kind: self.render(kind, self.live(entity, kind, id_))}

    def render(self, kind: str, obj: dict) -> dict:
        if kind == "invoice":  # its orders, as Chargebee lists them on the invoice
            obj = {**obj, "linked_orders": [
                {key: order.get(key) for key in ("id", "document_number", "status", "order_type",
                 "reference_id", "fulfillment_status", "batch_id", "created_at")}
                for order in self.store.where("order", "invoice_id", obj["id"])
                if not order.get("deleted")
            ]}  # fmt: skip
        return _clean(obj)

    def save(self, kind: str, obj: dict) -> dict:
        return {kind: self.render(kind, self.store.save(kind, obj))}

    def listing(
        self,
        params: dict,
        entity: str | None,
        kind: str,
        filters: dict[str, str],
        sorts: tuple[str, ...] = (),
        *,
        deletable: bool = False,
        site_level: bool = False,
        visible: Callable[[dict], bool] = lambda obj: not obj.get("deleted"),
    ) -> dict:
        """A list: `include_deleted` only where Chargebee has it (elsewhere it is an unknown
        param, refused), entity scoping by the header."""
        extra = {"include_site_level_resources"} if site_level else set()
        include_deleted = False
        if deletable:
            extra.add("include_deleted")
            given = params.get("include_deleted")  # empty: null, the default
            include_deleted = given not in (None, "") and parse_bool(given, "include_deleted")
        with_site = site_level and _site_level(params.get("include_site_level_resources"))
        with self.store.lock:
            context = self.context_entity(entity)
            objects = [
                obj
                for obj in self.store.all(kind)
                if (include_deleted or visible(obj))
                and (
                    context is None
                    or obj.get("business_entity_id") == context
                    or (with_site and obj.get("business_entity_id") is None)
                )
            ]
            page, next_offset = list_page(objects, params, filters, sorts, extra=extra)
            body: dict[str, Any] = {"list": [{kind: self.render(kind, obj)} for obj in page]}
        if next_offset:
            body["next_offset"] = next_offset
        return body

    # ---------------------------------------------------------------- site

    def list_configurations(self, params: dict, entity: str | None) -> dict:
        """The site's configuration, as Chargebee lists it: a client (singer-io's tap-chargebee)
        reads `product_catalog_version` to choose between plans/addons and items."""
        validate(params, {})
        configuration = {
            "domain": self.site,
            "product_catalog_version": "v2",
            "chargebee_response_schema_type": "items",
            "object": "configuration",
        }
        return {"configurations": [configuration]}

    # ---------------------------------------------------------------- customers

    def create_customer(self, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.CUSTOMER_CREATE)
        id_ = _check_id(p.pop("id", None) or _new_id())
        if self.store.get("customer", id_):
            raise duplicate("id", id_)
        now = self.store.now()
        customer = {
            "id": id_,
            "auto_collection": "on",
            "net_term_days": 0,
            "allow_direct_debit": False,
            "taxability": "taxable",
            "pii_cleared": "active",
            "channel": "web",
            "card_status": "no_card",
            "promotional_credits": 0,
            "refundable_credits": 0,
            "excess_payments": 0,
            "unbilled_charges": 0,
            **p,
            "billing_address": _address(p.get("billing_address"), "billing_address"),
            "business_entity_id": self.entity_for_create(
                entity, p.get("business_entity_id"), self.entities[0]
            ),
            "created_at": now,
            "deleted": False,
            "object": "customer",
        }
        return self.save("customer", customer)

    def update_customer(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.CUSTOMER_UPDATE)
        customer = self.live(entity, "customer", id_)
        customer.update(p)  # a param given empty clears the attribute (None is left out)
        return self.save("customer", customer)

    def update_billing_info(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.CUSTOMER_BILLING)
        customer = self.live(entity, "customer", id_)
        for name in ops.CUSTOMER_BILLING:  # a full replace: what is left out is cleared
            customer[name] = p.get(name)
        customer["billing_address"] = _address(p.get("billing_address"), "billing_address")
        return self.save("customer", customer)

    def delete_customer(self, id_: str, params: dict, entity: str | None) -> dict:
        validate(params, {"delete_payment_method": BOOL})
        customer = self.live(entity, "customer", id_)
        customer["deleted"] = True
        for invoice in self.store.all("invoice"):  # deleting a customer cascades
            if invoice.get("customer_id") == id_ and not invoice.get("deleted"):
                self.store.save("invoice", {**invoice, "deleted": True})
        return self.save("customer", customer)

    def list_customers(self, params: dict, entity: str | None) -> dict:
        return self.listing(
            params,
            entity,
            "customer",
            ops.CUSTOMER_FILTERS,
            ("created_at", "updated_at"),
            deletable=True,
        )

    def transfer(self, params: dict, entity: str | None) -> dict:
        if entity:
            raise ChargebeeError(
                400, "invalid_request", "A transfer cannot be made in a business entity context"
            )
        p = validate(params, ops.TRANSFER, ops.TRANSFER_REQUIRED)
        count = len(p["active_resource_ids"])
        for name in ops.TRANSFER:
            if name in p and len(p[name]) != count:
                raise wrong_value(name, "must have one entry per active_resource_ids entry")
        transfers = []
        for i, id_ in enumerate(p["active_resource_ids"]):
            if p["resource_types"][i] != "customer":
                raise wrong_value(f"resource_types[{i}]", "only customer is supported")
            if p["reason_codes"][i] != "correction":
                raise wrong_value(f"reason_codes[{i}]", "allowed: correction")
            customer = self.live(entity, "customer", id_, f"active_resource_ids[{i}]")
            source = customer["business_entity_id"]
            destination = p["destination_business_entity_ids"][i]
            if destination not in self.entities:
                raise not_found(
                    "business_entity", destination, f"destination_business_entity_ids[{i}]"
                )
            if "source_business_entity_ids" in p and p["source_business_entity_ids"][i] != source:
                raise wrong_value(
                    f"source_business_entity_ids[{i}]", f"the customer is in {source}"
                )
            if destination == source:
                raise invalid_state(f"customer {id_} is already in business entity {source}")
            year = [
                t
                for t in self.store.all("business_entity_transfer")
                if t["active_resource_id"] == id_ and _same_year(t["created_at"], self.store.now())
            ]
            if len(year) >= TRANSFERS_PER_YEAR:
                raise invalid_state(f"customer {id_} was transferred {len(year)} times this year")
            # The customer is copied: the active copy keeps the id, the old one is deprecated
            # under a new id and points to the active one.
            deprecated = {**customer, "id": _new_id("dep_"), "active_id": id_}
            self.store.save("customer", deprecated)
            customer["business_entity_id"] = destination
            self.store.save("customer", customer)
            transfer = {
                "id": _new_id("bet_"),
                "resource_type": "customer",
                "resource_id": deprecated["id"],
                "active_resource_id": id_,
                "destination_business_entity_id": destination,
                "source_business_entity_id": source,
                "reason_code": "correction",
                "created_at": self.store.now(),
                "object": "business_entity_transfer",
            }
            transfers.append(self.store.save("business_entity_transfer", transfer, touch=False))
        return {"business_entity_transfer": _clean(transfers[0])}

    def list_transfers(self, params: dict, entity: str | None) -> dict:
        return self.listing(
            params, entity, "business_entity_transfer", ops.TRANSFER_FILTERS, ("created_at",)
        )

    # ---------------------------------------------------------------- catalog

    def create_family(self, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.FAMILY_CREATE, ("id", "name"))
        _check_id(p["id"])
        self._unused("item_family", p["id"], p["name"])
        family = {
            **p,
            "status": "active",
            "channel": "web",
            "business_entity_id": self.entity_for_create(entity, p.get("business_entity_id"), None),
            "deleted": False,
            "object": "item_family",
        }
        return self.save("item_family", family)

    def update_family(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.FAMILY_UPDATE)
        family = self.live(entity, "item_family", id_)
        if p.get("name") and p["name"] != family["name"]:
            self._unused("item_family", None, p["name"])
        family.update(p)
        if not family.get("name"):
            raise blank("name")
        return self.save("item_family", family)

    def delete_family(self, id_: str, entity: str | None) -> dict:
        family = self.live(entity, "item_family", id_)
        if any(i["item_family_id"] == id_ and not i.get("deleted") for i in self.store.all("item")):
            raise invalid_state(f"item family {id_} still has items")
        family.update(status="deleted", deleted=True)
        return self.save("item_family", family)

    def list_families(self, params: dict, entity: str | None) -> dict:
        return self.listing(params, entity, "item_family", ops.FAMILY_FILTERS, site_level=True)

    def create_item(self, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.ITEM_CREATE, ("id", "name", "type", "item_family_id"))
        _check_id(p["id"])
        self._unused("item", p["id"], p["name"])
        self.live(entity, "item_family", p["item_family_id"], "item_family_id")
        item = {
            "is_shippable": False,
            "is_giftable": False,
            "enabled_for_checkout": True,
            "enabled_in_portal": True,
            "item_applicability": "all",
            "metered": False,
            "external_name": p["name"],
            **p,
            "status": "active",
            "channel": "web",
            "business_entity_id": self.entity_for_create(entity, p.get("business_entity_id"), None),
            "deleted": False,
            "object": "item",
        }
        return self.save("item", item)

    def update_item(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.ITEM_UPDATE)
        item = self.live(entity, "item", id_)
        if p.get("name") and p["name"] != item["name"]:
            self._unused("item", None, p["name"])
        if p.get("item_family_id"):
            self.live(entity, "item_family", p["item_family_id"], "item_family_id")
        self._set_status(item, p)
        item.update(p)
        for required in ("name", "item_family_id"):
            if not item.get(required):
                raise blank(required)
        return self.save("item", item)

    def delete_item(self, id_: str, entity: str | None) -> dict:
        item = self.live(entity, "item", id_)
        if any(p["item_id"] == id_ and p["status"] in ("active", "archived")
               for p in self.store.all("item_price")):  # fmt: skip
            raise invalid_state(f"item {id_} still has active or archived item prices")
        item.update(status="deleted", deleted=True)
        return self.save("item", item)

    def list_items(self, params: dict, entity: str | None) -> dict:
        return self._status_listing(params, entity, "item", ops.ITEM_FILTERS)

    def create_price(self, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.PRICE_CREATE, ("id", "name", "item_id", "currency_code"))
        _check_id(p["id"])
        self._unused("item_price", p["id"], p["name"])
        item = self.live(entity, "item", p["item_id"], "item_id")
        if item["status"] != "active":
            raise invalid_state(f"item {item['id']} is {item['status']}")
        price = {
            "pricing_model": "flat_fee",
            "price": 0,
            "is_taxable": True,
            "free_quantity": 0,
            "external_name": p["name"],
            **p,
            "item_family_id": item["item_family_id"],
            "item_type": item["type"],
            "status": "active",
            "channel": "web",
            "business_entity_id": self.entity_for_create(entity, p.get("business_entity_id"), None),
            "created_at": self.store.now(),
            "deleted": False,
            "object": "item_price",
        }
        return self.save("item_price", price)

    def update_price(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.PRICE_UPDATE)
        price = self.live(entity, "item_price", id_)
        if p.get("name") and p["name"] != price["name"]:
            self._unused("item_price", None, p["name"])
        self._set_status(price, p)
        price.update(p)
        for required in ("name", "currency_code"):
            if not price.get(required):
                raise blank(required)
        return self.save("item_price", price)

    def delete_price(self, id_: str, entity: str | None) -> dict:
        price = self.live(entity, "item_price", id_)
        used = any(line.get("entity_id") == id_ for invoice in self.store.all("invoice")
                   for line in invoice["line_items"])  # fmt: skip
        # A price already invoiced is kept, archived; otherwise it is deleted.
        price.update(status="archived" if used else "deleted", deleted=not used)
        if used:
            price["archived_at"] = self.store.now()
        return self.save("item_price", price)

    def list_prices(self, params: dict, entity: str | None) -> dict:
        return self._status_listing(params, entity, "item_price", ops.PRICE_FILTERS)

    def _status_listing(
        self, params: dict, entity: str | None, kind: str, filters: dict[str, str]
    ) -> dict:
        """Items and prices have no include_deleted: deleted ones show with a status filter."""
        status = params.get("status")
        by_status = isinstance(status, dict) and "deleted" in str(status)
        return self.listing(
            params,
            entity,
            kind,
            filters,
            ("name", "id", "updated_at"),
            site_level=True,
            visible=lambda obj: by_status or not obj.get("deleted"),
        )

    def _unused(self, kind: str, id_: str | None, name: str) -> None:
        """Ids and names are unique among live records (a deleted one's may be reused)."""
        existing = self.store.get(kind, id_) if id_ is not None else None
        if id_ is not None and existing is not None and not existing.get("deleted"):
            raise duplicate("id", id_)
        if any(not obj.get("deleted") for obj in self.store.where(kind, "name", name)):
            raise duplicate("name", name)

    def _set_status(self, obj: dict, p: dict) -> None:
        if p.get("status") == "archived" and obj["status"] != "archived":
            obj["archived_at"] = self.store.now()
        elif p.get("status") == "active":
            obj.pop("archived_at", None)
        elif "status" in p and p["status"] is None:
            raise blank("status")

    # ---------------------------------------------------------------- invoices

    def import_invoice(self, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.IMPORT_INVOICE, ("id", "date", "total", "currency_code"))
        _check_id(p["id"])
        if self.store.get("invoice", p["id"]):
            raise duplicate("id", p["id"])
        if not p.get("line_items"):
            raise blank("line_items[description][0]")
        if not p.get("customer_id"):
            raise blank("customer_id")
        customer = self.live(entity, "customer", p["customer_id"], "customer_id")
        lines, sub_total, tax = [], 0, 0
        for i, line in enumerate(p["line_items"]):
            lines.append(self._invoice_line(line, i, p["currency_code"], customer["id"]))
            sub_total += lines[-1]["amount"]
            tax += lines[-1]["tax_amount"]
        discounts = sum(d.get("amount") or 0 for d in p.get("discounts", []))
        expected = sub_total + tax - discounts + (p.get("round_off") or 0)
        if p["total"] != expected:
            raise wrong_value(
                "total", f"{p['total']} does not match the lines, taxes and discounts ({expected})"
            )
        payments = []
        for i, payment in enumerate(p.get("payments", [])):
            for name in ("amount", "payment_method"):
                if payment.get(name) is None:
                    raise blank(f"payments[{name}][{i}]")
            payments.append({
                "txn_id": payment.get("id") or _new_id("txn_"),
                "applied_amount": payment["amount"],
                "applied_at": payment.get("date") or p["date"],
                "txn_status": "success",
                "txn_date": payment.get("date") or p["date"],
                "txn_amount": payment["amount"],
            })  # fmt: skip
        paid = sum(payment["applied_amount"] for payment in payments)
        last_payment = max((payment["txn_date"] for payment in payments), default=None)
        status = p.get("status") or ("paid" if paid >= p["total"] else "payment_due")
        invoice = {
            "id": p["id"],
            "customer_id": customer["id"],
            "recurring": False,
            "status": status,
            "price_type": p.get("price_type") or "tax_exclusive",
            "date": p["date"],
            "due_date": p.get("due_date") or p["date"],
            "net_term_days": p.get("net_term_days") or 0,
            "exchange_rate": 1.0,
            "currency_code": p["currency_code"],
            "total": p["total"],
            "amount_paid": paid,
            "amount_adjusted": 0,
            "write_off_amount": 0,
            "credits_applied": 0,
            "amount_due": max(p["total"] - paid, 0),
            "paid_at": p.get("paid_at") or last_payment if status == "paid" else None,
            "voided_at": p.get("voided_at"),
            "po_number": p.get("po_number"),
            "round_off_amount": p.get("round_off") or 0,
            "first_invoice": False,
            "has_advance_charges": False,
            "term_finalized": True,
            "is_gifted": False,
            "sub_total": sub_total,
            "tax": tax,
            "line_items": lines,
            "discounts": p.get("discounts"),
            "taxes": p.get("taxes"),
            "notes": p.get("notes"),
            "linked_payments": payments,
            "billing_address": _address(p.get("billing_address"), "billing_address"),
            "shipping_address": _address(p.get("shipping_address"), "shipping_address"),
            "business_entity_id": customer["business_entity_id"],
            "deleted": False,
            "object": "invoice",
        }
        return self.save("invoice", invoice)

    def _invoice_line(self, line: dict, i: int, currency: str, customer_id: str) -> dict:
        if not line.get("description"):
            raise blank(f"line_items[description][{i}]")
        entity_type = line.get("entity_type") or "adhoc"
        if entity_type in ops.ITEM_PRICE_ENTITIES:
            param = f"line_items[entity_id][{i}]"
            if not line.get("entity_id"):
                raise blank(param)
            price = self.store.get("item_price", line["entity_id"])
            if price is None or price["status"] == "deleted":
                raise not_found("item_price", line["entity_id"], param)
            if price["currency_code"] != currency:
                raise wrong_value(
                    param, f"item price is in {price['currency_code']}, not {currency}"
                )
        quantity = line.get("quantity") or 1
        unit_amount = line.get("unit_amount")
        amount = line.get("amount")
        if amount is None:
            amount = quantity * (unit_amount or 0)
        if unit_amount is None:
            unit_amount = amount // quantity
        tax = sum(line.get(f"tax{n}_amount") or 0 for n in range(1, 11))
        return {
            "id": line.get("id") or _new_id("li_"),
            "date_from": line.get("date_from"),
            "date_to": line.get("date_to"),
            "unit_amount": unit_amount,
            "quantity": quantity,
            "amount": amount,
            "pricing_model": "flat_fee",
            "is_taxed": tax > 0,
            "tax_amount": tax,
            "customer_id": customer_id,
            "description": line["description"],
            "entity_type": entity_type,
            "entity_id": line.get("entity_id"),
            "discount_amount": 0,
            "item_level_discount_amount": 0,
            "object": "line_item",
        }

    def delete_invoice(self, id_: str, params: dict, entity: str | None) -> dict:
        validate(params, {"comment": s(300)})
        invoice = self.live(entity, "invoice", id_)
        invoice["deleted"] = True
        for order in self.store.all("order"):  # its orders hang off it: they go too
            if order["invoice_id"] == id_ and not order.get("deleted"):
                self.store.save("order", {**order, "deleted": True})
        return self.save("invoice", invoice)

    def list_invoices(self, params: dict, entity: str | None) -> dict:
        return self.listing(
            params, entity, "invoice", ops.INVOICE_FILTERS, ("date", "updated_at"), deletable=True
        )

    # ---------------------------------------------------------------- orders

    def create_order(self, params: dict, entity: str | None) -> dict:
        """The legacy manual path: an order on any invoice, legacy statuses only."""
        p = validate(params, ops.ORDER_CREATE, ("invoice_id",))
        now = self.store.now()
        return self._new_order(
            {"status": "new", **p, "created_at": now, "order_date": now},
            imported=False,
            entity=entity,
        )

    def import_order(self, params: dict, entity: str | None) -> dict:
        required = ("invoice_id", "status", "created_at", "order_date", "shipping_date")
        return self._new_order(
            validate(params, ops.ORDER_IMPORT, required), imported=True, entity=entity
        )

    def _new_order(self, p: dict, *, imported: bool, entity: str | None) -> dict:
        id_ = _check_id(p.pop("id", None) or _new_id())
        if self.store.get("order", id_):
            raise duplicate("id", id_)
        invoice = self.live(entity, "invoice", p["invoice_id"], "invoice_id")
        if p.get("customer_id") and p["customer_id"] != invoice["customer_id"]:
            raise wrong_value("customer_id", "is not the customer of the invoice")
        count = self.store.count("order") + 1
        order = {
            "id": id_,
            "document_number": str(count),
            "order_type": "manual",
            "price_type": invoice["price_type"],
            **p,
            "customer_id": invoice["customer_id"],
            "payment_status": "paid" if invoice["status"] == "paid" else "not_paid",
            "status_update_at": p["created_at"],
            "currency_code": invoice["currency_code"],
            "sub_total": invoice["sub_total"],
            "tax": invoice["tax"],
            "total": invoice["total"],
            "amount_paid": invoice["amount_paid"],
            "amount_adjusted": 0,
            "refundable_credits_issued": p.get("refundable_credits_issued") or 0,
            "is_gifted": False,
            "order_line_items": [self._order_line(line, invoice) for line in invoice["line_items"]],
            "shipping_address": _address(p.get("shipping_address"), "shipping_address"),
            "billing_address": _address(p.get("billing_address"), "billing_address"),
            "business_entity_id": invoice.get("business_entity_id"),
            "deleted": False,
            "object": "order",
            "_imported": imported,
        }
        return self.save("order", order)

    def _order_line(self, line: dict, invoice: dict) -> dict:
        price = self.store.get("item_price", line.get("entity_id") or "")
        item = self.store.get("item", price["item_id"]) if price else None
        return {
            "id": _new_id("oli_"),
            "invoice_id": invoice["id"],
            "invoice_line_item_id": line["id"],
            "unit_price": line["unit_amount"],
            "description": line["description"],
            "amount": line["amount"],
            "fulfillment_quantity": line["quantity"],
            "fulfillment_amount": line["amount"],
            "tax_amount": line["tax_amount"],
            "amount_paid": line["amount"] if invoice["status"] == "paid" else 0,
            "is_shippable": bool(item and item.get("is_shippable")),
            "sku": (price or {}).get("accounting_detail", {}).get("sku"),
            "status": "queued",
            "entity_type": line["entity_type"],
            "entity_id": line.get("entity_id"),
            "object": "order_line_item",
        }

    def update_order(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.ORDER_UPDATE)
        order = self.live(entity, "order", id_)
        lines = {line["id"]: line for line in order["order_line_items"]}
        for i, change in enumerate(p.pop("order_line_items", [])):
            if change.get("id") not in lines:
                raise not_found("order_line_item", change.get("id"), f"order_line_items[id][{i}]")
            lines[change["id"]].update({k: v for k, v in change.items() if v is not None})
        if "shipping_address" in p:
            p["shipping_address"] = _address(p["shipping_address"], "shipping_address")
        if p.get("status") and p["status"] != order["status"]:
            order["status_update_at"] = self.store.now()
        order.update(p)
        if not order.get("status"):
            raise blank("status")
        return self.save("order", order)

    def cancel_order(self, id_: str, params: dict, entity: str | None) -> dict:
        p = validate(params, ops.ORDER_CANCEL, ("cancellation_reason",))
        order = self.live(entity, "order", id_)
        if order["status"] == "cancelled":
            raise invalid_state(f"order {id_} is already cancelled")
        now = self.store.now()
        order.update(
            status="cancelled",
            status_update_at=now,
            cancelled_at=p.get("cancelled_at") or now,
            cancellation_reason=p["cancellation_reason"],
            note=p.get("comment") or order.get("note"),
        )
        return self.save("order", order)

    def delete_order(self, id_: str, entity: str | None) -> dict:
        order = self.live(entity, "order", id_)
        if not order["_imported"]:
            raise invalid_state("only imported orders can be deleted")
        order["deleted"] = True
        return self.save("order", order)

    def list_orders(self, params: dict, entity: str | None) -> dict:
        return self.listing(
            params, entity, "order", ops.ORDER_FILTERS, ("created_at", "updated_at"), deletable=True
        )


def _same_year(first: int, second: int) -> bool:
    def year(ts: int) -> int:
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).year

    return year(first) == year(second)
