"""The dead-letter lifecycle in the link store, on SQLite and PostgreSQL: one open entry per
record, attempts counted, resolved when the record goes through, reopened by a later failure;
what a tap reads back (read only); and migration 0003 of a store that kept a row per failure."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import alembic.command
import alembic.config
import pytest
import sqlalchemy as sa

from sync_common.links import (
    MIGRATIONS,
    PAIR_SETTINGS,
    LinkedSystems,
    LinkStore,
    NoLinkStore,
    Side,
)
from sync_common.retry import records_to_retry

PAIR = LinkedSystems.of("http://shop/api/v1", "http://cb/api/v2")
LOGGER = logging.getLogger("tap-under-test")


def engine_of(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def test_one_open_entry_per_record_counts_attempts_until_it_goes_through(store_url):
    first = LinkStore(store_url, systems=PAIR, run_id="run-1")
    entry = first.add_dead_letter(
        "customers", "9", "invalid email", {"email": "bad"}, source="webshop"
    )
    assert (entry.attempts, entry.first_run_id, entry.run_id, entry.is_open) == (
        1, "run-1", "run-1", True,
    )  # fmt: skip
    first.close()

    second = LinkStore(store_url, systems=PAIR, run_id="run-2")
    again = second.add_dead_letter(
        "customers", "9", "still invalid", {"email": "worse"}, source="webshop"
    )
    # the same record at another side, and another stream of the same webshop id, are others
    second.add_dead_letter("customers", "9", "refused", {}, source="chargebee")
    second.add_dead_letter(
        "item_prices", "9", "bad price", {}, source="webshop", source_stream="products"
    )
    assert (again.attempts, again.first_run_id, again.run_id) == (2, "run-1", "run-2")
    assert (again.reason, again.record) == ("still invalid", {"email": "worse"})  # the latest
    assert again.created_at == entry.created_at < again.last_failed_at
    [open_one] = second.open_dead_letters("customers", source="webshop")
    assert open_one == again
    assert len(second.open_dead_letters()) == 3

    assert second.resolve_dead_letter("webshop", "customers", "9") is True
    assert second.resolve_dead_letter("webshop", "customers", "9") is False  # closed already
    assert second.resolve_dead_letter("webshop", "customers", "10") is False  # never failed
    [closed] = [d for d in second.dead_letters() if not d.is_open]
    assert (closed.resolved_run_id, closed.attempts, closed.stream) == ("run-2", 2, "customers")
    assert [(d.source, d.stream) for d in second.open_dead_letters()] == [
        ("chargebee", "customers"),
        ("webshop", "item_prices"),
    ]
    second.close()

    third = LinkStore(store_url, systems=PAIR, run_id="run-3")
    reopened = third.add_dead_letter("customers", "9", "broken again", {}, source="webshop")
    assert (reopened.attempts, reopened.first_run_id, reopened.is_open) == (1, "run-3", True)
    history = [d for d in third.dead_letters() if (d.source, d.stream) == ("webshop", "customers")]
    assert [d.is_open for d in history] == [False, True]  # the resolved entry is kept
    # a resolve learns of failures added after it first read the open keys
    assert third.resolve_dead_letter("webshop", "item_prices", "9") is True
    third.add_dead_letter("orders", "5", "no invoice", {}, source="webshop")
    assert third.resolve_dead_letter("webshop", "orders", "5") is True
    assert [d.stream for d in third.open_dead_letters(source="webshop")] == ["customers"]
    assert [d.stream for d in third.dead_letters("run-3")] == ["customers", "orders"]
    third.close()


def retry_ids(url: str, systems: LinkedSystems, source: Side) -> dict[str, list[str]]:
    """What the tap of `source`'s side re-reads (sync_common.retry) when its settings name
    `systems`, its log line aside."""
    webshop, _, chargebee = PAIR_SETTINGS[source]
    config = {"link_store_url": url, webshop: systems.webshop, chargebee: systems.chargebee}
    return records_to_retry(config, source, LOGGER)


def test_a_tap_reads_the_open_dead_letters_of_its_side_without_writing(store_url, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    if store_url.startswith("sqlite"):
        missing = store_url.replace("links.db", "none.db")
        assert retry_ids(missing, PAIR, "webshop") == {}
        assert "no link store" in caplog.text
        assert not Path(missing.removeprefix("sqlite:///")).exists()  # not created
    store = LinkStore(store_url)  # made, never bound: no run has written through it
    assert retry_ids(store_url, PAIR, "webshop") == {}
    assert "no pair yet" in caplog.text
    store.close()
    store = LinkStore(store_url, systems=PAIR)
    for stream, key in (("items", "3"), ("item_prices", "3"), ("orders", "8"), ("items", "4")):
        tap_stream = "orders" if stream == "orders" else "products"
        store.add_dead_letter(
            stream, key, "refused", {}, source="webshop", source_stream=tap_stream
        )
    store.add_dead_letter("customers", "cws_1", "refused", {}, source="chargebee")
    store.add_dead_letter("customers", "2", "refused", {}, source="webshop")
    store.resolve_dead_letter("webshop", "customers", "2")
    assert retry_ids(store_url, PAIR, "webshop") == {
        "products": ["3", "4"],  # once per product, though its item and price both failed
        "orders": ["8"],
    }
    assert retry_ids(store_url, PAIR, "chargebee") == {"customers": ["cws_1"]}
    other = LinkedSystems.of("http://shop/api/v1", "http://other/api/v2")
    assert retry_ids(store_url, other, "webshop") == {}
    assert "http://other/api/v2" in caplog.text
    store.close()


#: Rows as a store at schema 0002 kept them: one per failure, target-chargebee's with the
#: `chargebee_id` detail, target-customwebshop's without details.
FORWARD = {"chargebee_id": "cws_9"}
OLD_ROWS = [
    ("run-1", "customers", "9", "bad email", FORWARD, "2026-01-01 10:00:00"),
    ("run-2", "customers", "9", "bad email again", FORWARD, "2026-01-02 10:00:00"),
    ("run-2", "customers", "9", "refused", None, "2026-01-02 10:00:01"),
    (
        "run-2",
        "item_prices",
        "4",
        "bad price",
        {"chargebee_id": "cws_4-USD"},
        "2026-01-02 10:00:02",
    ),
    ("run-3", "customers", "9", "bad email 3", FORWARD, "2026-01-03 10:00:00"),
]


def test_migration_0003_merges_a_row_per_failure_into_one_open_entry(store_url):
    engine = engine_of(store_url)
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as db:
        config.attributes["connection"] = db
        alembic.command.upgrade(config, "0002")
        for run_id, stream, key, reason, details, at in OLD_ROWS:
            db.execute(
                sa.text("INSERT INTO dead_letters (run_id, stream, record_key, reason, record, "
                        "details, created_at) VALUES (:r, :s, :k, :why, :rec, :d, :at)"),
                {"r": run_id, "s": stream, "k": key, "why": reason, "rec": '{"id": 1}',
                 "d": None if details is None else json.dumps(details),
                 "at": datetime.datetime.fromisoformat(at)},
            )  # fmt: skip
    engine.dispose()
    with pytest.raises(NoLinkStore, match="is at schema 0002"):  # a look upgrades nothing
        LinkStore(store_url, look_only=True)
    assert retry_ids(store_url, PAIR, "webshop") == {}  # a tap waits for the target's upgrade
    with engine_of(store_url).connect() as db:
        assert db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0002"

    store = LinkStore(store_url, systems=PAIR, run_id="run-4")
    letters = {(d.source, d.stream, d.record_key): d for d in store.open_dead_letters()}
    assert len(letters) == len(store.dead_letters()) == 3  # the older duplicates merged
    forward = letters[("webshop", "customers", "9")]
    assert (forward.attempts, forward.reason, forward.run_id, forward.first_run_id) == (
        3, "bad email 3", "run-3", "run-1",
    )  # fmt: skip
    assert forward.created_at == datetime.datetime(2026, 1, 1, 10, tzinfo=datetime.UTC)
    assert forward.last_failed_at == datetime.datetime(2026, 1, 3, 10, tzinfo=datetime.UTC)
    back = letters[("chargebee", "customers", "9")]
    assert (back.attempts, back.source_stream) == (1, "customers")
    assert letters[("webshop", "item_prices", "4")].source_stream == "products"
    # and the migrated entry lives on: the next failure counts on, success closes it
    assert store.add_dead_letter("customers", "9", "x", {}, source="webshop").attempts == 4
    assert store.resolve_dead_letter("webshop", "customers", "9")
    store.close()
    with engine_of(store_url).connect() as db:
        assert db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0003"


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("webshop", "set chargebee_site (or chargebee_api_url)"),
        ("chargebee", "set webshop_api_url"),
    ],
)
def test_a_tap_that_cannot_name_the_pair_says_which_setting_is_missing(source, named, caplog):
    own_api = {"api_url": "http://shop/api/v1" if source == "webshop" else "http://cb/api/v2"}
    assert records_to_retry(own_api, source, LOGGER) == {}
    assert f"Dead letters are not retried: {named} (the far side" in caplog.text
