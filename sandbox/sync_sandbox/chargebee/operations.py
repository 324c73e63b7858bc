"""The params each emulated Chargebee operation accepts (names, types, max lengths, enums),
as documented in the API reference for Product Catalog 2.0."""

from __future__ import annotations

from sync_sandbox.chargebee.params import BOOL, INT, JSON, NONNEG, TS, Field, s

ADDRESS = {
    **{name: s(150) for name in ("first_name", "last_name", "line1", "line2", "line3")},
    "email": s(70, email=True),
    "company": s(250),
    "phone": s(50),
    "city": s(50),
    "state_code": s(50),
    "state": s(50),
    "zip": s(20),
    "country": Field("str", 50, country=True),
    "validation_status": s(20, "not_validated", "valid", "partially_valid", "invalid"),
}
ADDRESS_FIELD = Field("obj", sub=ADDRESS)

OFFLINE_METHODS = (
    "no_preference", "cash", "check", "bank_transfer", "ach_credit", "sepa_credit",
    "boleto", "us_automated_bank_transfer", "eu_automated_bank_transfer",
    "uk_automated_bank_transfer", "jp_automated_bank_transfer", "mx_automated_bank_transfer",
    "custom",
)  # fmt: skip

CUSTOMER_COMMON = {
    "first_name": s(150),
    "last_name": s(150),
    "email": s(70, email=True),
    "phone": s(50),
    "company": s(250),
    "preferred_currency_code": s(3),
    "auto_collection": s(3, "on", "off"),
    "net_term_days": NONNEG,
    "allow_direct_debit": BOOL,
    "locale": s(50),
    "taxability": s(10, "taxable", "exempt"),
    "customer_type": s(20, "residential", "business", "senior_citizen", "industrial"),
    "offline_payment_method": s(40, *OFFLINE_METHODS),
    "invoice_notes": s(2000),
    "meta_data": JSON,
    "consolidated_invoicing": BOOL,
    "auto_close_invoices": BOOL,
}
CUSTOMER_CREATE = {
    **CUSTOMER_COMMON,
    "id": s(50),
    "vat_number": s(20),
    "vat_number_prefix": s(10),
    "business_entity_id": s(50),
    "created_from_ip": s(50),
    "billing_address": ADDRESS_FIELD,
}
CUSTOMER_UPDATE = {**CUSTOMER_COMMON, "fraud_flag": s(10, "safe", "fraudulent")}
#: update_billing_info replaces all of these: what is left out is cleared
CUSTOMER_BILLING = {
    "billing_address": ADDRESS_FIELD,
    "vat_number": s(20),
    "vat_number_prefix": s(10),
    "business_customer_without_vat_number": BOOL,
    "registered_for_gst": BOOL,
}

TRANSFER = {
    "active_resource_ids": Field("strs"),
    "destination_business_entity_ids": Field("strs"),
    "source_business_entity_ids": Field("strs"),
    "resource_types": Field("strs"),
    "reason_codes": Field("strs"),
}
TRANSFER_REQUIRED = (
    "active_resource_ids", "destination_business_entity_ids", "resource_types", "reason_codes"
)  # fmt: skip

FAMILY_UPDATE = {"name": s(50), "description": s(500)}
FAMILY_CREATE = {**FAMILY_UPDATE, "id": s(50), "business_entity_id": s(50)}

ITEM_UPDATE = {
    "name": s(100),
    "item_family_id": s(100),
    "description": s(2000),
    "external_name": s(100),
    "is_shippable": BOOL,
    "enabled_for_checkout": BOOL,
    "enabled_in_portal": BOOL,
    "item_applicability": s(10, "all", "restricted"),
    "unit": s(30),
    "metadata": JSON,
}
ITEM_CREATE = {
    **ITEM_UPDATE,
    "id": s(100),
    "type": s(10, "plan", "addon", "charge"),
    "is_giftable": BOOL,
    "metered": BOOL,
    "business_entity_id": s(50),
}
ITEM_UPDATE = {**ITEM_UPDATE, "status": s(10, "active", "archived")}

PRICE_UPDATE = {
    "name": s(100),
    "pricing_model": s(10, "flat_fee", "per_unit", "tiered", "volume", "stairstep"),
    "price": NONNEG,
    "currency_code": s(3),
    "external_name": s(100),
    "description": s(2000),
    "invoice_notes": s(2000),
    "is_taxable": BOOL,
    "accounting_detail": Field("obj", sub={"sku": s(100), "accounting_code": s(100)}),
    "tax_detail": Field("obj", sub={"tax_profile_id": s(50)}),
    "metadata": JSON,
    "period": Field("int", minimum=1),
    "period_unit": s(10, "day", "week", "month", "year"),
}
PRICE_CREATE = {**PRICE_UPDATE, "id": s(100), "item_id": s(100), "business_entity_id": s(50)}
PRICE_UPDATE = {**PRICE_UPDATE, "status": s(10, "active", "archived")}

INVOICE_STATUSES = ("paid", "posted", "payment_due", "not_paid", "voided", "pending")
LINE_ENTITY_TYPES = (
    "adhoc", "plan_item_price", "addon_item_price", "charge_item_price", "plan_setup",
    "plan", "addon",
)  # fmt: skip
ITEM_PRICE_ENTITIES = ("plan_item_price", "addon_item_price", "charge_item_price")
PAYMENT_METHODS = ("cash", "check", "chargeback", "bank_transfer", "other", "custom")
IMPORT_INVOICE = {
    "id": s(50),
    "currency_code": s(3),
    "customer_id": s(50),
    "po_number": s(100),
    "price_type": s(15, "tax_exclusive", "tax_inclusive"),
    "date": TS,
    "total": NONNEG,
    "round_off": INT,
    "status": s(15, *INVOICE_STATUSES),
    "voided_at": TS,
    "paid_at": TS,
    "due_date": TS,
    "net_term_days": NONNEG,
    "billing_address": ADDRESS_FIELD,
    "shipping_address": ADDRESS_FIELD,
    "line_items": Field(
        "objs",
        sub={
            "id": s(40),
            "date_from": TS,
            "date_to": TS,
            "description": s(250),
            "unit_amount": INT,
            "quantity": NONNEG,
            "amount": INT,
            "entity_type": s(20, *LINE_ENTITY_TYPES),
            "entity_id": s(100),
            **{f"tax{n}_name": s(50) for n in range(1, 11)},
            **{f"tax{n}_amount": INT for n in range(1, 11)},
        },
    ),
    "payments": Field(
        "objs",
        sub={
            "id": s(40),
            "amount": NONNEG,
            "payment_method": s(20, *PAYMENT_METHODS),
            "date": TS,
            "reference_number": s(100),
        },
    ),
    "taxes": Field(
        "objs", sub={"name": s(50), "rate": Field("str"), "amount": INT, "description": s(50)}
    ),
    "discounts": Field(
        "objs",
        sub={
            "entity_type": s(40),
            "entity_id": s(100),
            "description": s(250),
            "amount": NONNEG,
            "line_item_id": s(40),
        },
    ),
    "notes": Field("objs", sub={"entity_type": s(40), "entity_id": s(100), "note": s(2000)}),
}

LEGACY_ORDER_STATUSES = ("new", "processing", "complete", "cancelled", "voided")
ORDER_STATUSES = (
    "queued", "awaiting_shipment", "on_hold", "delivered", "shipped", "partially_delivered",
    "returned", "cancelled",
)  # fmt: skip
CANCELLATION_REASONS = (
    "shipping_cut_off_passed", "product_unsatisfactory", "third_party_cancellation",
    "product_not_required", "delivery_date_missed", "alternative_found", "invoice_written_off",
    "invoice_voided", "fraudulent_transaction", "payment_declined", "subscription_cancelled",
    "product_not_available", "others", "order_resent",
)  # fmt: skip
ORDER_TEXT = {
    "reference_id": s(50),
    "fulfillment_status": s(50),
    "note": s(600),
    "tracking_id": s(50),
    "tracking_url": s(255),
    "batch_id": s(50),
}
ORDER_CREATE = {
    **ORDER_TEXT,
    "id": s(40),
    "invoice_id": s(50),
    "status": s(15, *LEGACY_ORDER_STATUSES),
}
ORDER_DATES = {
    "order_date": TS,
    "shipping_date": TS,
    "shipped_at": TS,
    "delivered_at": TS,
    "cancelled_at": TS,
}
ORDER_IMPORT = {
    **ORDER_TEXT,
    **ORDER_DATES,
    "id": s(40),
    "document_number": s(50),
    "invoice_id": s(50),
    "subscription_id": s(50),
    "customer_id": s(50),
    "status": s(20, *ORDER_STATUSES),
    "created_at": TS,
    "shipment_carrier": s(50),
    "cancellation_reason": s(30, *CANCELLATION_REASONS),
    "refundable_credits_issued": NONNEG,
    "shipping_address": ADDRESS_FIELD,
    "billing_address": ADDRESS_FIELD,
}
ORDER_UPDATE = {
    **ORDER_TEXT,
    **ORDER_DATES,
    "status": s(20, *ORDER_STATUSES, *LEGACY_ORDER_STATUSES),
    "shipment_carrier": s(50),
    "cancellation_reason": s(30, *CANCELLATION_REASONS),
    "shipping_address": ADDRESS_FIELD,
    "order_line_items": Field(
        "objs",
        sub={"id": s(40), "status": s(20, *ORDER_STATUSES), "sku": s(250)},
    ),
}
ORDER_CANCEL = {
    "cancellation_reason": s(30, *CANCELLATION_REASONS),
    "customer_notes": s(2000),
    "comment": s(300),
    "cancelled_at": TS,
}

#: Filterable attributes of each list and their filter type.
CUSTOMER_FILTERS = {
    "id": "str", "email": "str", "first_name": "str", "last_name": "str", "company": "str",
    "phone": "str", "auto_collection": "enum", "taxability": "enum", "created_at": "ts",
    "updated_at": "ts", "business_entity_id": "is", "offline_payment_method": "enum",
    "auto_close_invoices": "bool", "channel": "enum",
}  # fmt: skip
FAMILY_FILTERS = {"id": "str", "name": "str", "updated_at": "ts", "business_entity_id": "str"}
ITEM_FILTERS = {
    "id": "str", "item_family_id": "str", "type": "enum", "name": "str",
    "item_applicability": "enum", "status": "enum", "is_giftable": "bool", "updated_at": "ts",
    "enabled_for_checkout": "bool", "enabled_in_portal": "bool", "metered": "bool",
    "channel": "enum", "business_entity_id": "str",
}  # fmt: skip
PRICE_FILTERS = {
    "id": "str", "name": "str", "pricing_model": "enum", "item_id": "str",
    "item_family_id": "str", "item_type": "enum", "currency_code": "str", "status": "enum",
    "updated_at": "ts", "period_unit": "enum", "period": "num", "channel": "enum",
    "business_entity_id": "str",
}  # fmt: skip
INVOICE_FILTERS = {
    "id": "str", "customer_id": "str", "subscription_id": "str", "status": "enum",
    "date": "ts", "paid_at": "ts", "updated_at": "ts", "total": "num", "amount_paid": "num",
    "amount_due": "num", "price_type": "enum", "recurring": "bool",
}  # fmt: skip
ORDER_FILTERS = {
    "id": "str", "invoice_id": "str", "subscription_id": "str", "status": "enum",
    "order_date": "ts", "shipping_date": "ts", "order_type": "enum", "updated_at": "ts",
    "created_at": "ts",
}  # fmt: skip
TRANSFER_FILTERS = {
    "resource_type": "enum", "resource_id": "str", "active_resource_id": "is",
    "created_at": "ts",
}  # fmt: skip
