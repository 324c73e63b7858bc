"""target-chargebee end to end: `meltano run tap-customwebshop target-chargebee` against the
webshop sandbox (generated data) and the Chargebee emulator, checked with the official
chargebee SDK, field by field."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from sync_common.links import LinkStore
from tests.harness import (
    RESOURCES,
    Sync,
    assert_mirrors,
    cb_all,
    cb_client,
    expected_chargebee,
    is_write,
    webshop_get,
    webshop_patch,
)


def test_first_run_mirrors_the_webshop_then_reruns_write_nothing(sync):
    sync.run()
    expected = expected_chargebee(sync)
    assert_mirrors(sync, expected)
    report = sync.last_report()
    assert report["rejected"] == 0, report["rejections"]
    # Chargebee holds exactly the webshop's records, no more.
    client = cb_client(sync.chargebee)
    customers = cb_all(client, "customers")
    assert len(customers) == len([c for c in expected["customers"].values() if not c["deleted"]])
    assert len({c["email"] for c in customers}) == len(customers)

    sync.chargebee.reset_stats()
    sync.run()
    assert sum(sync.writes().values()) == 0, sync.writes()
    assert sync.last_report()["rejected"] == 0


def test_edits_make_exactly_the_corresponding_updates(sync):
    sync.run()
    customer = webshop_get(sync, "customers")[0]
    product = next(p for p in webshop_get(sync, "products") if p.get("active"))
    order = next(o for o in webshop_get(sync, "orders") if o.get("paid_at"))
    webshop_patch(sync, "customers", customer["id"], {"phone": "+49 30 5550100"})
    webshop_patch(sync, "products", product["id"], {"price": int(product["price"]) + 100})
    webshop_patch(sync, "orders", order["id"], {"tracking_number": "TRACK-1", "carrier": "DHL"})
    sync.chargebee.reset_stats()
    sync.run()
    writes = +sync.writes()
    assert sum(writes.values()) == 3, writes  # one customer, one item price, one order update
    assert_mirrors(sync, expected_chargebee(sync))
    report = sync.last_report()["streams"]
    assert report["customers"]["updated"] == 1
    assert report["item_prices"]["updated"] == 1
    assert report["items"]["updated"] == 0
    assert report["orders"]["updated"] == 1
    assert report["invoices"]["updated"] == 0


def test_customers_are_placed_in_the_business_entity_and_transferred_on_change(sync):
    sync.run(business_entity_id="eu")
    client = cb_client(sync.chargebee)
    placed = {c["business_entity_id"] for c in cb_all(client, "customers")}
    assert placed == {"eu"}
    customer = next(c for c in webshop_get(sync, "customers") if not c["deleted_at"])
    webshop_patch(sync, "customers", customer["id"], {"phone": "+46 8 123 456"})
    sync.chargebee.reset_stats()
    sync.run(business_entity_id="us")
    writes = +sync.writes()
    # read again: the edited customer and, as updated_since is inclusive, maybe run 1's last
    assert writes["update_customer"] == 1 and writes["transfer"] in (1, 2), writes
    assert set(writes) == {"update_customer", "transfer"}
    moved = client.Customer.retrieve(f"cws_{customer['id']}").customer
    assert (moved.business_entity_id, moved.phone) == ("us", "+46 8 123 456")
    active = [c for c in cb_all(client, "customers") if c.get("active_id") in (None, c["id"])]
    assert len(active) == len({c["email"] for c in active})  # no customer twice


def test_server_errors_timeouts_and_lost_answers_lose_nothing_and_duplicate_nothing(sync):
    # 5xx before acting, hangs, and writes that were applied but whose answer was lost:
    # the client retries with the same idempotency key, so each write is applied once
    sync.chargebee.set_knobs(
        error_rate=0.05, timeout_rate=0.01, hang_seconds=3, drop_response_rate=0.05, seed=5
    )
    sync.run(request_timeout=2)
    sync.chargebee.set_knobs(error_rate=0, timeout_rate=0, drop_response_rate=0)
    statuses = Counter()
    for by_status in sync.chargebee.stats()["operations"].values():
        statuses.update({int(status): n for status, n in by_status.items()})
    assert sum(n for status, n in statuses.items() if status >= 500) > 0
    assert sync.last_report()["rejected"] == 0
    expected = expected_chargebee(sync)
    assert_mirrors(sync, expected)
    client = cb_client(sync.chargebee)
    for resource in RESOURCES:
        ids = [row["id"] for row in cb_all(client, resource)]
        wanted = {i for i, r in expected[resource].items() if not r.get("deleted")}
        assert len(ids) == len(set(ids)) and set(ids) == wanted, resource
    sync.chargebee.wait_until_idle()  # a request of the run that still hangs is its, not the next's
    sync.chargebee.reset_stats()
    sync.run()
    assert sum(sync.writes().values()) == 0


def test_prepopulated_customers_are_matched_by_email(sync):
    client = cb_client(sync.chargebee)
    expected = expected_chargebee(sync)
    customers = [c for c in expected["customers"].values() if not c["deleted"]][:10]
    for n, customer in enumerate(customers):
        client.Customer.create(
            {"id": f"hand_{n}", "email": customer["email"], "first_name": "Typed by hand"}
        )
    # never synced, so no base: each field in which they differ is a conflict the policy
    # decides (an empty value never clears a filled one)
    sync.run(conflict_policy="webshop_wins")
    conflicts = {c["chargebee_id"]: c for c in sync.last_report()["conflicts"]}
    assert set(conflicts) == {f"hand_{n}" for n in range(len(customers))}
    assert all(c["chargebee"]["first_name"] == "Typed by hand" for c in conflicts.values())
    all_customers = cb_all(client, "customers")
    emails = Counter(c["email"] for c in all_customers)
    assert max(emails.values()) == 1, "duplicate customers"
    assert len(all_customers) == len(
        [c for c in expected["customers"].values() if not c["deleted"]]
    )
    by_email = {c["email"]: c for c in all_customers}
    for n, customer in enumerate(customers):
        matched = by_email[customer["email"]]
        assert matched["id"] == f"hand_{n}"
        assert matched["first_name"] == customer["first_name"]  # the webshop's won
        assert matched.get("last_name") == customer["last_name"]  # filled from the webshop
    # Their invoices point at the hand-made ids.
    hand_ids = {f"hand_{n}" for n in range(len(customers))}
    invoices = cb_all(client, "invoices")
    assert not {i["customer_id"] for i in invoices} & {c["id"] for c in customers}
    assert {i["customer_id"] for i in invoices} & hand_ids


@pytest.mark.meltano  # Meltano's rendering of the plugin's structured log
def test_rejected_record_is_dead_lettered_while_the_others_sync(sync):
    customer = webshop_get(sync, "customers")[0]
    webshop_patch(sync, "customers", customer["id"], {"company": "X" * 252})  # > 250 in Chargebee
    result = sync.run()
    # structured logging: Meltano shows the reject as a warning, the summary as info
    rejected_line = next(
        line for line in result.stderr.splitlines() if "Rejected customers" in line
    )
    assert "warning" in rejected_line.lower(), rejected_line
    summary_line = next(line for line in result.stderr.splitlines() if "Run summary" in line)
    assert "[info" in summary_line, summary_line
    report = sync.last_report()
    assert report["rejected"] == 1
    rejection = report["rejections"][0]
    assert rejection["stream"] == "customers"
    assert rejection["webshop_id"] == str(customer["id"])
    assert "company" in rejection["reason"]
    dead = LinkStore(sync.link_store_url).dead_letters()
    assert [(d.stream, d.record_key) for d in dead] == [("customers", str(customer["id"]))]
    assert dead[0].record["company"] == "X" * 252 and "company" in dead[0].reason
    expected = expected_chargebee(sync)
    expected["customers"].pop(f"cws_{customer['id']}")
    for resource in ("invoices", "orders"):  # its orders wait for it, then dead-letter
        for key in [
            k for k, r in expected[resource].items() if r["customer_id"] == f"cws_{customer['id']}"
        ]:
            expected[resource].pop(key)
    assert_mirrors(sync, expected)


def test_dry_run_plans_and_writes_nothing(sync):
    result = sync.run(dry_run="true")
    assert sum(sync.writes().values()) == 0
    report = sync.last_report()
    assert report["dry_run"] is True
    assert report["streams"]["customers"]["created"] > 0
    assert "Dry-run plan" in result.stderr
    sync.run()  # the dry run emitted no state: the real run still sees everything
    assert_mirrors(sync, expected_chargebee(sync))


def test_parents_beyond_the_memory_cap_are_found_in_the_link_store(sync):
    """Room for one parent in memory: the others are read back from the link store, never
    from Chargebee, and nothing is written twice. A dry run saves no links: it keeps all."""
    sync.env["SYNC_KNOWN_PARENTS"] = "1"
    sync.run(dry_run="true")
    assert sync.last_report()["rejected"] == 0, sync.last_report()["rejections"]
    sync.run()
    assert_mirrors(sync, expected_chargebee(sync))
    assert sync.last_report()["rejected"] == 0
    # every record again (no Meltano state): all linked, each parent resolved anew
    sync.env["MELTANO_DATABASE_URI"] = f"sqlite:///{sync.tmp / 'meltano-again.db'}"
    sync.chargebee.reset_stats()
    sync.run()
    assert sync.last_report()["streams"]["orders"]["unchanged"] > 0
    assert sum(sync.writes().values()) == 0, sync.writes()
    operations = sync.chargebee.stats()["operations"]
    lookups = [op for op in operations if "retrieve" in op.lower() and "famil" not in op.lower()]
    assert not lookups, operations  # GET /{resource}/{id}: a parent looked up in Chargebee


def test_new_inactive_items_are_archived_in_batches_after_their_prices(sync):
    """Archivals in batches of 1, each as soon as its product's maps ran (the other tests run
    the default batch, which the state messages and the end empty): every inactive
    product's item archived after its price, no call refused."""
    sync.env["SYNC_ARCHIVE_BATCH"] = "1"
    sync.chargebee.reset_stats()
    sync.run()
    assert sync.last_report()["rejected"] == 0, sync.last_report()["rejections"]
    assert_mirrors(sync, expected_chargebee(sync))
    inactive = [p for p in webshop_get(sync, "products") if not p.get("active")]
    assert len(inactive) >= 2  # more than one batch
    items = {i["id"]: i for i in cb_all(cb_client(sync.chargebee), "items")}
    assert all(items[f"cws_{p['id']}"]["status"] == "archived" for p in inactive)
    statuses = sync.chargebee.stats()["operations"]
    refused = {
        op: n for op, by in statuses.items() if is_write(op) for code, n in by.items()
        if code >= "400"
    }  # fmt: skip
    assert not refused, refused


def test_link_store_on_postgresql(tmp_path, shop, chargebee):
    import psycopg

    name = f"links_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        sync = Sync(
            tmp_path, shop, chargebee, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        )
        sync.run()
        assert_mirrors(sync, expected_chargebee(sync))
        sync.chargebee.reset_stats()
        sync.run()
        assert sum(sync.writes().values()) == 0
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_wrong_key_fails_at_start_naming_the_setting(sync):
    # a key no path holds (the test's directory is named after it, and the log names the
    # link store's path)
    result = sync.run(check=False, api_key="not-the-key-5d1c")
    assert result.returncode != 0
    assert "api_key" in result.stderr
    assert "not-the-key-5d1c" not in result.stderr
