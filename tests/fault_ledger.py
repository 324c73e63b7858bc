"""The fault suite's judge: a synced world (both sandboxes from a copy of one synced baseline,
a `TwoWaySync` over them), the same edits on both sides for every fault, and a count at both
servers of what must be there, what is there, what is there twice and what is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sync_common.links import LinkStore
from target_chargebee.params import remote_value, to_params, wire_value
from tests import harness
from tests.direct_run import StateStore
from tests.harness import (
    BIN,
    CHARGEBEE_KEY,
    NOT_ECHOED,
    REPO,
    RESOURCES,
    SMALL,
    WEBSHOP_KEY,
    TwoWaySync,
    cb_all,
    cb_client,
    expected_chargebee,
    free_port,
    isolated_meltano_env,
    webshop_get,
    webshop_patch,
    webshop_post,
)
from tests.plugin_forks import start_sandbox

#: The files of a synced world: both servers', the link store, the runner's state (Meltano's
#: system database, the direct runner's state file beside it).
DATABASES = ("shop.db", "chargebee.db", "links.db", "meltano.db", "meltano-state.json")
#: What identifies a webshop record apart from its id, which a duplicate would not share.
NATURAL_KEY = {"customers": "email", "products": "sku", "orders": "number"}
#: The webshop stream each Chargebee resource is mapped from.
SOURCE = {"customers": "customers", "items": "products", "item_prices": "products",
          "invoices": "orders", "orders": "orders"}  # fmt: skip
#: Read timeouts shorter than the fault suite's 2 s hang (the plugins' 60 s would outwait it).
FAST_RETRIES = {
    f"{plugin}_REQUEST_TIMEOUT": "1"
    for plugin in ("TAP_CUSTOMWEBSHOP", "TARGET_CHARGEBEE", "TAP_CHARGEBEE")
}


def make_baseline(directory: Path) -> Path:
    """Generated webshop data synced once, clean, both ways; the servers are then stopped so
    their SQLite files can be copied."""
    directory.mkdir(parents=True, exist_ok=True)
    shop = start_sandbox("customwebshop", str(directory / "shop.db"), WEBSHOP_KEY, *SMALL)
    cb = start_sandbox("chargebee", str(directory / "chargebee.db"), CHARGEBEE_KEY)
    try:
        TwoWaySync(directory, shop, cb, meltano=False).run()
    finally:
        shop.stop()
        cb.stop()
    return directory


def seed_meltano_state(baseline: Path) -> None:
    """Meltano's system database for the baseline, holding the state its direct run kept
    (`meltano state set`): made once, for the worlds whose runs are Meltano's."""
    if (baseline / "meltano.db").exists():
        return
    env = isolated_meltano_env(baseline)
    for state_id, state in StateStore(env).all().items():
        subprocess.run(
            [str(BIN / "meltano"), "state", "set", "--force", state_id, json.dumps(state)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip


class World:
    """Both sandboxes on copies of the baseline, and the sync between them."""

    def __init__(
        self,
        baseline: Path,
        tmp: Path,
        prepare: Callable[[Path], None] | None = None,
        fast_retries: bool = True,  # short timeouts, for the faults that make requests hang
        meltano: bool | None = None,  # `meltano run` itself (default: the test's marker)
    ):
        meltano = harness.RUN_WITH_MELTANO if meltano is None else meltano
        if meltano:
            seed_meltano_state(baseline)
        for name in DATABASES:
            for path in baseline.glob(name + "*"):  # with SQLite's -wal/-shm files
                shutil.copy(path, tmp / path.name)
        if prepare is not None:
            prepare(tmp)  # e.g. write records straight into the webshop's database
        self.tmp = tmp
        self.shop = start_sandbox("customwebshop", str(tmp / "shop.db"), WEBSHOP_KEY)
        # below the ephemeral range, so that restart_chargebee can take the port again: a
        # client retrying a closed ephemeral port can connect to itself and hold it
        self.chargebee = start_sandbox(
            "chargebee", str(tmp / "chargebee.db"), CHARGEBEE_KEY, port=free_port()
        )
        self.sync = TwoWaySync(tmp, self.shop, self.chargebee, meltano=meltano)
        # the same two systems as the baseline's, at other addresses: move the store along
        store = LinkStore(self.sync.link_store_url)
        store.rebind(self.sync.systems())
        store.close()
        if fast_retries:
            self.sync.env.update(FAST_RETRIES)
        self.outputs: list[str] = []  # every run's stdout and stderr (the secrets check)

    def run(self, *extra: str) -> subprocess.CompletedProcess:
        """`meltano run sync` (plus `extra` options); the result is returned, not checked."""
        # --force: Meltano counts a killed run as still running
        result = self.sync.execute([*self.sync.blocks, *extra, "--force"], self.sync.env)
        self.outputs += [result.stdout, result.stderr]
        return result

    def restart_chargebee(self) -> None:
        """Stop the emulator and start it again on the same database file and port."""
        port = int(self.chargebee.url.rsplit(":", 1)[1])
        self.chargebee.stop()
        self.chargebee = start_sandbox(
            "chargebee", str(self.tmp / "chargebee.db"), CHARGEBEE_KEY, port=port
        )
        self.sync.chargebee = self.chargebee

    def stop(self) -> None:
        self.shop.stop()
        self.chargebee.stop()


# ---------------------------------------------------------------------------- the same edits


@dataclass
class Changes:
    """Edits made on both sides before a faulted run, and what they must lead to."""

    before: dict[str, Counter]  # natural keys of the webshop's records before the edits
    created: dict[str, set[str]] = field(default_factory=dict)  # made in the webshop
    born: dict[str, str] = field(default_factory=dict)  # Chargebee customer id -> e-mail
    #: (resource, Chargebee id) of records in Chargebee only (the webshop refused them)
    only_in_chargebee: set[tuple[str, str]] = field(default_factory=set)
    #: (webshop resource, webshop id, fields) the edits on either side must leave there (and,
    #: through the maps, in Chargebee)
    edits: list[tuple[str, int, dict]] = field(default_factory=list)


def make_changes(world: World, in_chargebee: bool = True) -> Changes:
    """Edits in the webshop (updates and new records, so creates and updates go to Chargebee)
    and in Chargebee (updates and new customers, so PATCHes and POSTs go to the webshop)."""
    sync = world.sync
    rows = {r: webshop_get(sync, r) for r in NATURAL_KEY}
    changes = Changes(before={r: Counter(str(x[NATURAL_KEY[r]]) for x in rows[r]) for r in rows})
    customers = [c for c in rows["customers"] if not c["deleted_at"]]
    products = [p for p in rows["products"] if p["active"] and not p["deleted_at"]]
    paid = [o for o in rows["orders"] if o["paid_at"] and not o["deleted_at"]]
    assert len(customers) >= 14 and len(products) >= 5 and len(paid) >= 4, "baseline too small"
    edits = [
        *(("customers", c["id"], {"phone": f"+49 30 77{n}"}) for n, c in enumerate(customers[:6])),
        *(("products", p["id"], {"price": p["price"] + 100}) for p in products[:3]),
        *(("orders", o["id"], {"tracking_number": f"WS-{n}"}) for n, o in enumerate(paid[:2])),
    ]  # fmt: skip
    for resource, webshop_id, fields in edits:
        webshop_patch(sync, resource, webshop_id, fields)
    changes.edits += edits
    created = changes.created
    for n in range(2):
        new = webshop_post(sync, "customers", {
            "email": f"new.{n}@example.org", "first_name": f"Neu {n}", "last_name": "Kunde",
        })  # fmt: skip
        created.setdefault("customers", set()).add(new["email"])
    for n, product in enumerate(products[:3]):
        order = webshop_post(sync, "orders", {
            "customer_id": customers[n]["id"], "currency": product["currency"], "status": "paid",
            "placed_at": "2026-11-20T09:00:00Z", "paid_at": "2026-11-20T10:00:00Z",
            "line_items": [{"product_id": product["id"], "quantity": n + 1}],
        })  # fmt: skip
        created.setdefault("orders", set()).add(order["number"])

    if not in_chargebee:
        return changes
    cb = cb_client(world.chargebee)
    for n, customer in enumerate(customers[10:13]):
        company = f"Edited in Chargebee {n}"
        cb.Customer.update(f"cws_{customer['id']}", {"company": company})
        changes.edits.append(("customers", customer["id"], {"company": company}))
    order = paid[3]
    cb.Order.update(f"cws_{order['id']}", {"tracking_id": "CB-TRACK-1", "note": "From CB"})
    changes.edits.append(
        ("orders", order["id"], {"tracking_number": "CB-TRACK-1", "note": "From CB"})
    )
    product = products[4]
    cb.ItemPrice.update(f"cws_{product['id']}-{product['currency']}", {"price": 4321})
    changes.edits.append(("products", product["id"], {"price": 4321}))
    for n in range(2):
        email = f"born.{n}@example.com"
        first, last = f"Åsa {n}", "Öberg"
        cb.Customer.create({
            "id": f"born_{n}", "email": email, "first_name": first, "last_name": last,
            "billing_address": {"first_name": first, "last_name": last, "line1": f"Gata {n}",
                                "city": "Malmö", "zip": "21119", "country": "SE"},
        })  # fmt: skip
        changes.born[f"born_{n}"] = email
    return changes


# ---------------------------------------------------------------------------- the count


@dataclass
class Tally:
    fault: str
    injected: str  # faults the servers counted, by server
    first_run: str  # how the run under the fault ended
    expected: int = 0
    found: int = 0
    duplicates: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    #: (webshop stream, updated_at) of records whose content Chargebee lacks
    behind: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.fault:<34} {self.injected:<48} {self.first_run:<7} {self.expected:>8} "
            f"{self.found:>6} {self.duplicates:>10} {self.lost:>4}"
        )


def status(returncode: int | None) -> str:
    return "ok" if returncode == 0 else f"exit {returncode}"


HEADER = (
    f"{'fault':<34} {'injected (counted at the servers)':<48} {'1st run':<7} {'expected':>8} "
    f"{'found':>6} {'duplicates':>10} {'lost':>4}"
)


def injected(world: World) -> str:
    """The faults each server counted since its last stats reset."""
    parts = []
    for name, server in (("cb", world.chargebee), ("shop", world.shop)):
        faults = server.stats().get("faults", {})
        if faults:
            parts.append(f"{name} " + ",".join(f"{k} {v}" for k, v in faults.items()))
    return "; ".join(parts) or "none"


def count(world: World, changes: Changes, tally: Tally, refused: frozenset = frozenset()) -> Tally:
    """Fill `tally` from both servers. Chargebee must hold every live webshop record through
    meltano.yml's maps, field by field, once (ids are unique there, so any record it holds that
    is not expected is a duplicate), plus the customers born in it; the webshop must hold each
    record it had, made, or got from Chargebee once by its natural key, with Chargebee's edits.
    `refused` are (resource, Chargebee id) that must not arrive (bad input, dead-lettered)."""
    sync = world.sync
    shop = {r: webshop_get(sync, r) for r in NATURAL_KEY}
    # a customer born in Chargebee is the webshop customer with its e-mail: its Chargebee id
    # is the born one, not cws_<webshop id>
    alias = {}
    for born_id, email in changes.born.items():
        for twin in (c for c in shop["customers"] if c["email"] == email):
            alias[f"cws_{twin['id']}"] = born_id
    expected = expected_chargebee(sync)
    client = cb_client(world.chargebee)
    for resource in RESOURCES:
        actual = {
            row["id"]: row
            for row in cb_all(client, resource)
            if row.get("active_id") in (None, row["id"])  # not a transferred customer's copy
        }
        renamed = alias if resource == "customers" else {}
        wanted = {
            renamed.get(i, i): r
            for i, r in expected[resource].items()
            if not r.get("deleted") and (resource, i) not in refused
        }
        only_there = {i for r, i in changes.only_in_chargebee if r == resource}
        tally.expected += len(wanted) + len(only_there)
        tally.found += len(actual)
        extra = sorted(set(actual) - set(wanted) - only_there)
        missing = sorted(set(wanted) - set(actual))
        stream = SOURCE[resource]
        updated = {str(row["id"]): row["updated_at"] for row in shop[stream]}
        tally.behind += [(stream, updated[wanted[i]["webshop_id"]]) for i in missing]
        tally.duplicates += len(extra)
        tally.lost += len(missing)
        if extra:
            tally.problems.append(f"Chargebee {resource} not expected: {extra[:5]}")
        if missing:
            tally.problems.append(f"Chargebee {resource} missing: {missing[:5]}")
        for record_id in sorted(set(wanted) & set(actual)):
            differing = [
                key
                for key, value in to_params(wanted[record_id]).items()
                if not key.startswith(NOT_ECHOED)
                and not (key == "id" and record_id in alias.values())
                and (value or None) != (wire_value(remote_value(actual[record_id], key)) or None)
            ]
            if differing:  # the record is there, but an edit of it was lost
                tally.lost += 1
                tally.behind.append((stream, updated[wanted[record_id]["webshop_id"]]))
                tally.problems.append(f"Chargebee {resource} {record_id} differs in {differing}")

    for resource, key in NATURAL_KEY.items():
        keys = Counter(str(row[key]) for row in shop[resource])
        should = changes.before[resource] + Counter(changes.created.get(resource, ()))
        if resource == "customers":
            should += Counter(changes.born.values())
        tally.expected += sum(should.values())
        tally.found += sum(keys.values())
        extra, missing = keys - should, should - keys  # beyond, or short of, what should be
        tally.duplicates += sum(extra.values())
        tally.lost += sum(missing.values())
        if extra:
            tally.problems.append(f"webshop {resource} more than expected: {dict(extra)}")
        if missing:
            tally.problems.append(f"webshop {resource} missing: {dict(missing)}")
    by_id = {(r, row["id"]): row for r, rows in shop.items() for row in rows}
    for resource, webshop_id, fields in changes.edits:
        row = by_id.get((resource, webshop_id), {})
        differing = {k: row.get(k) for k, v in fields.items() if row.get(k) != v}
        if differing:  # overwritten: the edit was lost on its way, or by the way back
            tally.lost += 1
            tally.problems.append(f"webshop {resource} {webshop_id} lost the edit {fields}")
    return tally


# ---------------------------------------------------------------------------- a fault test


#: Every fault knob off (`Knobs` in sandbox/sync_sandbox/server.py).
NO_FAULTS = dict(
    rate_limited_rate=0,
    retry_after=True,
    error_rate=0,
    timeout_rate=0,
    reset_rate=0,
    drop_response_rate=0,
    truncate_rate=0,
    latency_ms=0,
)


def prepared(world: World) -> Changes:
    changes = make_changes(world)
    world.shop.reset_stats()
    world.chargebee.reset_stats()
    return changes


def settle(world: World, changes: Changes, tally: Tally, rows: list) -> Tally:
    """Faults off, one clean run, then the count; the row is kept before it is judged."""
    world.shop.set_knobs(**NO_FAULTS)
    world.chargebee.set_knobs(**NO_FAULTS)
    rerun = world.run()
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    # error paths (retries, tracebacks, giving up) must not print a key either
    logs = world.outputs + [p.read_text() for p in world.tmp.glob("killed-run.log")]
    assert not [k for k in (WEBSHOP_KEY, CHARGEBEE_KEY) if any(k in log for log in logs)]
    count(world, changes, tally)
    rows.append(tally)
    assert (tally.duplicates, tally.lost) == (0, 0), tally.problems
    assert tally.found == tally.expected
    return tally
