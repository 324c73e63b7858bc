"""The link store on both databases it supports: SQLite (a file) and the machine's PostgreSQL
(a fresh database per test)."""

from __future__ import annotations

import concurrent.futures
import datetime
import decimal
import fcntl
import multiprocessing
import subprocess
import sys
import threading
import time

import alembic.script
import pytest
import sqlalchemy

from sync_common.links import (
    MIGRATIONS,
    SCHEMA_HEAD,
    LinkConflict,
    LinkedSystems,
    LinkStore,
    LinkStoreBoundElsewhere,
    LinkStoreUnavailable,
    NoLinkStore,
    content_hash,
    default_link_store_url,
)


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
        "customers", "9", "param_wrong_value: invalid email", record,
        source="webshop", details={"param": "email"},
    )  # fmt: skip
    second = LinkStore(store_url, run_id="run-2")
    second.add_dead_letter(
        "orders", "5", "resource_not_found: invoice", {"id": "cws_5"}, source="webshop"
    )
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


def test_a_store_is_bound_to_the_first_pair_that_opens_it_and_refuses_others(store_url):
    ours = LinkedSystems.of("http://shop.example/api/v1/", "https://acme.chargebee.com/api/v2")
    other = LinkedSystems.of("http://shop.example/api/v1", "https://acme-test.chargebee.com/api/v2")
    LinkStore(store_url, systems=ours).close()
    spelled = LinkedSystems.of("HTTP://Shop.Example/api/v1", "https://acme.chargebee.com/api/v2")
    again = LinkStore(store_url, systems=spelled)
    assert again.systems == ours  # the same systems, however the URL is spelled
    again.close()
    with pytest.raises(LinkStoreBoundElsewhere) as refused:
        LinkStore(store_url, systems=other)
    message = str(refused.value)
    assert "acme.chargebee.com" in message and "acme-test.chargebee.com" in message
    assert "link_store_url" in message
    LinkStore(store_url).close()  # a look at the store, without a pair, is not refused


def test_the_default_store_is_one_per_pair_and_an_older_one_stays_with_its_pair(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MELTANO_SYS_DIR_ROOT", str(tmp_path / ".meltano"))
    a = LinkedSystems.of("http://shop/api/v1", "http://a/api/v2")
    b = LinkedSystems.of("http://shop/api/v1", "http://b/api/v2")
    legacy = tmp_path / ".meltano" / "sync" / "links.db"
    legacy.parent.mkdir(parents=True)
    old = LinkStore(f"sqlite:///{legacy}")  # made by a version that knew no pairs
    old.save("customers", "1", "cws_1")
    old.close()
    first = LinkStore(systems=a)  # the first pair to open it keeps it, links and all
    assert first.get_by_webshop("customers", "1") is not None
    first.close()
    second = LinkStore(systems=b)
    assert second.get_by_webshop("customers", "1") is None  # its own store
    assert default_link_store_url(b) != default_link_store_url(a)
    second.close()
    assert oct(legacy.stat().st_mode & 0o777) == "0o600"  # holds personal data


#: The tables as the version before schema migrations made them (and a link in them).
BEFORE_MIGRATIONS = [
    """CREATE TABLE links (id INTEGER PRIMARY KEY, resource VARCHAR(50) NOT NULL,
       webshop_id VARCHAR(255) NOT NULL, chargebee_id VARCHAR(255) NOT NULL,
       webshop_version JSON, webshop_hash TEXT, webshop_synced_at TIMESTAMP,
       chargebee_version JSON, chargebee_hash TEXT, chargebee_synced_at TIMESTAMP,
       deterministic_id VARCHAR(255),
       CONSTRAINT links_webshop_key UNIQUE (resource, webshop_id),
       CONSTRAINT links_chargebee_key UNIQUE (resource, chargebee_id))""",
    """CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, run_id VARCHAR(64) NOT NULL,
       stream VARCHAR(100) NOT NULL, record_key VARCHAR(255) NOT NULL, reason TEXT NOT NULL,
       record JSON, details JSON, created_at TIMESTAMP NOT NULL)""",
    """INSERT INTO links (resource, webshop_id, chargebee_id, webshop_version, chargebee_hash,
       deterministic_id) VALUES ('customers', '42', 'hand_42', '3', 'main=abc', 'cws_42')""",
]


def test_a_store_made_before_migrations_is_upgraded_in_place(store_url):
    engine = sqlalchemy.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    with engine.begin() as db:
        for statement in BEFORE_MIGRATIONS:
            db.execute(
                sqlalchemy.text(statement.replace("id INTEGER PRIMARY", f"id {serial} PRIMARY"))
            )
    engine.dispose()
    store = LinkStore(store_url, systems=LinkedSystems.of("http://shop/api", "http://cb/api"))
    kept = store.get_by_webshop("customers", "42")
    assert (kept.chargebee_id, kept.webshop_version, kept.chargebee_hash) == (
        "hand_42",
        3,
        "main=abc",
    )
    saved = store.save("customers", "42", "hand_42", webshop_base={"email": "a@example.com"})
    assert saved.webshop_base == {"email": "a@example.com"}  # the columns added since
    store.close()
    engine = sqlalchemy.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as db:
        assert db.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar() == (
            SCHEMA_HEAD
        )
    engine.dispose()


def test_the_schema_head_is_the_newest_migration_and_a_current_store_opens_without_alembic(
    store_url,
):
    assert alembic.script.ScriptDirectory(str(MIGRATIONS)).get_current_head() == SCHEMA_HEAD
    LinkStore(store_url).close()  # made, at the head
    reopen = (
        "import sys; from sync_common.links import LinkStore; "
        f"LinkStore({store_url!r}).close(); print(sorted(m for m in sys.modules if 'alembic' in m))"
    )
    done = subprocess.run([sys.executable, "-c", reopen], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # Alembic's import: 0.3-0.4 s of CPU


def _open(url: str, systems: LinkedSystems) -> str:
    LinkStore(url, systems=systems).close()
    return "ok"


def _look(url: str) -> str:
    """A tap's look at the store: there or not yet, never "cannot open"."""
    try:
        LinkStore(url, look_only=True).close()
    except NoLinkStore:
        return "not yet"
    except LinkStoreUnavailable as exc:
        return str(exc)
    return "ok"


def test_several_processes_may_open_a_new_store_at_once(store_url):
    """Runs making the store and taps looking at it, at once (as `meltano run` starts them)."""
    systems = LinkedSystems.of("http://shop/api", "http://cb/api")
    with concurrent.futures.ProcessPoolExecutor(
        6, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        opened = [pool.submit(_open, store_url, systems) for _ in range(3)]
        looks = [pool.submit(_look, store_url) for _ in range(3)]
        assert [o.result() for o in opened] == ["ok"] * 3
        assert {look.result() for look in looks} <= {"ok", "not yet"}
    assert LinkStore(store_url, systems=systems).systems == systems


def test_a_look_at_a_sqlite_store_waits_while_a_run_makes_or_upgrades_it(tmp_path):
    path = tmp_path / "links.db"
    LinkStore(f"sqlite:///{path}", systems=LinkedSystems.of("http://s/api", "http://c/api"))
    with open(f"{path}.lock", "a") as lock, concurrent.futures.ThreadPoolExecutor(1) as pool:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as _migrate holds it
        look = pool.submit(_look, f"sqlite:///{path}")
        time.sleep(0.3)
        assert not look.done(), "the look did not wait for the schema"
        fcntl.flock(lock, fcntl.LOCK_UN)
        assert look.result(timeout=30) == "ok"
