"""`sync-links` in-process, on a real store on both databases (SQLite, and a fresh
PostgreSQL database per test): every subcommand's output, exit status and messages, how it
finds the store from the options or a Meltano plugin's settings, and that it neither creates
a store nor prints a password."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys

import pytest
import sqlalchemy

from sync_common.links import PAIR_SETTINGS, LinkedSystems, LinkStore, default_link_store_url
from sync_common.links_cli import main
from tap_chargebee.tap import TapChargebee
from tap_customwebshop.tap import TapCustomwebshop
from target_chargebee.target import TargetChargebee
from target_customwebshop.target import TargetCustomwebshop

WEBSHOP = "http://shop.example.com/api/v1"
CHARGEBEE = "http://cb.example.com/api/v2"
PAIR = LinkedSystems.of(WEBSHOP, CHARGEBEE)
PAIR_OPTIONS = ["--webshop-api-url", WEBSHOP, "--chargebee-api-url", CHARGEBEE]


@pytest.fixture
def store_url(store_url):
    """conftest's store (each database) as a run made it: bound to PAIR, links of four
    resources, two open dead letters and a resolved one."""
    url = store_url
    store = LinkStore(url, systems=PAIR, run_id="run-1")
    for webshop_id in ("1", "2", "3"):
        store.save("customers", webshop_id, f"cws_{webshop_id}", webshop_version=4,
                   chargebee_version=1700000000123, deterministic_id=f"cws_{webshop_id}",
                   webshop_base={"email": f"c{webshop_id}@example.com"},
                   chargebee_base={"email": f"c{webshop_id}@example.com"})  # fmt: skip
    store.save("items", "7", "cws_7", webshop_version=2)
    store.save("item_prices", "7", "cws_7-USD", webshop_version=2)
    store.save("orders", "1", "cws_1", webshop_version=1)  # webshop id 1: order and customer
    store.add_dead_letter("customers", "9", "email is invalid", {"id": 9, "email": "x"},
                          source="webshop", details={"chargebee_id": "cws_9"})  # fmt: skip
    store.add_dead_letter("orders", "5", "customer cws_77 not found", {"id": 5}, source="webshop")
    store.add_dead_letter("customers", "3", "phone is invalid", {"id": 3}, source="webshop")
    store.resolve_dead_letter("webshop", "customers", "3")  # went through since: not open
    store.close()
    return url


def run(capsys, *argv: str, environ: dict | None = None, stdin: str = "") -> tuple[int, str, str]:
    """sync-links in-process: (exit status, stdout, stderr)."""
    out = io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        status = main(list(argv), environ=environ or {}, out=out)
    finally:
        sys.stdin = saved
    return status, out.getvalue(), capsys.readouterr().err


def test_bound_shows_the_pair_and_what_the_store_holds(store_url, capsys):
    status, out, _ = run(capsys, "--link-store-url", store_url, "bound")
    assert status == 0
    assert f"webshop {WEBSHOP} with Chargebee {CHARGEBEE}" in out
    assert "customers 3, item_prices 1, items 1, orders 1" in out
    assert "dead letters: 2" in out

    status, out, _ = run(capsys, "--link-store-url", store_url, "bound", "--format", "json")
    facts = json.loads(out)
    assert (facts["webshop"], facts["chargebee"]) == (WEBSHOP, CHARGEBEE)
    assert facts["links"] == {"customers": 3, "item_prices": 1, "items": 1, "orders": 1}
    assert facts["dead_letters"] == 2 and facts["bound_at"].startswith("20")


def test_find_by_either_sides_id_in_every_resource_or_one(store_url, capsys):
    status, out, _ = run(capsys, "--link-store-url", store_url, "find", "--webshop-id", "7",
                         "--format", "json")  # fmt: skip
    assert status == 0
    found = json.loads(out)
    assert {(f["resource"], f["chargebee_id"]) for f in found} == {
        ("items", "cws_7"), ("item_prices", "cws_7-USD")}  # fmt: skip
    assert "webshop_base" not in found[0]  # field values only on request

    status, out, _ = run(capsys, "--link-store-url", store_url, "find", "--webshop-id", "1",
                         "--resource", "orders")  # fmt: skip
    header, row = out.splitlines()
    assert header.split()[:3] == ["resource", "webshop_id", "chargebee_id"]
    assert row.split()[:3] == ["orders", "1", "cws_1"]

    status, out, _ = run(capsys, "--link-store-url", store_url, "find", "--chargebee-id",
                         "cws_2", "--with-bases", "--format", "json")  # fmt: skip
    [link] = json.loads(out)
    assert (link["resource"], link["webshop_id"], link["webshop_version"]) == ("customers", "2", 4)
    assert link["webshop_base"] == {"email": "c2@example.com"}


def test_find_of_no_link_fails_naming_the_id(store_url, capsys):
    status, out, err = run(capsys, "--link-store-url", store_url, "find", "--webshop-id", "404")
    assert (status, out) == (1, "")
    assert "no link of any resource has webshop id '404'" in err


def test_list_exports_csv_and_json(store_url, capsys, tmp_path):
    status, out, _ = run(capsys, "--link-store-url", store_url, "list", "customers",
                         "--format", "csv")  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["webshop_id"], r["chargebee_id"]) for r in rows] == [
        ("1", "cws_1"), ("2", "cws_2"), ("3", "cws_3")]  # fmt: skip
    assert rows[0]["webshop_version"] == "4" and rows[0]["chargebee_version"] == "1700000000123"
    assert rows[0]["deterministic_id"] == "cws_1" and "webshop_base" not in rows[0]

    export = tmp_path / "customers.json"
    status, out, err = run(capsys, "--link-store-url", store_url, "list", "customers",
                           "--format", "json", "--with-bases", "--output", str(export))  # fmt: skip
    assert (status, out) == (0, "") and f"wrote 3 links to {export}" in err
    assert stat.S_IMODE(os.stat(export).st_mode) == 0o600  # personal data
    links = json.loads(export.read_text())
    assert [link["chargebee_base"] for link in links] == [
        {"email": f"c{n}@example.com"} for n in (1, 2, 3)]  # fmt: skip

    status, out, _ = run(capsys, "--link-store-url", store_url, "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        "customers", "customers", "customers", "item_prices", "items", "orders"]  # fmt: skip


def test_list_of_a_resource_without_links_fails_naming_those_with(store_url, capsys):
    status, out, err = run(capsys, "--link-store-url", store_url, "list", "customer")
    assert (status, out) == (1, "")
    assert "no links of resource 'customer'" in err
    assert "resources with links: customers, item_prices, items, orders" in err


def test_dead_letters_show_every_field_with_the_reasons(store_url, capsys):
    status, out, _ = run(capsys, "--link-store-url", store_url, "dead-letters", "--format", "json")
    assert status == 0
    letters = json.loads(out)
    assert [(d["stream"], d["record_key"], d["reason"]) for d in letters] == [
        ("customers", "9", "email is invalid"),
        ("orders", "5", "customer cws_77 not found"),
    ]
    assert letters[0]["record"] == {"id": 9, "email": "x"} and letters[0]["run_id"] == "run-1"
    assert letters[0]["details"] == {"chargebee_id": "cws_9"}

    status, out, _ = run(capsys, "--link-store-url", store_url, "dead-letters",
                         "--stream", "orders", "--format", "csv")  # fmt: skip
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["record_key"], row["reason"], json.loads(row["record"])) == (
        "5", "customer cws_77 not found", {"id": 5})  # fmt: skip

    status, out, _ = run(capsys, "--link-store-url", store_url, "dead-letters")
    lines = out.splitlines()
    assert {"reason", "attempts"} <= set(lines[0].split()) and "record" not in lines[0].split()
    assert "email is invalid" in lines[1] and len(lines) == 3

    status, out, _ = run(capsys, "--link-store-url", store_url, "dead-letters", "--all",
                         "--format", "json")  # fmt: skip
    resolved = [d for d in json.loads(out) if d["resolved_at"] is not None]
    assert [(d["record_key"], d["reason"]) for d in resolved] == [("3", "phone is invalid")]


def test_forget_removes_exactly_that_link(store_url, capsys):
    status, out, _ = run(capsys, "--link-store-url", store_url, "forget", "customers",
                         "--webshop-id", "1", "--yes")  # fmt: skip
    assert status == 0
    assert "forgot the customers link: webshop 1 <-> Chargebee cws_1" in out
    store = LinkStore(store_url)
    try:
        assert store.get_by_webshop("customers", "1") is None
        assert store.get_by_webshop("orders", "1") is not None  # same id, other resource
        assert store.counts() == {"customers": 2, "item_prices": 1, "items": 1, "orders": 1}
    finally:
        store.close()

    status, _, err = run(capsys, "--link-store-url", store_url, "forget", "customers",
                         "--webshop-id", "1", "--yes")  # fmt: skip
    assert status == 1 and "nothing forgotten" in err


def test_forget_asks_first_and_by_chargebee_id(store_url, capsys):
    status, _, err = run(capsys, "--link-store-url", store_url, "forget", "items",
                         "--chargebee-id", "cws_7", stdin="n\n")  # fmt: skip
    assert status == 1
    assert "Forget the items link: webshop 7 <-> Chargebee cws_7? [y/N]" in err
    assert "nothing forgotten" in err
    status, out, _ = run(capsys, "--link-store-url", store_url, "forget", "items",
                         "--chargebee-id", "cws_7", stdin="y\n")  # fmt: skip
    assert status == 0 and "forgot the items link" in out
    store = LinkStore(store_url)
    try:
        assert store.get_by_chargebee("items", "cws_7") is None
        assert store.get_by_chargebee("item_prices", "cws_7-USD") is not None
    finally:
        store.close()


def test_no_store_is_an_error_and_none_is_created(tmp_path, capsys):
    missing = tmp_path / "sync" / "links.db"
    status, out, err = run(capsys, "--link-store-url", f"sqlite:///{missing}", "bound")
    assert (status, out) == (3, "")
    assert f"there is no link store at sqlite:///{missing}" in err
    assert not missing.exists() and not missing.parent.exists()


def test_a_postgresql_password_is_masked_and_an_empty_database_stays_empty(pg_database, capsys):
    # trust authentication ignores the password; the command must not show it
    url = pg_database.replace("postgres@", "postgres:s3cret@")
    status, _, err = run(capsys, "--link-store-url", url, "list")
    assert status == 3 and "there is no link store at postgresql+psycopg://postgres:***@" in err
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()

    LinkStore(url).close()  # made, bound by no run yet
    status, out, err = run(capsys, "--link-store-url", url, "bound")
    assert status == 0 and "postgres:***@127.0.0.1" in out and "no pair yet" in out
    assert "s3cret" not in out + err
    status, out, _ = run(capsys, "--link-store-url", url, "bound", "--format", "json")
    assert json.loads(out)["link_store"].startswith("postgresql+psycopg://postgres:***@")
    assert json.loads(out)["webshop"] is None


def test_a_store_bound_to_another_pair_is_refused(store_url, capsys):
    other = ["--webshop-api-url", "http://other.example.com/api/v1", "--chargebee-site", "acme"]
    status, out, err = run(capsys, "--link-store-url", store_url, *other, "list")
    assert (status, out) == (3, "")
    assert f"is bound to webshop {WEBSHOP} with Chargebee {CHARGEBEE}" in err
    assert "not to the pair these settings name (webshop http://other.example.com/api/v1 with " \
           "Chargebee https://acme.chargebee.com/api/v2)" in err  # fmt: skip
    status, _, _ = run(capsys, "--link-store-url", store_url, *PAIR_OPTIONS, "list")
    assert status == 0


@pytest.mark.parametrize(
    ("plugin", "settings"),
    [
        ("target-chargebee", {"WEBSHOP_API_URL": WEBSHOP, "SITE": "x", "API_URL": CHARGEBEE}),
        ("target-customwebshop", {"API_URL": WEBSHOP, "CHARGEBEE_API_URL": CHARGEBEE}),
    ],
)
def test_as_a_meltano_command_the_plugins_settings_find_the_pairs_default_store(
    plugin, settings, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MELTANO_SYS_DIR_ROOT", str(tmp_path / ".meltano"))
    LinkStore(default_link_store_url(PAIR), systems=PAIR).save("customers", "5", "cws_5")
    environ = {"MELTANO_LOADER_NAME": plugin,
               **{f"MELTANO_LOAD_{name}": value for name, value in settings.items()}}  # fmt: skip
    status, out, _ = run(capsys, "find", "--webshop-id", "5", environ=environ)
    assert status == 0 and "cws_5" in out

    # outside Meltano the same environment names no plugin: the pair's options do
    status, _, err = run(capsys, "find", "--webshop-id", "5", environ={})
    assert status == 3 and "the default store of no particular pair" in err
    status, out, _ = run(capsys, *PAIR_OPTIONS, "find", "--webshop-id", "5")
    assert status == 0 and "cws_5" in out


@pytest.mark.parametrize(
    ("plugin", "side"),
    [(TargetChargebee, "chargebee"), (TapChargebee, "chargebee"),
     (TargetCustomwebshop, "webshop"), (TapCustomwebshop, "webshop")],
)  # fmt: skip
def test_the_pair_settings_are_each_plugins_own(plugin, side):
    """Each plugin declares the settings LinkedSystems.from_config reads for its side."""
    properties = plugin.config_jsonschema["properties"]
    assert set(PAIR_SETTINGS[side]) | {"link_store_url"} <= set(properties), plugin.name
