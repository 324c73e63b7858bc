"""Both directions through `meltano run sync` on both sandboxes: edits on either side arrive
on the other, the sync's own writes are not read back as edits, records born in Chargebee
get a webshop twin, conflicts follow the policy, deletions and archival propagate."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.harness import (
    Sync,
    TwoWaySync,
    cb_all,
    cb_client,
    webshop_get,
    webshop_patch,
)


def webshop_one(sync: Sync, resource: str, record_id: Any) -> dict:
    return next(row for row in webshop_get(sync, resource) if row["id"] == int(record_id))


def assert_quiet(sync: TwoWaySync, runs: int = 2) -> None:
    for _ in range(runs):
        sync.reset_counts()
        sync.run()
        assert sync.write_counts() == (Counter(), Counter())


def test_edits_on_either_side_arrive_and_then_nothing_ping_pongs(two_way):
    assert_quiet(two_way, runs=1)  # the first sync's own writes are not read back
    cb = cb_client(two_way.chargebee)
    customers = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    product = next(p for p in webshop_get(two_way, "products") if p["active"])
    order = next(o for o in webshop_get(two_way, "orders") if o["status"] == "paid")
    cb.Customer.update(f"cws_{customers[0]['id']}", {"email": "edited.in.chargebee@example.com"})
    cb.ItemPrice.update(f"cws_{product['id']}-{product['currency']}", {"price": 4321})
    cb.Order.update(f"cws_{order['id']}", {"status": "shipped", "tracking_id": "CB-TRACK-1"})
    webshop_patch(two_way, "customers", customers[1]["id"], {"phone": "+45 11 22 33 44"})

    two_way.reset_counts()
    two_way.run()
    assert webshop_one(two_way, "customers", customers[0]["id"])["email"] == (
        "edited.in.chargebee@example.com"
    )
    assert webshop_one(two_way, "products", product["id"])["price"] == 4321
    shipped = webshop_one(two_way, "orders", order["id"])
    assert (shipped["status"], shipped["tracking_number"]) == ("shipped", "CB-TRACK-1")
    assert cb.Customer.retrieve(f"cws_{customers[1]['id']}").customer.phone == "+45 11 22 33 44"
    shop_writes, cb_writes = two_way.write_counts()
    assert shop_writes == Counter({"customers.patch": 1, "products.patch": 1, "orders.patch": 1})
    assert cb_writes == Counter({"update_customer": 1})
    assert_quiet(two_way)


def test_records_born_in_chargebee_get_a_webshop_twin_and_stay_linked(two_way):
    cb = cb_client(two_way.chargebee)
    cb.Customer.create({"id": "by_hand_1", "email": "hand@example.com", "first_name": "Åsa"})
    vase = {"name": "Hand-made Vase", "item_family_id": "webshop", "is_shippable": True}
    cb.Item.create({"id": "hand_item", "type": "charge", **vase})
    price = {"name": "Hand-made Vase EUR", "external_name": "Hand-made Vase", "price": 2500}
    cb.ItemPrice.create(
        {"id": "hand_item-EUR", "item_id": "hand_item", "currency_code": "EUR", **price}
    )
    two_way.run()
    twin = next(c for c in webshop_get(two_way, "customers") if c["email"] == "hand@example.com")
    assert twin["first_name"] == "Åsa"
    vase = next(p for p in webshop_get(two_way, "products") if p["name"] == "Hand-made Vase")
    assert (vase["price"], vase["currency"], vase["sku"]) == (2500, "EUR", "hand_item-EUR")

    # linked both ways: edits go to the same records, nothing is created twice
    webshop_patch(two_way, "customers", twin["id"], {"company": "Vases AB"})
    cb.ItemPrice.update("hand_item-EUR", {"price": 2700})
    two_way.run()
    assert cb.Customer.retrieve("by_hand_1").customer.company == "Vases AB"
    assert webshop_one(two_way, "products", vase["id"])["price"] == 2700
    emails = [c["email"] for c in webshop_get(two_way, "customers")]
    assert emails.count("hand@example.com") == 1
    assert not cb.Customer.list({"email": {"is": "hand@example.com"}, "limit": 10}).list[1:]
    assert_quiet(two_way)


@pytest.mark.parametrize(
    ("policy", "newer", "winner"),
    [
        ("newest_wins", "chargebee", "chargebee"),
        ("newest_wins", "webshop", "webshop"),
        ("chargebee_wins", "webshop", "chargebee"),
        ("webshop_wins", "chargebee", "webshop"),
    ],
)
def test_conflicts_follow_the_policy_and_are_reported(two_way, policy, newer, winner):
    """In the `sync` job the reverse run comes first and meets the conflict."""
    cb = cb_client(two_way.chargebee)
    customer = next(c for c in webshop_get(two_way, "customers") if not c["deleted_at"])
    edits = {
        "webshop": lambda: webshop_patch(
            two_way, "customers", customer["id"], {"company": "Edited in the webshop"}
        ),
        "chargebee": lambda: cb.Customer.update(
            f"cws_{customer['id']}", {"company": "Edited in Chargebee"}
        ),
    }
    older = "webshop" if newer == "chargebee" else "chargebee"
    edits[older]()
    time.sleep(1.1)  # Chargebee counts whole seconds
    edits[newer]()
    two_way.run_with(conflict_policy=policy)
    expected = {"chargebee": "Edited in Chargebee", "webshop": "Edited in the webshop"}[winner]
    assert webshop_one(two_way, "customers", customer["id"])["company"] == expected
    assert cb.Customer.retrieve(f"cws_{customer['id']}").customer.company == expected
    conflicts = two_way.reverse_report()["conflicts"]
    assert [(c["webshop_id"], c["winner"], c["policy"]) for c in conflicts] == [
        (str(customer["id"]), winner, policy)
    ]
    assert conflicts[0]["chargebee"]["company"] == "Edited in Chargebee"
    assert conflicts[0]["webshop"]["company"] == "Edited in the webshop"
    assert_quiet(two_way)


def test_deletes_and_archival_propagate_as_documented(two_way):
    cb = cb_client(two_way.chargebee)
    cb.Customer.create({"id": "leaves_soon", "email": "leaves@example.com", "first_name": "Lea"})
    product = next(p for p in webshop_get(two_way, "products") if p["active"])
    other = next(p for p in webshop_get(two_way, "products") if p["active"] and p != product)
    two_way.run()
    cb.Customer.delete("leaves_soon")  # no invoices: Chargebee deletes it, so does the webshop
    cb.Item.update(f"cws_{product['id']}", {"status": "archived"})  # -> product inactive
    webshop_patch(two_way, "products", other["id"], {"active": False})  # -> item archived
    two_way.run()
    twin = next(c for c in webshop_get(two_way, "customers") if c["email"] == "leaves@example.com")
    assert twin["deleted_at"] is not None
    assert webshop_one(two_way, "products", product["id"])["active"] is False
    assert cb.Item.retrieve(f"cws_{other['id']}").item.status == "archived"
    assert_quiet(two_way)


def test_a_run_that_would_delete_most_customers_is_stopped(two_way):
    cb = cb_client(two_way.chargebee)
    live = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    for customer in live[:15]:  # e.g. a broken listing or a wrong filter upstream
        cb.Customer.delete(f"cws_{customer['id']}")
    stopped = two_way.run(check=False)
    assert stopped.returncode != 0
    assert "max_delete_percent" in stopped.stderr
    still_live = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    assert len(live) - len(still_live) <= 10  # the guard's allowance, nothing beyond
    two_way.run_with(max_delete_percent=100)  # intended after all: one run allows it
    remaining = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    assert len(remaining) == len(live) - 15


@pytest.mark.parametrize("policy", ["newest_wins", "webshop_wins", "chargebee_wins"])
def test_a_forward_only_run_checks_chargebee_before_overwriting(two_way, policy):
    cb = cb_client(two_way.chargebee)
    customer = next(c for c in webshop_get(two_way, "customers") if not c["deleted_at"])
    cb.Customer.update(f"cws_{customer['id']}", {"phone": "+1 555 0100", "company": ""})
    time.sleep(1.1)  # the webshop's edit is the newer one
    webshop_patch(two_way, "customers", customer["id"], {"phone": "+46 8 555 0199"})
    two_way.run(blocks=("tap-customwebshop", "target-chargebee"), conflict_policy=policy)
    winner = "chargebee" if policy == "chargebee_wins" else "webshop"
    phone = {"chargebee": "+1 555 0100", "webshop": "+46 8 555 0199"}[winner]
    remote = cb.Customer.retrieve(f"cws_{customer['id']}").customer
    assert remote.phone == phone
    assert remote.company is None  # cleared in Chargebee only: that edit stands, field by field
    conflicts = two_way.last_report()["conflicts"]
    assert [(c["webshop_id"], c["winner"], c["policy"]) for c in conflicts] == [
        (str(customer["id"]), winner, policy)
    ]
    assert [f["field"] for f in conflicts[0]["fields"]] == ["phone"]
    assert conflicts[0]["chargebee"]["phone"] == "+1 555 0100"
    assert conflicts[0]["webshop"]["phone"] == "+46 8 555 0199"
    two_way.run_with(conflict_policy=policy)  # the `sync` job settles the other side
    settled = webshop_one(two_way, "customers", customer["id"])
    assert (settled["phone"], settled["company"]) == (phone, None)
    assert_quiet(two_way)


def test_edits_made_only_in_the_webshop_are_not_taken_for_conflicts(two_way):
    cb = cb_client(two_way.chargebee)
    live = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    in_chargebee = {o["id"] for o in cb_all(cb, "orders")}
    orders = [o for o in webshop_get(two_way, "orders") if f"cws_{o['id']}" in in_chargebee]
    for customer in live:  # a new resource_version, but no mapped field touched
        cb.Customer.update(f"cws_{customer['id']}", {"net_term_days": 7})
        webshop_patch(two_way, "customers", customer["id"], {"phone": f"+49 30 {customer['id']}"})
    for order in orders:
        cb.Order.update(f"cws_{order['id']}", {"batch_id": "B-7"})
        webshop_patch(two_way, "orders", order["id"], {"tracking_number": f"T-{order['id']}"})
    two_way.reset_counts()
    two_way.run(blocks=("tap-customwebshop", "target-chargebee"))
    reads = two_way.chargebee.stats()["operations"]
    assert sum(reads["retrieve_customer"].values()) >= len(live)  # each update checked first
    report = two_way.last_report()
    assert report["conflicts"] == []
    assert report["streams"]["customers"]["updated"] == len(live)
    assert report["streams"]["orders"]["updated"] == len(orders)
    for order in orders:
        tracking = cb.Order.retrieve(f"cws_{order['id']}").order.tracking_id
        assert tracking == f"T-{order['id']}"
    for customer in live:
        remote = cb.Customer.retrieve(f"cws_{customer['id']}").customer
        assert remote.phone == f"+49 30 {customer['id']}"
