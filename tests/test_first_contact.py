"""First contact (issue 11): records that exist on both sides before the first `meltano run
sync` are matched, never duplicated, and what cannot be matched safely is reported. Both
sandboxes are filled before the first sync: the webshop through its API, Chargebee through
the official SDK."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from sync_common.links import LinkStore
from tests.harness import TwoWaySync, cb_all, cb_client, webshop_get, webshop_post


@pytest.fixture
def two_way(tmp_path, webshop, chargebee) -> TwoWaySync:
    return TwoWaySync(tmp_path, webshop, chargebee)  # both sandboxes start empty


def assert_quiet(sync: TwoWaySync) -> None:
    """A further sync writes nothing at either server."""
    sync.reset_counts()
    sync.run()
    assert sync.write_counts() == (Counter(), Counter())


def dry_run(sync: TwoWaySync) -> tuple[dict, dict, str]:
    """`meltano run sync` as a plan: (the way back's report, the forward one's, the log)."""
    saved = dict(sync.env)
    sync.env.update(TARGET_CHARGEBEE_DRY_RUN="true", TARGET_CUSTOMWEBSHOP_DRY_RUN="true")
    try:
        result = sync.run()
    finally:
        sync.env = saved
    return sync.reverse_report(), sync.last_report(), result.stderr


def test_emails_differing_in_case_and_spaces_are_one_customer_on_each_side(two_way):
    cb = cb_client(two_way.chargebee)
    mia = webshop_post(
        two_way, "customers", {"email": "Mixed.Case@Example.com", "first_name": "Mia"}
    )
    sam = webshop_post(
        two_way, "customers", {"email": "  sam.spaced@example.com ", "first_name": "Sam"}
    )
    cb.Customer.create({"id": "cb_mia", "email": "mixed.case@example.com", "first_name": "Mia"})
    cb.Customer.create({"id": "cb_sam", "email": "SAM.Spaced@Example.COM", "first_name": "Sam"})

    two_way.reset_counts()
    back, forward, log = dry_run(two_way)
    assert back["match_report"]["customers"]["matched"] == 2
    assert forward["match_report"]["customers"]["matched"] == 2
    assert "first contact: customers 2 matched, 0 ambiguous, 0 new" in log
    assert two_way.write_counts() == (Counter(), Counter())

    two_way.run()
    assert len(webshop_get(two_way, "customers")) == 2
    assert sorted(c["id"] for c in cb_all(cb, "customers")) == ["cb_mia", "cb_sam"]
    links = LinkStore(two_way.link_store_url)
    for webshop_customer, chargebee_id in ((mia, "cb_mia"), (sam, "cb_sam")):
        link = links.get_by_chargebee("customers", chargebee_id)
        assert link is not None and link.webshop_id == str(webshop_customer["id"])
    for report in (two_way.reverse_report(), two_way.last_report()):
        assert report["rejected"] == 0, report["rejections"]
        assert report["ambiguous_matches"] == []
    assert_quiet(two_way)


def test_two_chargebee_customers_with_one_email_are_reported_not_linked(two_way):
    cb = cb_client(two_way.chargebee)
    # two in Chargebee, none in the webshop: no webshop customer is made for either
    cb.Customer.create({"id": "cb_twin_1", "email": "twin@example.com", "first_name": "Tea"})
    # two in Chargebee, one in the webshop: it is linked to neither, nothing is created
    cb.Customer.create({"id": "cb_pair_1", "email": "pair@example.com", "first_name": "Per"})
    time.sleep(2.1)  # the second of each pair is newer than the first one's bookmark margin
    cb.Customer.create({"id": "cb_twin_2", "email": "Twin@Example.com", "first_name": "Tia"})
    cb.Customer.create({"id": "cb_pair_2", "email": "PAIR@example.com", "first_name": "Pia"})
    pair = webshop_post(two_way, "customers", {"email": "Pair@Example.com", "first_name": "Pål"})

    two_way.reset_counts()
    back, forward, log = dry_run(two_way)
    assert two_way.write_counts() == (Counter(), Counter())
    expected = {"matched": 0, "ambiguous": 4, "new": 0, "ambiguous_several_in_chargebee": 4}
    assert back["match_report"]["customers"] == expected
    assert forward["match_report"]["customers"]["ambiguous"] == 1
    assert "ambiguous customers" in log

    two_way.run()
    emails = [c["email"] for c in webshop_get(two_way, "customers")]
    assert emails == ["Pair@Example.com"]  # nothing created for the twins
    assert len(cb_all(cb, "customers")) == 4  # nothing created for the webshop's Pål
    links = LinkStore(two_way.link_store_url)
    for chargebee_id in ("cb_twin_1", "cb_twin_2", "cb_pair_1", "cb_pair_2"):
        assert links.get_by_chargebee("customers", chargebee_id) is None
    assert links.get_by_webshop("customers", str(pair["id"])) is None
    back = two_way.reverse_report()
    listed = {entry["chargebee_id"]: entry for entry in back["ambiguous_matches"]}
    assert set(listed) == {"cb_twin_1", "cb_twin_2", "cb_pair_1", "cb_pair_2"}
    assert listed["cb_twin_1"]["candidates"] == ["cb_twin_1", "cb_twin_2"]
    assert back["streams"]["customers"]["skipped"] == 4
    assert back["streams"]["customers"]["created"] == 0
    forward = two_way.last_report()
    assert [(e["webshop_id"], e["candidates"]) for e in forward["ambiguous_matches"]] == [
        (str(pair["id"]), ["cb_pair_1", "cb_pair_2"])
    ]
    assert forward["streams"]["customers"]["skipped"] == 1
    assert forward["rejected"] == 0, forward["rejections"]

    # one of each pair edited: the incremental read brings just it (the first ones are
    # older than the bookmark), and the kept ambiguous records come with it: not matched alone
    cb.Customer.update("cb_twin_2", {"first_name": "Tiia"})
    cb.Customer.update("cb_pair_2", {"first_name": "Piia"})
    assert_quiet(two_way)
    assert len(two_way.reverse_report()["ambiguous_matches"]) == 4
    # every record read again (no Meltano state): still ambiguous, still nothing linked
    two_way.env["MELTANO_DATABASE_URI"] = f"sqlite:///{two_way.tmp / 'meltano-again.db'}"
    assert_quiet(two_way)
    assert len(two_way.reverse_report()["ambiguous_matches"]) == 4
    assert len(two_way.last_report()["ambiguous_matches"]) == 1
    for chargebee_id in ("cb_twin_1", "cb_twin_2", "cb_pair_1", "cb_pair_2"):
        assert links.get_by_chargebee("customers", chargebee_id) is None
    assert len(webshop_get(two_way, "customers")) == 1
    assert {letter.record_key for letter in links.open_dead_letters()} == {
        "cb_twin_1", "cb_twin_2", "cb_pair_1", "cb_pair_2", str(pair["id"])
    }  # fmt: skip

    # a person makes the e-mails differ: each is linked or created, none read anew is lost
    cb.Customer.update("cb_twin_2", {"email": "tia@example.com"})
    cb.Customer.update("cb_pair_2", {"email": "pia@example.com"})
    two_way.run()
    assert links.get_by_chargebee("customers", "cb_pair_1").webshop_id == str(pair["id"])
    by_email = {c["email"].casefold(): c for c in webshop_get(two_way, "customers")}
    assert sorted(by_email) == [
        "pair@example.com", "pia@example.com", "tia@example.com", "twin@example.com"
    ]  # fmt: skip
    for chargebee_id in ("cb_twin_1", "cb_twin_2", "cb_pair_2"):
        link = links.get_by_chargebee("customers", chargebee_id)
        assert link is not None and link.webshop_id != str(pair["id"])
    assert len(cb_all(cb, "customers")) == 4
    assert links.open_dead_letters() == []
    assert two_way.reverse_report()["ambiguous_matches"] == []
    assert two_way.last_report()["ambiguous_matches"] == []
    assert_quiet(two_way)


def create_item(cb, item_id: str, item_name: str, price: dict) -> None:
    cb.Item.create(
        {"id": item_id, "name": item_name, "type": "charge", "item_family_id": "webshop"}
    )
    cb.ItemPrice.create(
        {"id": f"{item_id}-EUR", "item_id": item_id, "currency_code": "EUR", **price}
    )


def test_a_chargebee_item_named_like_a_webshop_product_is_that_product(two_way):
    cb = cb_client(two_way.chargebee)
    vase = webshop_post(
        two_way,
        "products",
        {"sku": "VASE-1", "name": "Hand-made Vase", "price": 2500, "currency": "EUR"},
    )
    bowl = webshop_post(
        two_way, "products", {"sku": "BOWL-1", "name": "Bowl", "price": 900, "currency": "EUR"}
    )
    cb.ItemFamily.create({"id": "webshop", "name": "webshop"})
    # by the price's external name (case and spaces aside)
    create_item(
        cb,
        "hand_vase",
        "hand-made vase",
        {"name": "Vase EUR", "external_name": "Hand-made vase ", "price": 2500},
    )
    # by the item's name: the price's own name is another
    create_item(cb, "hand_bowl", "BOWL", {"name": "Bowl in euro", "price": 900})

    two_way.reset_counts()
    back, forward, log = dry_run(two_way)
    assert two_way.write_counts() == (Counter(), Counter())
    assert back["match_report"]["item_prices"]["matched"] == 2
    assert back["match_report"]["item_prices"]["new"] == 0

    two_way.run()
    products = webshop_get(two_way, "products")
    assert sorted(p["id"] for p in products) == sorted([vase["id"], bowl["id"]])  # no second
    assert sorted(i["id"] for i in cb_all(cb, "items")) == ["hand_bowl", "hand_vase"]
    prices = sorted(p["id"] for p in cb_all(cb, "item_prices"))
    assert prices == ["hand_bowl-EUR", "hand_vase-EUR"]
    links = LinkStore(two_way.link_store_url)
    for product, item_id in ((vase, "hand_vase"), (bowl, "hand_bowl")):
        assert links.get_by_chargebee("items", item_id).webshop_id == str(product["id"])
        price_link = links.get_by_chargebee("item_prices", f"{item_id}-EUR")
        assert price_link.webshop_id == str(product["id"])
    for report in (two_way.reverse_report(), two_way.last_report()):
        assert report["rejected"] == 0, report["rejections"]
        assert report["ambiguous_matches"] == []
    assert_quiet(two_way)


def test_a_forward_only_run_adopts_the_item_by_name_and_its_price(two_way):
    """Without the way back first: target-chargebee matches the item by name, case aside,
    and finds that item's price in the currency rather than creating a second one."""
    cb = cb_client(two_way.chargebee)
    vase = webshop_post(
        two_way,
        "products",
        {"sku": "VASE-1", "name": "Hand-made Vase", "price": 2500, "currency": "EUR"},
    )
    cb.ItemFamily.create({"id": "webshop", "name": "webshop"})
    create_item(cb, "hand_vase", " HAND-MADE VASE", {"name": "Vase EUR", "price": 2000})
    two_way.run(blocks=("tap-customwebshop", "target-chargebee"))
    report = two_way.last_report()
    assert report["rejected"] == 0, report["rejections"]
    assert report["streams"]["items"]["matched"] == 1
    assert report["streams"]["item_prices"]["matched"] == 1
    assert [i["id"] for i in cb_all(cb, "items")] == ["hand_vase"]
    assert [p["id"] for p in cb_all(cb, "item_prices")] == ["hand_vase-EUR"]
    links = LinkStore(two_way.link_store_url)
    assert links.get_by_webshop("items", str(vase["id"])).chargebee_id == "hand_vase"
    assert links.get_by_webshop("item_prices", str(vase["id"])).chargebee_id == "hand_vase-EUR"
