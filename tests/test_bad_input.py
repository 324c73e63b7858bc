"""Bad records among good ones, both directions through `meltano run sync`: each bad record is
dead-lettered with the reason Chargebee or the webshop gave (or the sync's own, for a missing
parent); one whose e-mail or name another record has is skipped as an ambiguous match and
reported (sync_common.matching); every other record syncs (tests/fault_ledger.py counts
both servers). Records the webshop API would refuse are written straight into its SQLite file
before it starts, as a buggy shop or an old import would have left them. Also here: a
malformed or truncated page from the webshop, and API keys in what a run leaves behind."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from sync_common.links import LinkStore
from tests.fault_ledger import Changes, Tally, World, count, injected, make_changes, status
from tests.harness import (
    CHARGEBEE_KEY,
    WEBSHOP_KEY,
    Sync,
    cb_client,
    webshop_get,
)

#: Emoji and letters beyond Latin-1: not bad at all, they must arrive intact.
UNICODE = {"first_name": "Zoë 😀", "last_name": "Łukasz-Ørsted", "company": "Ærø ✓ 東京 GmbH"}


def inject(db: Path, resource: str, like: int, **changes) -> int:
    """A copy of record `like` with `changes`, as a new record, newest of all; its id."""
    with sqlite3.connect(db) as conn:
        data = json.loads(
            conn.execute(
                "SELECT data FROM records WHERE resource = ? AND id = ?", (resource, like)
            ).fetchone()[0]
        )
        new_id = conn.execute(
            "SELECT max(id) + 1 FROM records WHERE resource = ?", (resource,)
        ).fetchone()[0]
        newest = conn.execute("SELECT max(updated_at) FROM records").fetchone()[0]
        stamp = later_by_a_millisecond(newest)
        data.update(id=new_id, version=1, updated_at=stamp, deleted_at=None, **changes)
        if resource == "orders":
            data["number"] = f"WS-{new_id:06d}"
        conn.execute(
            "INSERT INTO records (resource, id, updated_at, data) VALUES (?, ?, ?, ?)",
            (resource, new_id, stamp, json.dumps(data)),
        )
    return new_id


def later_by_a_millisecond(stamp: str) -> str:
    """The webshop's `updated_at` (microseconds, Z) one millisecond after `stamp`. (Adding 1
    to the digits before the Z made ".237999Z" into ".2371000Z", which is earlier: the tap's
    bookmark was already past the record, and the test found it lost.)"""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def first_live(db: Path, resource: str, where: str = "1") -> dict:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT data FROM records WHERE resource = ? AND json_extract(data, '$.deleted_at')"
            f" IS NULL AND {where} ORDER BY id LIMIT 1",
            (resource,),
        ).fetchone()
    return json.loads(row[0])


class BadInputs:
    """Writes the bad records into the webshop's database; remembers what each must cause:
    (stream, webshop id) -> words the dead letter's reason must hold, and the Chargebee
    records that must not appear."""

    def __init__(self) -> None:
        self.dead: dict[tuple[str, str], str] = {}
        #: records skipped as ambiguous matches (kept as dead letters): words of the reason
        self.ambiguous: dict[tuple[str, str], str] = {}
        self.refused: set[tuple[str, str]] = set()
        self.unicode_id = 0

    def __call__(self, tmp: Path) -> None:
        db = tmp / "shop.db"
        customer = first_live(
            db, "customers", "json_extract(data, '$.billing_address') IS NOT NULL"
        )
        product = first_live(db, "products", "json_extract(data, '$.active')")
        order = first_live(db, "orders", "json_extract(data, '$.paid_at') IS NOT NULL")
        line = order["line_items"][0]

        def bad_customer(reason: str, ambiguous: bool = False, **fields) -> None:
            new = inject(db, "customers", customer["id"], **fields)
            (self.ambiguous if ambiguous else self.dead)[("customers", str(new))] = reason
            self.refused.add(("customers", f"cws_{new}"))

        def bad_product(reason: str, ambiguous: bool = False, **fields) -> None:
            new = inject(db, "products", product["id"], sku=f"BAD-{len(self.dead)}", **fields)
            (self.ambiguous if ambiguous else self.dead)[("items", str(new))] = reason
            self.dead[("item_prices", str(new))] = "parent"  # waits for its item, in vain
            self.refused |= {
                ("items", f"cws_{new}"),
                ("item_prices", f"cws_{new}-{product['currency']}"),
            }

        def bad_order(reason: str, **fields) -> None:
            new = inject(db, "orders", order["id"], **fields)
            self.dead[("invoices", str(new))] = reason
            self.dead[("orders", str(new))] = "parent"
            self.refused |= {("invoices", f"cws_{new}"), ("orders", f"cws_{new}")}

        bad_customer("last_name", email="long.name@example.com", last_name="L" * 151)
        bad_customer("email", email="anna@localhost")  # the webshop's check lets it pass
        address = {"line1": "Hauptstr. 1", "line2": None, "city": "Berlin", "state": None,
                   "postal_code": "10115", "country": "Germany"}  # fmt: skip
        bad_customer("country", email="land@example.com", billing_address=address)
        bad_customer("by e-mail", True, email=customer["email"].upper(), first_name="Second")
        bad_product("name", name=None)  # missing a field Chargebee requires
        # a wrong type the price's map cannot int(): the item goes, its price is dead-lettered
        new = inject(db, "products", product["id"], sku="BAD-PRICE", name="Odd", price="12.50")
        self.dead[("item_prices", str(new))] = "ValueError"
        self.refused.add(("item_prices", f"cws_{new}-{product['currency']}"))
        bad_product("by name", True, name=f" {product['name']}")  # an existing item's name
        bad_order("quantity", line_items=[{**line, "quantity": "two"}])  # wrong type
        bad_order("customers cws_99999", customer_id=99999)
        bad_order("item_prices cws_99998", line_items=[{**line, "product_id": 99998}])
        self.unicode_id = inject(
            db, "customers", customer["id"], email="zoe@example.com", **UNICODE
        )


@given(st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)))
def test_an_injected_record_is_newer_than_every_record_in_the_webshops_order(moment):
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the webshop's, compared as text
    later = later_by_a_millisecond(stamp)
    assert later > stamp and len(later) == len(stamp)
    assert datetime.fromisoformat(later[:-1]) - moment == timedelta(milliseconds=1)


@pytest.fixture(scope="module")
def bad_run(baseline, tmp_path_factory):
    """One sync over the bad records plus the usual edits, then one more (nothing must change
    for the bad records: still refused, nothing duplicated)."""
    bad = BadInputs()
    world = World(baseline, tmp_path_factory.mktemp("bad"), prepare=bad)
    try:
        changes = make_changes(world)
        # born in Chargebee without the e-mail a webshop customer must have
        cb_client(world.chargebee).Customer.create({"id": "no_email", "first_name": "Anon"})
        for n, server in enumerate((world.shop, world.chargebee)):
            server.set_knobs(error_rate=0.1, seed=n)  # retries too, for the secrets check
        runs = [world.run()]
        for server in (world.shop, world.chargebee):
            server.set_knobs(error_rate=0)
        runs.append(world.run())
        yield world, bad, changes, runs
    finally:
        world.stop()


def test_bad_records_are_dead_lettered_with_the_reason_and_the_rest_syncs(bad_run, fault_rows):
    world, bad, changes, runs = bad_run
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-4000:]
    letters = LinkStore(world.sync.link_store_url).dead_letters()
    reasons = {(d.stream, d.record_key): d.reason for d in letters}
    wanted = {**bad.dead, ("customers", "no_email"): "email"}  # refused by the webshop
    wanted |= bad.ambiguous  # kept too, so a fix on either side heals them
    for (stream, key), words in wanted.items():
        reason = reasons.get((stream, key))
        assert reason and words in reason, f"{stream} {key}: {reason!r} lacks {words!r}"
    assert all(reasons[key].startswith("ambiguous: ") for key in bad.ambiguous)
    unexpected = {k: r for k, r in reasons.items() if k not in wanted}
    assert not unexpected, unexpected
    reports = sorted(world.sync.reports.glob("target-chargebee-run-*.json"))
    matches = [m for p in reports for m in json.loads(p.read_text())["ambiguous_matches"]]
    skipped = {(m["stream"], m["webshop_id"]): m["reason"] for m in matches}
    for (stream, key), words in bad.ambiguous.items():
        reason = skipped.get((stream, key))
        assert reason and words in reason, f"{stream} {key}: {reason!r} lacks {words!r}"

    bad_records = sum(words != "parent" for words in wanted.values())  # the rest wait for one
    what = f"{bad_records} bad records, {len(wanted)} dead letters"
    tally = Tally("bad inputs, both ways, 2 runs", what, status(runs[0].returncode))
    changes.only_in_chargebee.add(("customers", "no_email"))
    count(world, changes, tally, refused=frozenset(bad.refused))
    fault_rows.append(tally)
    assert (tally.duplicates, tally.lost) == (0, 0), tally.problems
    zoe = cb_client(world.chargebee).Customer.retrieve(f"cws_{bad.unicode_id}").customer
    assert {k: getattr(zoe, k) for k in UNICODE} == UNICODE


def test_no_api_key_in_any_output_of_a_run(bad_run):
    """Logs, reports, dead letters, Meltano's database and log files: no key, not even in the
    Basic-auth form; a run with retries, rejections and refusals writes all of them."""
    world, *_ = bad_run
    forms = []
    for key in (WEBSHOP_KEY, CHARGEBEE_KEY):
        forms += [key, base64.b64encode(f"{key}:".encode()).decode()]
    texts = {"meltano stdout/stderr": "\n".join(world.outputs)}
    letters = LinkStore(world.sync.link_store_url).dead_letters()
    texts["dead letters"] = json.dumps([d.__dict__ for d in letters], default=str)
    files = [p for p in world.tmp.rglob("*") if p.is_file() and not p.name.startswith("shop.db")]
    files = [p for p in files if not p.name.startswith("chargebee.db")]  # the servers' own
    assert any(p.suffix == ".json" for p in files)
    assert any(p.name.startswith("meltano") for p in files)  # the runner's state (system db)
    for path in files:
        texts[str(path.relative_to(world.tmp))] = path.read_bytes().decode("latin-1")
    leaks = [(where, form[:6]) for where, text in texts.items() for form in forms if form in text]
    assert not leaks, leaks


def test_sandboxes_listen_on_loopback_and_refuse_requests_without_the_key(bad_run):
    import psutil

    world, *_ = bad_run
    for server, path in ((world.shop, "/api/v1/customers"), (world.chargebee, "/api/v2/customers")):
        listening = {c.laddr.ip for c in psutil.Process(server.process.pid).net_connections()
                     if c.status == psutil.CONN_LISTEN}  # fmt: skip
        assert listening == {"127.0.0.1"}, listening
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Basic d3Jvbmc6"}):
            assert requests.get(server.url + path, headers=headers, timeout=10).status_code == 401
        refused = requests.post(server.url + path, json={"email": "x@y.z"}, timeout=10)
        assert refused.status_code == 401
    assert "x@y.z" not in {c["email"] for c in webshop_get(world.sync, "customers")}


def test_truncated_page_fails_the_tap_and_state_stays_before_it(baseline, tmp_path, fault_rows):
    world = World(baseline, tmp_path)
    try:
        changes = make_changes(world, in_chargebee=False)  # this run goes one way only
        forward = Sync(world.tmp, world.shop, world.chargebee)  # the same project state
        forward.env.update(world.sync.env, TAP_CUSTOMWEBSHOP_PAGE_SIZE="2")
        world.shop.reset_stats()
        world.shop.set_knobs(truncate_rate=0.1, seed=1)  # the 9th page: after the customers
        failed = forward.run(check=False)
        assert failed.returncode != 0
        assert "malformed or truncated page" in failed.stderr
        assert WEBSHOP_KEY not in failed.stderr + failed.stdout
        faults = injected(world)
        world.shop.set_knobs(truncate_rate=0)
        # no bookmark passed a record that did not reach Chargebee
        state = bookmarks(world, "dev:tap-customwebshop-to-target-chargebee")
        behind = not_in_chargebee(world, changes)
        assert behind and state, "the truncated page stopped nothing, or nothing was read"
        for stream, updated_at in behind:
            bookmark = state.get(stream)
            assert bookmark is None or bookmark <= updated_at, (stream, bookmark, updated_at)
        tally = Tally("webshop page truncated (bad JSON)", faults, status(failed.returncode))
        rerun = world.run()
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        count(world, changes, tally)
        fault_rows.append(tally)
        assert (tally.duplicates, tally.lost) == (0, 0), tally.problems
    finally:
        world.stop()


def bookmarks(world: World, state_id: str) -> dict[str, str]:
    streams = world.sync.state(state_id).get("singer_state", {}).get("bookmarks", {})
    return {s: b.get("replication_key_value") for s, b in streams.items()}


def not_in_chargebee(world: World, changes: Changes) -> list[tuple[str, str]]:
    """(stream, updated_at) of webshop records whose current content Chargebee lacks."""
    tally = Tally("", "", "")
    count(world, changes, tally)
    return tally.behind
