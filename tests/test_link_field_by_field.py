"""The two-way link field by field, through `meltano run sync` on both sandboxes: edits of
different fields of one record on each side both arrive; deletes and archival race with
edits and still end alike on both sides, reported as they happened; a product deleted before
the first sync does not hold its paid orders back."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.harness import (
    TwoWaySync,
    cb_all,
    cb_client,
    webshop_get,
    webshop_patch,
    webshop_send,
)


def one(sync: TwoWaySync, resource: str, record_id) -> dict:
    return next(row for row in webshop_get(sync, resource) if row["id"] == int(record_id))


def assert_quiet(sync: TwoWaySync) -> None:
    sync.reset_counts()
    sync.run()
    assert sync.write_counts() == (Counter(), Counter())


def all_conflicts(sync: TwoWaySync) -> list[dict]:
    return sync.reverse_report()["conflicts"] + sync.last_report()["conflicts"]


def live_customer_without_orders(sync: TwoWaySync) -> dict:
    ordered = {o["customer_id"] for o in webshop_get(sync, "orders")}
    return next(c for c in webshop_get(sync, "customers")
                if not c["deleted_at"] and c["id"] not in ordered)  # fmt: skip


def test_different_fields_edited_on_each_side_both_arrive(two_way):
    cb = cb_client(two_way.chargebee)
    customer = next(c for c in webshop_get(two_way, "customers") if not c["deleted_at"])
    in_chargebee = {o["id"] for o in cb_all(cb, "orders")}
    order = next(o for o in webshop_get(two_way, "orders") if f"cws_{o['id']}" in in_chargebee
                 and o["status"] == "paid")  # fmt: skip
    cb.Customer.update(f"cws_{customer['id']}", {"phone": "+45 70 70 70 70"})
    cb.Order.update(f"cws_{order['id']}", {"status": "shipped"})
    time.sleep(1.1)  # the webshop's edits are the newer ones: no tie decides anything
    webshop_patch(two_way, "customers", customer["id"], {"email": "new.address@example.com"})
    webshop_patch(two_way, "orders", order["id"], {"tracking_number": "WS-TRACK-9"})

    two_way.reset_counts()
    two_way.run()
    remote = cb.Customer.retrieve(f"cws_{customer['id']}").customer
    mine = one(two_way, "customers", customer["id"])
    assert (remote.phone, remote.email) == ("+45 70 70 70 70", "new.address@example.com")
    assert (mine["phone"], mine["email"]) == ("+45 70 70 70 70", "new.address@example.com")
    remote_order = cb.Order.retrieve(f"cws_{order['id']}").order
    mine_order = one(two_way, "orders", order["id"])
    assert (remote_order.status, remote_order.tracking_id) == ("shipped", "WS-TRACK-9")
    assert (mine_order["status"], mine_order["tracking_number"]) == ("shipped", "WS-TRACK-9")
    assert all_conflicts(two_way) == []
    # Chargebee's edits go first: the webshop customer was past the version the sync
    # accounted for, so the PATCH without a read was refused (412), then read and merged
    assert shop_answers(two_way, "customers.patch") == {"412": 1, "200": 1}
    assert shop_answers(two_way, "customers.get") == {"200": 1}
    assert_quiet(two_way)


def test_an_edit_made_only_in_chargebee_is_written_without_reading_the_webshop_record(two_way):
    """The link knows the webshop record at the version the sync accounted for: the PATCH
    goes with `If-Match` on that version, and no GET."""
    cb = cb_client(two_way.chargebee)
    customer = next(c for c in webshop_get(two_way, "customers") if not c["deleted_at"])
    cb.Customer.update(f"cws_{customer['id']}", {"phone": "+45 70 70 70 71"})
    two_way.reset_counts()
    two_way.run()
    assert one(two_way, "customers", customer["id"])["phone"] == "+45 70 70 70 71"
    assert shop_answers(two_way, "customers.patch") == {"200": 1}
    assert shop_answers(two_way, "customers.get") == {}
    assert_quiet(two_way)


def shop_answers(sync: TwoWaySync, operation: str) -> dict[str, int]:
    """The webshop's answers to one operation since its counts were last reset, by status."""
    return sync.shop.stats()["operations"].get(operation, {})


def test_the_same_field_edited_on_both_sides_is_decided_for_that_field_alone(two_way):
    cb = cb_client(two_way.chargebee)
    customer = next(c for c in webshop_get(two_way, "customers") if not c["deleted_at"])
    cb.Customer.update(f"cws_{customer['id']}", {"company": "Chargebee AB", "phone": "+1 1"})
    time.sleep(1.1)
    webshop_patch(two_way, "customers", customer["id"], {"company": "Webshop AB",
                                                          "last_name": "Webshopson"})  # fmt: skip
    two_way.run()
    remote = cb.Customer.retrieve(f"cws_{customer['id']}").customer
    mine = one(two_way, "customers", customer["id"])
    expected = ("Webshop AB", "+1 1", "Webshopson")  # newest wins the company; the rest merge
    assert (remote.company, remote.phone, remote.last_name) == expected
    assert (mine["company"], mine["phone"], mine["last_name"]) == expected
    [entry] = all_conflicts(two_way)
    [field] = entry["fields"]
    assert (field["field"], field["winner"]) == ("company", "webshop")
    assert (field["webshop"], field["chargebee"]) == ("Webshop AB", "Chargebee AB")
    assert field["base"] == customer["company"]
    assert_quiet(two_way)


def test_a_product_deleted_before_the_first_sync_does_not_hold_back_its_paid_orders(
    tmp_path, small_shop, chargebee
):
    shop = small_shop
    order = next(o for o in webshop_get(TwoWaySync(tmp_path, shop, chargebee), "orders")
                 if o["paid_at"] and not o["deleted_at"])  # fmt: skip
    product_id = order["line_items"][0]["product_id"]
    sync = TwoWaySync(tmp_path, shop, chargebee)
    webshop_send(sync, "DELETE", f"products/{product_id}", {})
    sync.run()
    cb = cb_client(chargebee)
    assert cb.Item.retrieve(f"cws_{product_id}").item.status == "archived"
    assert cb.Invoice.retrieve(f"cws_{order['id']}").invoice.status == "paid"
    assert cb.Order.retrieve(f"cws_{order['id']}").order.invoice_id == f"cws_{order['id']}"
    assert sync.last_report()["rejections"] == []
    assert_quiet(sync)


@pytest.mark.parametrize("first", ["chargebee", "webshop"])
def test_an_item_archived_in_chargebee_while_the_webshop_changes_its_price(two_way, first):
    cb = cb_client(two_way.chargebee)
    product = next(p for p in webshop_get(two_way, "products") if p["active"])
    price_id = f"cws_{product['id']}-{product['currency']}"
    edits = {
        "chargebee": lambda: cb.Item.update(f"cws_{product['id']}", {"status": "archived"}),
        "webshop": lambda: webshop_patch(
            two_way, "products", product["id"], {"price": product["price"] + 100}
        ),  # fmt: skip
    }
    edits[first]()
    time.sleep(1.1)
    edits["webshop" if first == "chargebee" else "chargebee"]()
    two_way.run()
    two_way.run()  # the archival reaches the price on the way back, then the forward run
    mine = one(two_way, "products", product["id"])
    item = cb.Item.retrieve(f"cws_{product['id']}").item
    price = cb.ItemPrice.retrieve(price_id).item_price
    assert (mine["active"], mine["price"]) == (False, product["price"] + 100)
    assert (item.status, price.price) == ("archived", product["price"] + 100)
    assert_quiet(two_way)


def test_an_item_archived_in_chargebee_and_reactivated_in_the_webshop_twice(two_way):
    """The second re-activation sends what the first sent, from the same link state: only
    the Chargebee version it was decided against tells it from a retry (found by seed 2 of
    the randomized test: Chargebee's idempotency cache answered it with the first write)."""
    cb = cb_client(two_way.chargebee)
    product = next(p for p in webshop_get(two_way, "products") if p["active"])
    item_id = f"cws_{product['id']}"
    for _ in range(2):
        cb.Item.update(item_id, {"status": "archived"})
        two_way.run()
        assert one(two_way, "products", product["id"])["active"] is False
        webshop_patch(two_way, "products", product["id"], {"active": True})
        two_way.run()
        assert cb.Item.retrieve(item_id).item.status == "active"
    assert_quiet(two_way)


def test_a_webshop_delete_against_a_chargebee_edit_ends_deleted_on_both_sides(two_way):
    cb = cb_client(two_way.chargebee)
    customer = live_customer_without_orders(two_way)
    cb.Customer.update(f"cws_{customer['id']}", {"company": "Edited in Chargebee"})
    time.sleep(1.1)
    webshop_send(two_way, "DELETE", f"customers/{customer['id']}", {})
    two_way.run()
    assert one(two_way, "customers", customer["id"])["deleted_at"] is not None
    gone = [c for c in cb_all(cb, "customers") if c["id"] == f"cws_{customer['id']}"]
    assert gone == []
    [entry] = [c for c in all_conflicts(two_way) if c["webshop_id"] == str(customer["id"])]
    assert entry["winner"] == "webshop" and entry["fields"][0]["field"] == "deleted"
    for report in (two_way.reverse_report(), two_way.last_report()):
        assert all(r["webshop_id"] for r in report["rejections"])
    assert_quiet(two_way)


def test_a_chargebee_delete_against_a_webshop_edit_ends_deleted_on_both_sides(two_way):
    cb = cb_client(two_way.chargebee)
    customer = live_customer_without_orders(two_way)
    webshop_patch(two_way, "customers", customer["id"], {"company": "Edited in the webshop"})
    cb.Customer.delete(f"cws_{customer['id']}")
    two_way.run()
    assert one(two_way, "customers", customer["id"])["deleted_at"] is not None
    assert [c for c in cb_all(cb, "customers") if c["id"] == f"cws_{customer['id']}"] == []
    [entry] = [c for c in all_conflicts(two_way) if c["webshop_id"] == str(customer["id"])]
    assert entry["winner"] == "chargebee" and entry["fields"][0]["field"] == "deleted"
    assert_quiet(two_way)
