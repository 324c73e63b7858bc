"""The Chargebee emulator's fidelity, judged by the official `chargebee` Python SDK as a
client (and by raw HTTP where the SDK hides the wire): envelopes, errors, lists, parents
before children, business entities, idempotency and rate limits."""

from __future__ import annotations

import base64
import itertools
import socket
import time
import uuid

import chargebee
import pytest
import requests

from sync_sandbox.process import RunningSandbox
from tests.plugin_forks import start_sandbox

KEY = "test_emulator_key_0123456789"
ENTITY_HEADER = "chargebee-business-entity-id"
_ids = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> RunningSandbox:
    sandbox = start_sandbox("chargebee", str(tmp_path_factory.mktemp("cb") / "cb.db"), KEY)
    yield sandbox
    sandbox.stop()


def sdk_for(sandbox: RunningSandbox, key: str = KEY) -> chargebee.Chargebee:
    """The SDK builds `{protocol}://{site}.{domain}/api/v2`: this spells http://127.0.0.1:PORT."""
    chargebee.main.Chargebee.verify_ca_certs = False
    port = sandbox.url.rsplit(":", 1)[1]
    return chargebee.Chargebee(
        api_key=key, site="127", chargebee_domain=f"0.0.1:{port}", protocol="http"
    )


@pytest.fixture(scope="module")
def cb(emulator) -> chargebee.Chargebee:
    return sdk_for(emulator)


def raw_post(sandbox: RunningSandbox, path: str, **kwargs) -> requests.Response:
    return requests.post(f"{sandbox.url}/api/v2{path}", auth=(KEY, ""), timeout=10, **kwargs)


def catalog(cb, currency: str = "EUR") -> tuple[str, str]:
    """A family, a shippable charge item in it and one price: (item id, item price id)."""
    family = unique("fam")
    cb.ItemFamily.create({"id": family, "name": family})
    item = unique("item")
    cb.Item.create(
        {"id": item, "name": item, "type": "charge", "item_family_id": family, "is_shippable": True}
    )
    price = f"{item}-{currency}"
    cb.ItemPrice.create(
        {"id": price, "name": price, "item_id": item, "price": 1250, "currency_code": currency,
         "accounting_detail": {"sku": "SKU-" + item}}
    )  # fmt: skip
    return item, price


def sale(cb, customer: str, price: str, quantity: int = 2) -> str:
    invoice = unique("inv")
    cb.Invoice.import_invoice(
        {
            "id": invoice,
            "customer_id": customer,
            "currency_code": "EUR",
            "date": 1_700_000_000,
            "total": 1250 * quantity + 490,
            "line_items": [
                {"description": "Mug", "entity_type": "charge_item_price", "entity_id": price,
                 "quantity": quantity, "unit_amount": 1250},
                {"description": "Shipping", "amount": 490},
            ],
            "payments": [{"amount": 1250 * quantity + 490, "payment_method": "other",
                          "date": 1_700_000_100}],
        }
    )  # fmt: skip
    return invoice


# ---------------------------------------------------------------- customers


def test_customer_lifecycle_in_the_sdks_shapes(cb):
    id_ = unique("cws")
    created = cb.Customer.create(
        {
            "id": id_,
            "first_name": "Zoë",
            "last_name": "Ørsted",
            "email": "zoe@example.dk",
            "meta_data": {"webshop_id": 7, "vip": True},  # the SDK sends a Python repr
            "billing_address": {"line1": "Nørregade 1", "city": "København", "country": "DK"},
        }
    ).customer
    assert created.id == id_ and created.first_name == "Zoë"
    assert created.billing_address.city == "København"
    assert created.meta_data == {"webshop_id": 7, "vip": True}
    assert created.business_entity_id == "default" and created.deleted is False
    assert created.raw_data["object"] == "customer"
    assert "company" not in created.raw_data  # no value: left out, not null

    updated = cb.Customer.update(id_, {"company": "Ørsted ApS"}).customer
    assert updated.company == "Ørsted ApS" and updated.first_name == "Zoë"
    assert updated.resource_version > created.resource_version
    assert updated.updated_at >= created.updated_at

    # update_billing_info replaces the whole address: left-out fields are cleared
    billed = cb.Customer.update_billing_info(
        id_, {"billing_address": {"line1": "Vestergade 2", "city": "Aarhus", "country": "DK"}}
    ).customer
    assert billed.billing_address.raw_data == {
        "line1": "Vestergade 2", "city": "Aarhus", "country": "DK", "object": "billing_address"
    }  # fmt: skip

    cb.Customer.delete(id_)
    with pytest.raises(chargebee.InvalidRequestError) as gone:
        cb.Customer.retrieve(id_)
    assert (gone.value.http_status_code, gone.value.api_error_code) == (404, "resource_not_found")
    listed = cb.Customer.list({"id": {"is": id_}, "include_deleted": True}).list
    assert [entry.customer.deleted for entry in listed] == [True]
    assert cb.Customer.list({"id": {"is": id_}}).list == []


def test_client_chosen_ids_are_unique_and_errors_name_the_param(cb):
    id_ = unique("cws")
    cb.Customer.create({"id": id_, "email": "dup@example.com"})
    with pytest.raises(chargebee.InvalidRequestError) as duplicate:
        cb.Customer.create({"id": id_, "email": "dup@example.com"})
    assert duplicate.value.api_error_code == "duplicate_entry"
    assert duplicate.value.param == "id"
    with pytest.raises(chargebee.InvalidRequestError) as bad:
        cb.Customer.create({"email": "not-an-email"})
    assert (bad.value.http_status_code, bad.value.param) == (400, "email")
    assert bad.value.api_error_code == "param_wrong_value"
    assert str(bad.value).startswith("email : ")
    with pytest.raises(chargebee.InvalidRequestError) as long:
        cb.Customer.create({"billing_address": {"zip": "9" * 21}})
    assert long.value.param == "billing_address[zip]"


def test_wire_format_details(emulator):
    # a JSON body is not read: its fields count as missing
    response = raw_post(emulator, "/item_families", json={"id": "f", "name": "F"})
    body = response.json()
    assert response.status_code == 400
    assert body["api_error_code"] == "invalid_request" and body["error_code"] == "param_required"
    assert body["message"] == "id : cannot be blank" and body["param"] == "id"
    # a misspelt param is refused rather than silently dropped
    response = raw_post(emulator, "/customers", data={"emial": "x@example.com"})
    assert (response.status_code, response.json()["param"]) == (400, "emial")
    # arrays of objects are grouped by index, and indices may be sparse
    response = raw_post(
        emulator,
        "/business_entities/transfers",
        data={"active_resource_ids[3]": "nobody", "destination_business_entity_ids[3]": "eu",
              "reason_codes[3]": "correction", "resource_types[3]": "customer"},
    )  # fmt: skip
    assert response.status_code == 404 and response.json()["param"] == "active_resource_ids[0]"
    # wrong key and wrong verb
    response = requests.get(f"{emulator.url}/api/v2/customers", auth=("wrong", ""), timeout=10)
    assert response.status_code == 401
    assert response.json()["api_error_code"] == "api_authentication_failed"
    response = requests.delete(f"{emulator.url}/api/v2/customers", auth=(KEY, ""), timeout=10)
    assert response.json()["api_error_code"] == "http_method_not_supported"


def test_wrong_key_raises_the_sdks_api_error(emulator):
    with pytest.raises(chargebee.APIError) as refused:
        sdk_for(emulator, key="wrong_key").Customer.list()
    assert refused.value.http_status_code == 401
    assert refused.value.api_error_code == "api_authentication_failed"


# ---------------------------------------------------------------- lists


def test_lists_page_filter_and_sort_like_chargebee(cb):
    tag = unique("page")
    ids = [f"{tag}_{n:02}" for n in range(25)]
    for id_ in ids:
        cb.Customer.create({"id": id_, "company": tag})
    cb.Customer.update(ids[3], {"first_name": "Moved"})  # now the most recently updated

    seen, offset, pages = [], None, 0
    while True:
        params = {"limit": 10, "company": {"is": tag}, "sort_by": {"asc": "updated_at"}}
        page = cb.Customer.list({**params, **({"offset": offset} if offset else {})})
        seen += [entry.customer.id for entry in page.list]
        pages += 1
        offset = page.next_offset
        if not offset:
            break
    assert pages == 3 and len(page.list) == 5
    assert seen == ids[:3] + ids[4:] + [ids[3]]

    newest = cb.Customer.list({"company": {"is": tag}, "sort_by": {"desc": "updated_at"}})
    assert newest.list[0].customer.id == ids[3] and len(newest.list) == 10  # default limit 10
    moved = cb.Customer.retrieve(ids[3]).customer
    later = cb.Customer.list(
        {"company": {"is": tag}, "updated_at": {"after": moved.updated_at - 1}, "limit": 100}
    )
    assert ids[3] in [entry.customer.id for entry in later.list]
    picked = cb.Customer.list({"id": {"in": [ids[0], ids[24]]}, "limit": 100})
    assert sorted(entry.customer.id for entry in picked.list) == [ids[0], ids[24]]
    started = cb.Customer.list({"id": {"starts_with": tag}, "limit": 100})
    assert len(started.list) == 25

    with pytest.raises(chargebee.InvalidRequestError) as bad:
        cb.Customer.list({"limit": 101})
    assert bad.value.param == "limit"
    with pytest.raises(chargebee.InvalidRequestError) as bad:
        cb.Customer.list({"sort_by": {"asc": "email"}})
    assert bad.value.param == "sort_by[asc]"


# ---------------------------------------------------------------- catalog


def test_catalog_needs_parents_first_and_archives(cb):
    with pytest.raises(chargebee.InvalidRequestError) as orphan:
        cb.Item.create({"id": unique("i"), "name": unique("n"), "type": "charge",
                        "item_family_id": "no_such_family"})  # fmt: skip
    assert (orphan.value.http_status_code, orphan.value.param) == (404, "item_family_id")
    with pytest.raises(chargebee.InvalidRequestError) as orphan:
        cb.ItemPrice.create({"id": unique("p"), "name": unique("n"), "item_id": "no_such_item",
                             "currency_code": "EUR"})  # fmt: skip
    assert orphan.value.param == "item_id"

    item, price = catalog(cb)
    fetched = cb.ItemPrice.retrieve(price).item_price
    assert (fetched.price, fetched.currency_code, fetched.item_type) == (1250, "EUR", "charge")
    assert fetched.accounting_detail.sku == "SKU-" + item
    with pytest.raises(chargebee.InvalidRequestError) as duplicate:
        cb.Item.create({"id": item, "name": unique("n"), "type": "charge",
                        "item_family_id": cb.Item.retrieve(item).item.item_family_id})  # fmt: skip
    assert (duplicate.value.api_error_code, duplicate.value.param) == ("duplicate_entry", "id")

    with pytest.raises(chargebee.InvalidRequestError) as busy:
        cb.Item.delete(item)
    assert (busy.value.http_status_code, busy.value.api_error_code) == (
        409, "invalid_state_for_request"
    )  # fmt: skip
    archived = cb.Item.update(item, {"status": "archived"}).item
    assert archived.status == "archived" and archived.archived_at
    assert cb.Item.update(item, {"status": "active"}).item.status == "active"
    listed = cb.ItemPrice.list({"item_id": {"is": item}, "sort_by": {"asc": "updated_at"}})
    assert [entry.item_price.id for entry in listed.list] == [price]

    cb.ItemPrice.delete(price)  # never invoiced: deleted, shown only by a status filter
    assert cb.ItemPrice.list({"item_id": {"is": item}}).list == []
    deleted = cb.ItemPrice.list({"item_id": {"is": item}, "status": {"is": "deleted"}}).list
    assert [entry.item_price.status for entry in deleted] == ["deleted"]
    assert cb.Item.delete(item).item.status == "deleted"


# ---------------------------------------------------------------- invoices and orders


def test_an_imported_sale_and_its_order(cb):
    customer = unique("cws")
    cb.Customer.create({"id": customer, "email": "buyer@example.com"})
    item, price = catalog(cb)
    invoice_id = sale(cb, customer, price)
    invoice = cb.Invoice.retrieve(invoice_id).invoice
    assert (invoice.status, invoice.total, invoice.amount_paid, invoice.amount_due) == (
        "paid", 2990, 2990, 0
    )  # fmt: skip
    assert invoice.paid_at == 1_700_000_100
    assert [(line.entity_type, line.amount) for line in invoice.line_items] == [
        ("charge_item_price", 2500), ("adhoc", 490)
    ]  # fmt: skip

    order_id = unique("ord")
    order = cb.Order.import_order(
        {"id": order_id, "invoice_id": invoice_id, "status": "awaiting_shipment",
         "created_at": 1_700_000_000, "order_date": 1_700_000_000,
         "shipping_date": 1_700_086_400, "reference_id": "WS-000042",
         "shipping_address": {"line1": "Hauptstraße 5", "city": "Köln", "country": "DE"}}
    ).order  # fmt: skip
    assert (order.customer_id, order.total, order.reference_id) == (customer, 2990, "WS-000042")
    assert order.shipping_address.city == "Köln"
    assert [line.is_shippable for line in order.order_line_items] == [True, False]
    linked = cb.Invoice.retrieve(invoice_id).invoice.linked_orders
    assert [(o.id, o.status) for o in linked] == [(order_id, "awaiting_shipment")]

    shipped = cb.Order.update(
        order_id, {"status": "shipped", "tracking_id": "TRK1", "shipped_at": 1_700_090_000}
    ).order
    assert (shipped.status, shipped.tracking_id) == ("shipped", "TRK1")
    assert shipped.resource_version > order.resource_version
    listed = cb.Order.list({"invoice_id": {"is": invoice_id}, "sort_by": {"asc": "updated_at"}})
    assert [entry.order.id for entry in listed.list] == [order_id]
    cancelled = cb.Order.cancel(order_id, {"cancellation_reason": "product_not_required"}).order
    assert cancelled.status == "cancelled"
    cb.Order.delete(order_id)
    assert cb.Order.list({"id": {"is": order_id}, "include_deleted": True}).list[0].order.deleted

    # an invoiced price is archived, not deleted
    assert cb.ItemPrice.delete(price).item_price.status == "archived"


def test_invoices_are_checked_before_they_are_recorded(cb):
    customer = unique("cws")
    cb.Customer.create({"id": customer})
    _item, price = catalog(cb)
    base = {"id": unique("inv"), "customer_id": customer, "currency_code": "EUR",
            "date": 1_700_000_000, "total": 1250,
            "line_items": [{"description": "Mug", "entity_type": "charge_item_price",
                            "entity_id": price, "quantity": 1, "unit_amount": 1250}]}  # fmt: skip
    for change, param in (
        ({"customer_id": "nobody"}, "customer_id"),
        ({"total": 999}, "total"),
        ({"currency_code": "USD", "total": 1250}, "line_items[entity_id][0]"),
        ({"line_items": [{"amount": 5}], "total": 5}, "line_items[description][0]"),
    ):
        with pytest.raises(chargebee.InvalidRequestError) as refused:
            cb.Invoice.import_invoice({**base, **change})
        assert refused.value.param == param
    with pytest.raises(chargebee.InvalidRequestError) as orphan:
        cb.Order.import_order({"invoice_id": "no_such_invoice", "status": "queued",
                               "created_at": 1, "order_date": 1, "shipping_date": 1})  # fmt: skip
    assert (orphan.value.http_status_code, orphan.value.param) == (404, "invoice_id")


# ---------------------------------------------------------------- business entities


def test_business_entity_context_and_transfer(cb):
    scoped = {ENTITY_HEADER: "eu"}
    id_ = unique("cws")
    created = cb.Customer.create({"id": id_, "email": "eu@example.com"}, headers=scoped)
    assert created.customer.business_entity_id == "eu"
    with pytest.raises(chargebee.InvalidRequestError) as mismatch:
        cb.Customer.create({"business_entity_id": "us"}, headers=scoped)
    assert mismatch.value.param == "business_entity_id"
    with pytest.raises(chargebee.InvalidRequestError):
        cb.Customer.retrieve(id_, headers={ENTITY_HEADER: "us"})  # outside that context
    in_eu = cb.Customer.list({"id": {"is": id_}}, headers=scoped).list
    assert [entry.customer.id for entry in in_eu] == [id_]

    with pytest.raises(chargebee.InvalidRequestError):  # not allowed in an entity context
        cb.BusinessEntity.create_transfers(
            {"active_resource_ids": [id_], "destination_business_entity_ids": ["us"],
             "reason_codes": ["correction"], "resource_types": ["customer"]}, headers=scoped
        )  # fmt: skip
    moved = cb.BusinessEntity.create_transfers(
        {"active_resource_ids": [id_], "destination_business_entity_ids": ["us"],
         "reason_codes": ["correction"], "resource_types": ["customer"]}
    ).business_entity_transfer  # fmt: skip
    assert (moved.active_resource_id, moved.source_business_entity_id) == (id_, "eu")
    assert moved.destination_business_entity_id == "us" and moved.resource_id != id_
    active = cb.Customer.retrieve(id_).customer
    assert active.business_entity_id == "us" and active.email == "eu@example.com"
    deprecated = cb.Customer.retrieve(moved.resource_id).customer
    assert (deprecated.active_id, deprecated.business_entity_id) == (id_, "eu")
    history = cb.BusinessEntity.get_transfers({"active_resource_id": {"is": id_}}).list
    assert [entry.business_entity_transfer.id for entry in history] == [moved.id]

    for destination in ("eu", "us"):
        cb.BusinessEntity.create_transfers(
            {"active_resource_ids": [id_], "destination_business_entity_ids": [destination],
             "reason_codes": ["correction"], "resource_types": ["customer"]}
        )  # fmt: skip
    with pytest.raises(chargebee.InvalidRequestError) as fourth:  # 3 per customer per year
        cb.BusinessEntity.create_transfers(
            {"active_resource_ids": [id_], "destination_business_entity_ids": ["eu"],
             "reason_codes": ["correction"], "resource_types": ["customer"]}
        )  # fmt: skip
    assert fourth.value.api_error_code == "invalid_state_for_request"


# ---------------------------------------------------------------- idempotency and limits


def test_idempotency_key_replays_instead_of_writing_twice(cb, emulator):
    key = {"chargebee-idempotency-key": unique("idem")}
    first = cb.Customer.create({"email": "once@example.com", "company": "Once"}, headers=key)
    again = cb.Customer.create({"email": "once@example.com", "company": "Once"}, headers=key)
    assert not first.is_idempotency_replayed and again.is_idempotency_replayed
    assert again.customer.id == first.customer.id  # the server chose the id once
    assert len(cb.Customer.list({"company": {"is": "Once"}}).list) == 1
    with pytest.raises(chargebee.InvalidRequestError) as reused:
        cb.Customer.create({"email": "other@example.com"}, headers=key)
    assert reused.value.http_status_code == 409


def test_a_write_whose_body_did_not_arrive_whole_is_not_acted_on(cb, emulator):
    """A client killed while sending leaves part of the body: the emulator, as an HTTP server
    does, neither writes nor keeps an answer for the idempotency key, so the whole request
    sent again with that key (the rerun of a killed sync) writes."""
    customer, key = unique("cust"), unique("idem")
    body = f"id={customer}&email={customer}@example.com&company=Whole"
    host, port = emulator.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v2/customers HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Basic {base64.b64encode(f'{KEY}:'.encode()).decode()}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"chargebee-idempotency-key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )

    def answered() -> int:
        return sum(emulator.stats()["operations"].get("create_customer", {}).values())

    before = answered()
    with socket.create_connection((host, int(port)), timeout=10) as killed:
        killed.sendall((head + body[:12]).encode())  # the id, cut: then the client is gone
    deadline = time.monotonic() + 10
    while answered() == before:  # the emulator has seen the request end
        assert time.monotonic() < deadline, "the emulator did not answer the partial request"
        time.sleep(0.05)
    with pytest.raises(chargebee.InvalidRequestError):
        cb.Customer.retrieve(body[3:12])  # nothing made of the part that came
    again = raw_post(emulator, "/customers", data=body, headers={
        "chargebee-idempotency-key": key, "Content-Type": "application/x-www-form-urlencoded",
    })  # fmt: skip
    assert again.status_code == 200, again.text
    assert "chargebee-idempotency-replayed" not in again.headers
    assert cb.Customer.retrieve(customer).customer.company == "Whole"


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    sandbox = start_sandbox("chargebee", str(tmp_path / "cb.db"), KEY, "--requests-per-minute", "2")
    try:
        cb = sdk_for(sandbox)
        cb.Customer.list()
        cb.Customer.list()
        with pytest.raises(chargebee.OperationFailedError) as limited:
            cb.Customer.list()
        assert limited.value.http_status_code == 429
        assert limited.value.api_error_code == "api_request_limit_exceeded"
        assert 1 <= int(limited.value.http_headers["retry-after"]) <= 60
    finally:
        sandbox.stop()


def test_state_survives_a_restart(tmp_path):
    db = str(tmp_path / "cb.db")
    sandbox = start_sandbox("chargebee", db, KEY)
    created = sdk_for(sandbox).Customer.create({"id": "kept", "email": "kept@example.com"})
    sandbox.stop()
    sandbox = start_sandbox("chargebee", db, KEY)
    try:
        kept = sdk_for(sandbox).Customer.retrieve("kept").customer
        assert kept.resource_version == created.customer.resource_version
    finally:
        sandbox.stop()


def test_remaining_operations_through_the_sdk(cb):
    family = unique("fam")
    cb.ItemFamily.create({"id": family, "name": family, "description": "Mugs"})
    assert cb.ItemFamily.retrieve(family).item_family.description == "Mugs"
    renamed = cb.ItemFamily.update(family, {"name": family + " renamed"}).item_family
    assert renamed.name == family + " renamed" and renamed.raw_data["object"] == "item_family"
    listed = cb.ItemFamily.list({"id": {"is": family}}).list
    assert [entry.item_family.id for entry in listed] == [family]

    item = unique("item")
    cb.Item.create({"id": item, "name": item, "type": "charge", "item_family_id": family})
    items = cb.Item.list({"item_family_id": {"is": family}, "sort_by": {"asc": "id"}}).list
    assert [entry.item.id for entry in items] == [item]
    with pytest.raises(chargebee.InvalidRequestError) as busy:  # a family with items stays
        cb.ItemFamily.delete(family)
    assert busy.value.api_error_code == "invalid_state_for_request"
    cb.Item.delete(item)
    assert cb.ItemFamily.delete(family).item_family.status == "deleted"

    customer = unique("cws")
    cb.Customer.create({"id": customer})
    _item, price = catalog(cb)
    invoice_id = sale(cb, customer, price, quantity=1)
    invoices = cb.Invoice.list({"customer_id": {"is": customer}, "sort_by": {"asc": "date"}})
    assert [entry.invoice.id for entry in invoices.list] == [invoice_id]
    legacy = cb.Order.create({"invoice_id": invoice_id, "reference_id": "manual"}).order
    assert (legacy.status, legacy.invoice_id) == ("new", invoice_id)
    with pytest.raises(chargebee.InvalidRequestError) as not_imported:
        cb.Order.delete(legacy.id)  # only imported orders can be deleted
    assert not_imported.value.http_status_code == 409
    deleted = cb.Invoice.delete(invoice_id).invoice
    assert deleted.deleted is True
    assert cb.Invoice.list({"customer_id": {"is": customer}}).list == []
    gone = cb.Order.list({"id": {"is": legacy.id}, "include_deleted": True}).list
    assert gone[0].order.deleted  # its orders went with it


# ---------------------------------------------------------------- found by other clients


def raw_get(sandbox: RunningSandbox, path: str, **params) -> requests.Response:
    return requests.get(f"{sandbox.url}/api/v2{path}", params=params, auth=(KEY, ""), timeout=10)


def test_configurations_name_the_site_and_product_catalog_2(cb, emulator):
    # singer-io's tap-chargebee reads this first to choose between plans and items
    configurations = cb.Configuration.list().configurations
    assert [(c.domain, c.product_catalog_version) for c in configurations] == [
        ("sandbox-test", "v2")
    ]  # fmt: skip
    assert configurations[0].raw_data["object"] == "configuration"
    assert configurations[0].chargebee_response_schema_type == "items"


def test_booleans_are_read_in_any_case_and_never_misread(cb, emulator):
    id_ = unique("cws")
    cb.Customer.create({"id": id_})
    cb.Customer.delete(id_)
    # a Python bool put into a query string as it is arrives as `True`
    listed = raw_get(emulator, "/customers", include_deleted="True", **{"id[is]": id_})
    assert [entry["customer"]["id"] for entry in listed.json()["list"]] == [id_]
    for params in (
        {"include_deleted": "yes"},
        {"include_deleted[is]": "true"},
        {"auto_close_invoices[is]": "1"},
        {"email[is_present]": "maybe"},
    ):
        refused = raw_get(emulator, "/customers", **params)
        assert (refused.status_code, refused.json()["api_error_code"]) == (
            400, "param_wrong_value"
        ), params  # fmt: skip
        assert refused.json()["param"].startswith(next(iter(params)).split("[")[0])
    family = unique("fam")
    written = raw_post(emulator, "/item_families", data={"id": family, "name": family})
    item = raw_post(
        emulator,
        "/items",
        data={"id": family + "_i", "name": family + "_i", "type": "charge",
              "item_family_id": family, "is_shippable": "TRUE"},
    )  # fmt: skip
    assert written.status_code == 200 and item.json()["item"]["is_shippable"] is True
    scoped = requests.get(
        f"{emulator.url}/api/v2/items",
        params={"include_site_level_resources[is]": "nope"},
        headers={ENTITY_HEADER: "eu"},
        auth=(KEY, ""),
        timeout=10,
    )
    assert scoped.status_code == 400
    assert scoped.json()["param"] == "include_site_level_resources[is]"
    knob = requests.post(
        f"{emulator.url}/_sandbox/knobs", json={"retry_after": "false"}, timeout=10
    )
    assert knob.status_code == 400


def test_attribute_names_are_chargebees(cb):
    customer = unique("cws")
    cb.Customer.create({"id": customer})
    _item, price = catalog(cb)
    invoice_id = sale(cb, customer, price, quantity=1)
    lines = cb.Invoice.retrieve(invoice_id).invoice.line_items
    assert [line.is_taxed for line in lines] == [False, False]
    assert all("is_taxable" not in line.raw_data for line in lines)
    order = cb.Order.import_order(
        {"invoice_id": invoice_id, "status": "queued", "created_at": 1_700_000_000,
         "order_date": 1_700_000_000, "shipping_date": 1_700_000_000}
    ).order  # fmt: skip
    assert order.amount_adjusted == 0 and "amount_adjustments" not in order.raw_data


def test_params_chargebee_does_not_have_are_refused(cb, emulator):
    for path in ("/items", "/item_prices", "/item_families", "/business_entities/transfers"):
        refused = raw_get(emulator, path, include_deleted="true")
        assert (refused.status_code, refused.json()["param"]) == (400, "include_deleted"), path
        assert refused.json()["api_error_code"] == "param_wrong_value"
    for path in ("/customers", "/invoices", "/orders"):
        assert raw_get(emulator, path, include_deleted="true").status_code == 200, path

    customer = unique("cws")
    cb.Customer.create({"id": customer})
    base = {"id": unique("inv"), "customer_id": customer, "currency_code": "EUR",
            "date": 1_700_000_000, "total": 500}  # fmt: skip
    for change, param in (
        ({"line_items": [{"description": "Fee", "amount": 500, "entity_type": "charge"}]},
         "line_items[entity_type][0]"),
        ({"line_items": [{"description": "Fee", "amount": 500}],
          "payments": [{"amount": 500, "payment_method": "app_store"}]},
         "payments[payment_method][0]"),
        ({"line_items": [{"description": "Fee", "amount": 500}],
          "payments": [{"amount": 500, "payment_method": "play_store"}]},
         "payments[payment_method][0]"),
    ):  # fmt: skip
        with pytest.raises(chargebee.InvalidRequestError) as refused:
            cb.Invoice.import_invoice({**base, **change})
        assert (refused.value.api_error_code, refused.value.param) == ("param_wrong_value", param)
    invoice_id = cb.Invoice.import_invoice(
        {**base, "line_items": [{"description": "Fee", "amount": 500}]}
    ).invoice.id
    refused = raw_post(emulator, f"/invoices/{invoice_id}/delete", data={"claim_credits": "true"})
    assert (refused.status_code, refused.json()["param"]) == (400, "claim_credits")
    assert cb.Invoice.retrieve(invoice_id).invoice.deleted is False


def test_sandbox_reset_empties_the_emulator(tmp_path):
    sandbox = start_sandbox("chargebee", str(tmp_path / "cb.db"), KEY)
    try:
        cb = sdk_for(sandbox)
        key = {"chargebee-idempotency-key": "reset-test"}
        cb.Customer.create({"id": "before", "email": "before@example.com"}, headers=key)
        cb.ItemFamily.create({"id": "fam", "name": "Fam"})
        answer = requests.post(f"{sandbox.url}/_sandbox/reset", timeout=10)
        assert answer.status_code == 200 and answer.json()["total"] == 0
        assert cb.Customer.list().list == [] and cb.ItemFamily.list().list == []
        with pytest.raises(chargebee.InvalidRequestError):
            cb.Customer.retrieve("before")
        again = cb.Customer.create({"id": "before", "email": "before@example.com"}, headers=key)
        assert not again.is_idempotency_replayed  # the key was forgotten too
        cb.ItemFamily.create({"id": "fam", "name": "Fam"})
    finally:
        sandbox.stop()
    sandbox = start_sandbox("chargebee", str(tmp_path / "cb.db"), KEY)
    try:  # the reset reached the SQLite file: a restart brings back only what came after
        ids = [entry.customer.id for entry in sdk_for(sandbox).Customer.list().list]
        assert ids == ["before"]
    finally:
        sandbox.stop()
