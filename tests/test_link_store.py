"""The link store on both databases it supports: SQLite (a file) and the machine's PostgreSQL
(a fresh database per test)."""

from __future__ import annotations

import datetime
import decimal
import threading
import uuid

import psycopg
import pytest

from sync_common.links import LinkConflict, LinkStore, LinkStoreUnavailable, content_hash

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'links.db'}"
        return
    name = f"links_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_links_keep_both_ids_versions_and_hashes(store_url):
    store = LinkStore(store_url)
    assert store.get_by_webshop("customer", "42") is None
    saved = store.save(
        "customer", "42", "cws_42", webshop_version=3, chargebee_version=1700000000123,
        chargebee_hash="abc", deterministic_id="cws_42",
    )  # fmt: skip
    assert (saved.webshop_version, saved.chargebee_version) == (3, 1700000000123)
    assert saved.chargebee_synced_at.tzinfo is not None and saved.webshop_hash is None

    # a side left out keeps its stored state; the other side moves on
    later = store.save("customer", "42", "cws_42", webshop_hash="def", webshop_version=4)
    assert (later.chargebee_hash, later.chargebee_version) == ("abc", 1700000000123)
    assert (later.webshop_hash, later.webshop_version) == ("def", 4)
    assert store.get_by_chargebee("customer", "cws_42") == later
    assert store.get_by_webshop("order", "42") is None  # links are per resource

    # a link made by matching: found by the id the sync would have chosen
    store.save("customer", "7", "existing_cust", deterministic_id="cws_7")
    assert store.get_by_deterministic("customer", "cws_7").chargebee_id == "existing_cust"
    assert store.get_by_deterministic("customer", "cws_42").webshop_id == "42"

    with pytest.raises(LinkConflict, match="already linked to webshop customer 42"):
        store.save("customer", "43", "cws_42")
    store.close()

    reopened = LinkStore(store_url)  # the data outlives the process that wrote it
    assert reopened.get_by_webshop("customer", "42") == later
    reopened.close()


def test_dead_letters_keep_the_record_and_reason_per_run(store_url):
    first = LinkStore(store_url, run_id="run-1")
    record = {"id": "cws_9", "email": "bad", "when": datetime.datetime(2026, 1, 1)}
    first.add_dead_letter(
        "customers", "9", "param_wrong_value: invalid email", record, details={"param": "email"}
    )
    second = LinkStore(store_url, run_id="run-2")
    second.add_dead_letter("orders", "5", "resource_not_found: invoice", {"id": "cws_5"})
    letters = second.dead_letters("run-1")
    assert len(letters) == 1
    assert (letters[0].stream, letters[0].record_key) == ("customers", "9")
    assert letters[0].record == {"id": "cws_9", "email": "bad", "when": "2026-01-01T00:00:00"}
    assert letters[0].details == {"param": "email"}
    assert [letter.run_id for letter in second.dead_letters()] == ["run-1", "run-2"]
    first.close()
    second.close()


def test_concurrent_saves_of_one_link_leave_one_row(store_url):
    store = LinkStore(store_url)
    errors = []

    def save(n: int) -> None:
        try:
            store.save("item", "1", "cws_1", chargebee_version=n)
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get_by_webshop("item", "1").chargebee_version in range(8)
    store.close()


def test_content_hash_ignores_key_order_and_number_spelling():
    assert content_hash({"a": 1, "b": [1.0, "x"]}) == content_hash({"b": [1, "x"], "a": 1})
    assert content_hash({"p": decimal.Decimal("12.00")}) == content_hash({"p": 12})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def test_an_unreachable_database_is_a_clear_error():
    with pytest.raises(LinkStoreUnavailable, match="cannot open") as failed:
        LinkStore("postgresql://postgres:s3cret@127.0.0.1:1/links")
    assert "s3cret" not in str(failed.value)
    with pytest.raises(LinkStoreUnavailable, match="unsupported"):
        LinkStore("mysql://127.0.0.1/links")
