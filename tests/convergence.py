"""The randomized convergence run of tests/test_convergence.py: rounds of random edits on both
sandboxes, one `meltano run sync` per round, then the product's promises checked.

The promise: per field, an edit made on one side reaches the other whatever was edited
elsewhere in the same record; only two edits of the same field compete, and then
`conflict_policy` (default newest_wins: the newer `updated_at` in whole seconds, Chargebee on
a tie) decides and a target's report names the field with both values; no duplicates; the
next sync writes nothing.

Timing of conflicts: a round's script runs in two phases with a 1.1 s pause between them.
The older edit of a conflicting pair is made in the first phase, the newer one in the second,
and every other edit of that record goes in the phase of its side, so the planned newer side
has the newer `updated_at` in whole seconds. The expected winner is nevertheless taken from
both records' `updated_at` as they are once the script is done (whole seconds, Chargebee on a
tie), which is the rule the product promises.

All values are compared in webshop terms: Chargebee's are translated back as meltano.yml's
maps do (order status, `zip` -> `postal_code`, item status -> `active`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.harness import (
    TwoWaySync,
    cb_all,
    cb_client,
    webshop_get,
    webshop_patch,
    webshop_post,
    webshop_send,
)

WEBSHOP, CHARGEBEE = "webshop", "chargebee"
SIDES = (WEBSHOP, CHARGEBEE)
#: Writes the script makes per round (at least; one step may make two).
EDITS_PER_ROUND = 64
#: Pause between the older and the newer edit of a conflicting pair (Chargebee: whole seconds).
PAUSE = 1.1

#: meltano.yml, target-chargebee's map of `orders.status`; its inverse is the way back's map
#: for these six (the way back also reads on_hold / partially_delivered, never written here).
ORDER_STATUS = {
    "pending": "queued",
    "paid": "awaiting_shipment",
    "shipped": "shipped",
    "delivered": "delivered",
    "cancelled": "cancelled",
    "refunded": "returned",
}
WEBSHOP_STATUS = {chargebee: webshop for webshop, chargebee in ORDER_STATUS.items()}
#: Webshop field -> Chargebee attribute, where the names differ.
CHARGEBEE_NAME = {
    "tracking_number": "tracking_id",
    "carrier": "shipment_carrier",
    "billing_address.postal_code": "billing_address.zip",
    "name": "external_name",
}
ADDRESS = ("line1", "line2", "city", "state", "postal_code", "country")
#: The mapped fields compared on every linked record after every sync.
COMPARED = {
    "customers": (
        "email",
        "first_name",
        "last_name",
        "company",
        "phone",
        *(f"billing_address.{member}" for member in ADDRESS),
    ),
    "orders": ("status", "tracking_number", "note", "carrier"),
    "products": ("price", "name", "description", "active"),
}


@dataclass(frozen=True)
class FieldSpec:
    """A field the script edits: who may edit it, whether it may be emptied, and the names
    a conflict entry of either target may give it (webshop name, Chargebee parameter)."""

    resource: str
    name: str
    sides: tuple[str, ...] = SIDES
    clearable: bool = False
    report_names: tuple[str, ...] = ()


FIELDS = (
    FieldSpec("customers", "email"),
    FieldSpec("customers", "first_name"),
    FieldSpec("customers", "last_name"),
    FieldSpec("customers", "company", clearable=True),
    FieldSpec("customers", "phone", clearable=True),
    FieldSpec(
        "customers",
        "billing_address.city",
        report_names=("billing_address", "billing_address[city]", "city"),
    ),
    FieldSpec("orders", "tracking_number", clearable=True, report_names=("tracking_id",)),
    FieldSpec("orders", "note", clearable=True),
    FieldSpec("orders", "carrier", clearable=True, report_names=("shipment_carrier",)),
    FieldSpec("orders", "status", sides=(CHARGEBEE,)),  # the webshop's status is not edited
    FieldSpec("products", "price"),
    FieldSpec("products", "name", sides=(WEBSHOP,), report_names=("external_name",)),
    FieldSpec("products", "description", clearable=True),
)

#: The kinds of step a round's script is drawn from, with their weights.
EDIT_KINDS = (
    (24, "one_field"),  # one field of a linked record, on one side
    (6, "two_fields"),  # one record, a different field on each side: both survive
    (4, "conflict"),  # one record, the same field on both sides: the policy decides
    (2, "twice"),  # one field edited twice on one side: the second value counts
    (2, "clear"),  # an optional field emptied on one side (never in a conflict)
    (2, "new_customer"),  # created in the webshop or in Chargebee
    (1, "delete_customer"),  # only customers without orders (so without invoices)
    (2, "product_status"),  # webshop deactivate / re-activate, or Chargebee item archive
)

FIRST_NAMES = ("Zoë", "Åsa", "Jürgen", "Renée", "Søren", "Hélène", "Björn", "Chloé", "Mads")
LAST_NAMES = ("Ørsted", "Müller", "Lefèvre", "Ångström", "Nørgaard", "O'Brien", "Dubois")
COMPANIES = ("Nordlys ApS", "Fjällräv AB", "Brücke GmbH", "Café Lumière SARL", "Tiny Mugs Ltd")
CITIES = ("København", "Malmö", "Zürich", "Orléans", "Aarhus", "Göteborg", "München")
CARRIERS = ("DHL", "UPS", "PostNord", "La Poste", "Royal Mail", "USPS", "GLS")
WORDS = ("Mug", "Notebook", "Lamp", "Scarf", "Kettle", "Candle", "Teapot", "Blanket")


class _Absent:
    def __repr__(self) -> str:
        return "<no record>"


ABSENT: Any = _Absent()


def same(a: Any, b: Any) -> bool:
    """Equal as both systems store them (None and "" are no value)."""
    if a is ABSENT or b is ABSENT:
        return a is b
    return (None if a == "" else a) == (None if b == "" else b)


def unix_seconds(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    return int(datetime.datetime.fromisoformat(str(value)).timestamp())


@dataclass
class Edit:
    round: int
    side: str
    resource: str  # webshop resource: customers, orders, products
    record: Any  # webshop id; a Chargebee id for a customer created in Chargebee
    field: str  # webshop field, or "created" / "deleted" / "active"
    value: Any  # in webshop terms
    phase: int = 0
    body: dict | None = None  # a created customer
    at: float = 0.0  # time.time() once written

    def describe(self) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(self.at)) + f".{int(self.at % 1 * 10)}"
        return f"{self.side} set {self.field}={self.value!r} at {clock}"


# ---------------------------------------------------------------------------- both sides


@dataclass
class World:
    """Both sandboxes as read at one moment: webshop records by id (deleted ones included),
    live Chargebee records by id."""

    shop: dict[str, dict[int, dict]]
    cb: dict[str, dict[str, dict]]


def read_world(sync: TwoWaySync, cb: Any) -> World:
    shop = {r: {row["id"]: row for row in webshop_get(sync, r)} for r in COMPARED}
    remote = {
        r: {row["id"]: row for row in cb_all(cb, r)}
        for r in ("customers", "items", "item_prices", "orders")
    }
    # a transfer's deprecated copy is listed too; it is not a customer of its own
    remote["customers"] = {
        i: c for i, c in remote["customers"].items() if c.get("active_id") in (None, i)
    }
    return World(shop, remote)


def chargebee_ids(resource: str, ws_id: int, links: dict[int, str], world: World) -> dict:
    """The Chargebee records a webshop record is linked to."""
    if resource == "customers":
        return {"customers": links.get(ws_id)}
    if resource == "orders":
        return {"orders": f"cws_{ws_id}"}
    currency = world.shop["products"][ws_id]["currency"]
    return {"items": f"cws_{ws_id}", "item_prices": f"cws_{ws_id}-{currency}"}


def shop_value(world: World, resource: str, ws_id: int, name: str) -> Any:
    record = world.shop[resource].get(ws_id)
    if record is None:
        return ABSENT
    if name == "deleted":
        return bool(record["deleted_at"])
    if name.startswith("billing_address."):
        return (record["billing_address"] or {}).get(name.split(".", 1)[1])
    return record.get(name)


def cb_value(world: World, resource: str, ws_id: int, name: str, links: dict[int, str]) -> Any:
    """The Chargebee side's value of a webshop field, in webshop terms."""
    ids = chargebee_ids(resource, ws_id, links, world)
    if resource == "customers":
        row = world.cb["customers"].get(ids["customers"])
        if name == "deleted":
            return row is None
    elif resource == "orders":
        row = world.cb["orders"].get(ids["orders"])
    else:
        row = world.cb["item_prices" if name == "price" else "items"].get(
            ids["item_prices" if name == "price" else "items"]
        )
    if row is None:
        return ABSENT
    if name == "status":
        status = row.get("status")
        return WEBSHOP_STATUS.get(status, f"<Chargebee status {status}>")
    if name == "active":
        return row.get("status") == "active"
    attribute = CHARGEBEE_NAME.get(name, name)
    if attribute.startswith("billing_address."):
        return (row.get("billing_address") or {}).get(attribute.split(".", 1)[1])
    return row.get(attribute)


def label(resource: str, ws_id: Any, links: dict[int, str], world: World) -> str:
    if resource == "customers":
        return f"customer {ws_id} ({links.get(ws_id, '?')})"
    if resource == "orders":
        return f"order {ws_id} (cws_{ws_id})"
    return f"product {ws_id} (cws_{ws_id})"


# ---------------------------------------------------------------------------- the script


class Round:
    """One round's script, drawn from EDIT_KINDS against the state of both sides."""

    def __init__(
        self,
        number: int,
        seed: int,
        rng: random.Random,
        world: World,
        links: dict[int, str],
        counter: list[int],
    ) -> None:
        self.number, self.seed, self.rng, self.world, self.links = number, seed, rng, world, links
        self.counter = counter  # one running number for unique values over the whole seed
        self.steps: list[list[Edit]] = []
        #: (resource, id) -> side -> fields that side edits in this round
        self.touched: dict[tuple, dict[str, set[str]]] = {}
        self.locked: set[tuple] = set()  # records with a delete or (de)activation: nothing else
        self.phases: dict[tuple, dict[str, int]] = {}  # records with a conflict: phase per side

    # ------------------------------------------------------------ drawing

    def plan(self) -> list[Edit]:
        weights = [weight for weight, _ in EDIT_KINDS]
        kinds = [kind for _, kind in EDIT_KINDS]
        for _ in range(1000):
            if sum(len(step) for step in self.steps) >= EDITS_PER_ROUND:
                break
            getattr(self, self.rng.choices(kinds, weights)[0])()
        self.rng.shuffle(self.steps)
        edits = [edit for step in self.steps for edit in step]
        return [e for e in edits if e.phase == 0] + [e for e in edits if e.phase == 1]

    def add(self, *edits: Edit) -> None:
        for edit in edits:
            sides = self.touched.setdefault((edit.resource, edit.record), {s: set() for s in SIDES})
            sides[edit.side].add(edit.field)
        self.steps.append(list(edits))

    def edited(self, resource: str, record: Any, side: str) -> set[str]:
        """The fields `side` edits of this record in this round so far."""
        return self.touched.get((resource, record), {}).get(side, set())

    def tag(self, side: str) -> str:
        self.counter[0] += 1
        return f"s{self.seed}r{self.number}n{self.counter[0]}{side[0]}"

    def edit(self, side: str, resource: str, record: Any, name: str, value: Any) -> Edit:
        phase = self.phases.get((resource, record), {}).get(side, 0)
        return Edit(self.number, side, resource, record, name, value, phase)

    # ------------------------------------------------------------ what may be edited

    def live_customers(self) -> list[int]:
        return [
            i
            for i, c in self.world.shop["customers"].items()
            if not c["deleted_at"] and self.links.get(i) in self.world.cb["customers"]
        ]

    def linked_orders(self) -> list[int]:
        return [
            i
            for i, o in self.world.shop["orders"].items()
            if o["paid_at"] and not o["deleted_at"] and f"cws_{i}" in self.world.cb["orders"]
        ]

    def active_products(self) -> list[int]:
        return [
            i
            for i, p in self.world.shop["products"].items()
            if p["active"]
            and not p["deleted_at"]
            and cb_value(self.world, "products", i, "active", {})
        ]

    def records(self, resource: str) -> list[int]:
        pool = {
            "customers": self.live_customers,
            "orders": self.linked_orders,
            "products": self.active_products,
        }[resource]()
        return [i for i in pool if (resource, i) not in self.locked]

    def editable(self, spec: FieldSpec, record: int, side: str) -> bool:
        """May `side` edit this field of this record now, without making an unplanned
        conflict (the other side edits it too) or editing a missing address?"""
        other = CHARGEBEE if side == WEBSHOP else WEBSHOP
        if side not in spec.sides or spec.name in self.edited(spec.resource, record, other):
            return False
        if spec.name == "billing_address.city":  # only an existing address is edited
            return bool(shop_value(self.world, "customers", record, "billing_address.line1")) and (
                bool(cb_value(self.world, "customers", record, "billing_address.line1", self.links))
            )
        return True

    def pick(self, side: str, *, fresh: bool = False, both: bool = False, clear: bool = False):
        """A random (spec, record) `side` may edit; `fresh`: a record nobody edits in this
        round yet; `both`: a field the other side may edit too; `clear`: an optional field
        that has a value and that `side` does not edit yet."""
        resource = self.rng.choice(("customers", "customers", "orders", "products"))
        records = self.records(resource)
        if fresh:
            records = [i for i in records if (resource, i) not in self.touched]
        specs = [s for s in FIELDS if s.resource == resource and (s.clearable or not clear)]
        options = [
            (spec, record)
            for record in records
            for spec in specs
            if self.editable(spec, record, side)
            and (not both or all(self.editable(spec, record, x) for x in SIDES))
            and (not clear or self.clearable_now(spec, record, side))
        ]
        return self.rng.choice(options) if options else (None, None)

    def clearable_now(self, spec: FieldSpec, record: int, side: str) -> bool:
        filled = shop_value(self.world, spec.resource, record, spec.name) not in (None, "")
        return filled and spec.name not in self.edited(spec.resource, record, side)

    # ------------------------------------------------------------ values

    def value(self, spec: FieldSpec, record: int, side: str, avoid: tuple = ()) -> Any:
        rng, tag = self.rng, self.tag(side)
        current = shop_value(self.world, spec.resource, record, spec.name)
        if spec.name == "status":
            return rng.choice([s for s in ORDER_STATUS if s != current and s not in avoid])
        if spec.name == "price":
            while True:
                price = rng.randrange(100, 100_000)
                if price != current and price not in avoid:
                    return price
        return {
            "email": lambda: f"conv.{tag}@example.com",
            "first_name": lambda: f"{rng.choice(FIRST_NAMES)}-{tag}",
            "last_name": lambda: f"{rng.choice(LAST_NAMES)}-{tag}",
            "company": lambda: f"{rng.choice(COMPANIES)} {tag}",
            "phone": lambda: f"+{rng.choice((45, 46, 49, 33))} {rng.randrange(10**6, 10**7)} {tag}",
            "billing_address.city": lambda: f"{rng.choice(CITIES)} {tag}",
            "tracking_number": lambda: f"TRK-{tag}-{rng.randrange(10**6)}",
            "note": lambda: f"Leave at the door, please ({tag})",
            "carrier": lambda: f"{rng.choice(CARRIERS)} {tag}",
            "name": lambda: f"{rng.choice(WORDS)} {tag}",
            "description": lambda: f"Hand-made, {rng.choice(WORDS).lower()} style ({tag})",
        }[spec.name]()

    # ------------------------------------------------------------ the kinds of step

    def one_field(self) -> None:
        side = self.rng.choice(SIDES)
        spec, record = self.pick(side)
        if spec:
            self.add(
                self.edit(side, spec.resource, record, spec.name, self.value(spec, record, side))
            )

    def two_fields(self) -> None:
        spec, record = self.pick(WEBSHOP)
        if not spec:
            return
        others = [
            s
            for s in FIELDS
            if s.resource == spec.resource
            and s.name != spec.name
            and self.editable(s, record, CHARGEBEE)
        ]
        if others:
            other = self.rng.choice(others)
            self.add(
                self.edit(
                    WEBSHOP, spec.resource, record, spec.name, self.value(spec, record, WEBSHOP)
                ),
                self.edit(
                    CHARGEBEE,
                    spec.resource,
                    record,
                    other.name,
                    self.value(other, record, CHARGEBEE),
                ),
            )

    def conflict(self) -> None:
        spec, record = self.pick(WEBSHOP, fresh=True, both=True)
        if not spec:
            return
        older = self.rng.choice(SIDES)
        newer = CHARGEBEE if older == WEBSHOP else WEBSHOP
        self.phases[(spec.resource, record)] = {older: 0, newer: 1}
        first = self.value(spec, record, older)
        second = self.value(spec, record, newer, avoid=(first,))
        self.add(
            self.edit(older, spec.resource, record, spec.name, first),
            self.edit(newer, spec.resource, record, spec.name, second),
        )

    def twice(self) -> None:
        side = self.rng.choice(SIDES)
        spec, record = self.pick(side)
        if spec:
            first = self.value(spec, record, side)
            second = self.value(spec, record, side, avoid=(first,))
            self.add(
                self.edit(side, spec.resource, record, spec.name, first),
                self.edit(side, spec.resource, record, spec.name, second),
            )

    def clear(self) -> None:
        side = self.rng.choice(SIDES)
        spec, record = self.pick(side, clear=True)
        if spec:
            self.add(self.edit(side, spec.resource, record, spec.name, None))

    def new_customer(self) -> None:
        side = self.rng.choice(SIDES)
        rng, tag = self.rng, self.tag(side)
        body: dict[str, Any] = {
            "email": f"new.{tag}@example.com",
            "first_name": rng.choice(FIRST_NAMES),
            "last_name": rng.choice(LAST_NAMES),
        }
        if rng.random() < 0.5:
            body["company"] = f"{rng.choice(COMPANIES)} {tag}"
        if rng.random() < 0.5:
            body["phone"] = f"+45 {rng.randrange(10**7, 10**8)}"
        if rng.random() < 0.7:
            address = {
                "line1": f"Nørregade {rng.randrange(1, 99)}",
                "city": rng.choice(CITIES),
                "country": rng.choice(("DK", "SE", "DE", "FR", "CH")),
            }
            if side == WEBSHOP:
                body["billing_address"] = {**address, "postal_code": f"{rng.randrange(10**4)}"}
            else:
                body["billing_address"] = {**address, "zip": f"{rng.randrange(10**4)}"}
        record = None if side == WEBSHOP else f"conv_{tag}"
        if side == CHARGEBEE:
            body["id"] = record
        edit = self.edit(side, "customers", record, "created", body["email"])
        edit.body = body
        self.add(edit)

    def delete_customer(self) -> None:
        ordering = {o["customer_id"] for o in self.world.shop["orders"].values()}
        idle = [
            i
            for i in self.records("customers")
            if i not in ordering and ("customers", i) not in self.touched
        ]
        if len(idle) < 3:  # keep some customers to edit
            return
        record = self.rng.choice(idle)
        self.locked.add(("customers", record))
        self.add(self.edit(self.rng.choice(SIDES), "customers", record, "deleted", True))

    def product_status(self) -> None:
        untouched = [
            i
            for i, p in self.world.shop["products"].items()
            if not p["deleted_at"] and ("products", i) not in self.touched
        ]
        if not untouched:
            return
        record = self.rng.choice(untouched)
        active = shop_value(self.world, "products", record, "active")
        if active and not cb_value(self.world, "products", record, "active", {}):
            return  # not alike on both sides: left alone
        if active and len(self.active_products()) <= 3:
            return  # keep products to edit
        side = self.rng.choice(SIDES) if active else WEBSHOP  # re-activation: in the webshop
        self.locked.add(("products", record))
        self.add(self.edit(side, "products", record, "active", not active))


# ---------------------------------------------------------------------------- the run


@dataclass
class Result:
    seed: int
    rounds: int = 0
    edits: int = 0
    conflicts: int = 0
    lost: int = 0
    duplicates: int = 0
    unplanned_conflicts: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    #: conflict entries for fields the script did not make compete (not failed on alone)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = (
            f"convergence seed={self.seed}: rounds {self.rounds}, edits {self.edits}, "
            f"conflicts {self.conflicts}, lost {self.lost}, duplicates {self.duplicates}"
        )
        if self.unplanned_conflicts:
            line += f", unplanned conflict reports {self.unplanned_conflicts}"
        if len(self.violations) > self.lost + self.duplicates:
            line += f", other violations {len(self.violations) - self.lost - self.duplicates}"
        return line + f" ({self.seconds:.0f} s)"


class Convergence:
    def __init__(self, sync: TwoWaySync, seed: int) -> None:
        self.sync, self.seed = sync, seed
        self.cb = cb_client(sync.chargebee)
        self.rng = random.Random(seed)
        self.links: dict[int, str] = {}  # webshop customer id -> Chargebee customer id
        self.counter = [0]
        self.result = Result(seed)

    def run(self, rounds: int) -> Result:
        started = time.monotonic()
        try:
            if self.sync_once("first sync"):
                world = read_world(self.sync, self.cb)
                self.links = {i: f"cws_{i}" for i in world.shop["customers"]}
                bad = self.check_alike(world, 0, set()) + self.check_duplicates(world, 0)
                bad += self.check_reports([self.sync.reverse_report(), self.sync.last_report()], 0)
                bad += self.check_quiet(0)
                for number in range(1, rounds + 1):
                    if bad:
                        break
                    world, bad = self.round(number, world)
                    self.result.rounds = number
        finally:
            self.result.seconds = time.monotonic() - started
        return self.result

    def violation(self, text: str, kind: str | None = None) -> list[str]:
        self.result.violations.append(text)
        if kind == "lost":
            self.result.lost += 1
        elif kind == "duplicate":
            self.result.duplicates += 1
        return [text]

    def sync_once(self, what: str) -> bool:
        done = self.sync.run(check=False)
        if done.returncode != 0:
            self.violation(
                f"{what}: meltano run sync failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        return done.returncode == 0

    # ------------------------------------------------------------ one round

    def round(self, number: int, world: World) -> tuple[World, list[str]]:
        edits = Round(number, self.seed, self.rng, world, self.links, self.counter).plan()
        for phase in (0, 1):
            batch = [e for e in edits if e.phase == phase]
            if phase == 1 and batch:
                time.sleep(PAUSE)
            for edit in batch:
                self.apply(edit, world)
        self.result.edits += len(edits)
        before = read_world(self.sync, self.cb)
        if not self.sync_once(f"round {number}"):
            return world, ["sync failed"]
        after = read_world(self.sync, self.cb)
        reports = [self.sync.reverse_report(), self.sync.last_report()]
        bad = self.check_created(edits, after, number)
        covered, found = self.check_edits(edits, before, after, reports, number)
        bad += found
        bad += self.check_alike(after, number, covered)
        bad += self.check_duplicates(after, number)
        bad += self.check_reports(reports, number)
        bad += self.check_quiet(number)
        return after, bad

    def apply(self, edit: Edit, world: World) -> None:
        sync, cb, value = self.sync, self.cb, edit.value
        if edit.side == WEBSHOP:
            path = f"{edit.resource}/{edit.record}"
            if edit.field == "created":
                edit.record = webshop_post(sync, "customers", edit.body)["id"]
                self.links[edit.record] = f"cws_{edit.record}"
            elif edit.field == "deleted":
                webshop_send(sync, "DELETE", path, {})
            elif edit.field == "billing_address.city":
                address = world.shop["customers"][edit.record]["billing_address"]
                webshop_patch(
                    sync, "customers", edit.record, {"billing_address": {**address, "city": value}}
                )
            else:
                webshop_patch(sync, edit.resource, edit.record, {edit.field: value})
        else:
            ids = {}
            if edit.field != "created":
                ids = chargebee_ids(edit.resource, edit.record, self.links, world)
            if edit.field == "created":
                cb.Customer.create(edit.body)
            elif edit.field == "deleted":
                cb.Customer.delete(ids["customers"])
            elif edit.field == "billing_address.city":
                current = world.cb["customers"][ids["customers"]]["billing_address"]
                address = {k: v for k, v in current.items() if k != "object"}
                cb.Customer.update_billing_info(
                    ids["customers"], {"billing_address": {**address, "city": value}}
                )
            elif edit.resource == "customers":
                cb.Customer.update(ids["customers"], {edit.field: value})
            elif edit.resource == "orders":
                if edit.field == "status":
                    value = ORDER_STATUS[value]
                cb.Order.update(ids["orders"], {CHARGEBEE_NAME.get(edit.field, edit.field): value})
            elif edit.field == "price":
                cb.ItemPrice.update(ids["item_prices"], {"price": value})
            elif edit.field == "description":
                cb.Item.update(ids["items"], {"description": value})
            elif edit.field == "active" and value is False:
                cb.Item.update(ids["items"], {"status": "archived"})
            else:
                raise AssertionError(f"no Chargebee edit for {edit}")
        edit.at = time.time()

    # ------------------------------------------------------------ checks

    def check_created(self, edits: list[Edit], after: World, number: int) -> list[str]:
        """A customer created in Chargebee has one webshop twin, found by its e-mail (the
        duplicate check counts more than one); it is linked from now on."""
        bad: list[str] = []
        for edit in edits:
            if edit.field != "created" or edit.side != CHARGEBEE:
                continue
            twins = sorted(
                i
                for i, c in after.shop["customers"].items()
                if not c["deleted_at"] and c["email"].casefold() == edit.value.casefold()
            )
            if twins:
                self.links[twins[0]] = edit.record
            else:
                bad += self.violation(
                    f"round {number}: customer {edit.record} created in Chargebee "
                    f"({edit.value}) has no webshop customer",
                    "lost",
                )
        return bad

    def check_edits(
        self, edits: list[Edit], before: World, after: World, reports: list[dict], number: int
    ) -> tuple[set, list[str]]:
        """(2) every edit without a competing edit of its field holds on both sides (the
        script's later edit of the same field on the same side counts); (3) of a conflicting
        pair, the winner's value holds on both sides and a report names the field with both
        values."""
        bad: list[str] = []
        last: dict[tuple, dict[str, Edit]] = defaultdict(dict)
        for edit in edits:
            if edit.field != "created":
                last[(edit.resource, edit.record, edit.field)][edit.side] = edit
        by_record: dict[tuple, list[Edit]] = defaultdict(list)
        for edit in edits:
            by_record[(edit.resource, edit.record)].append(edit)
        planned = {key for key, sides in last.items() if len(sides) == 2}
        self.result.conflicts += len(planned)
        for key, sides in last.items():
            resource, record, name = key
            what = label(resource, record, self.links, after)
            others = "; ".join(e.describe() for e in by_record[(resource, record)])
            if len(sides) == 2:
                winner = self.winner(before, resource, record, name)
                expected = sides[winner].value
                story = (
                    f"conflict, {winner} wins by updated_at "
                    f"{self.stamps(before, resource, record, name)}"
                )
            else:
                (edit,) = sides.values()
                winner, expected, story = edit.side, edit.value, f"{edit.side} edit"
            ours = shop_value(after, resource, record, name)
            theirs = cb_value(after, resource, record, name, self.links)
            if not (same(ours, expected) and same(theirs, expected)):
                bad += self.violation(
                    f"round {number}: {what} {name}: {story} expected {expected!r}, "
                    f"found webshop {ours!r}, Chargebee {theirs!r} [edits: {others}]",
                    "lost",
                )
            if len(sides) == 2 and not self.reported(
                reports, resource, record, name, sides, winner, after
            ):
                found = json.dumps(self.entries(reports, resource, record, after), default=str)
                bad += self.violation(
                    f"round {number}: {what} {name}: conflict (webshop "
                    f"{sides[WEBSHOP].value!r}, Chargebee {sides[CHARGEBEE].value!r}) is in "
                    f"neither report's conflicts with both values and winner {winner}; "
                    f"the reports' entries for this record: {found[:1500]}"
                )
        self.unplanned(reports, planned, after, number)
        return set(last), bad

    def stamps(self, world: World, resource: str, record: int, name: str) -> str:
        ours, theirs = self.updated_at(world, resource, record, name)
        return f"(webshop {ours}, Chargebee {theirs})"

    def updated_at(self, world: World, resource: str, record: int, name: str) -> tuple[int, int]:
        ids = chargebee_ids(resource, record, self.links, world)
        kind = {"customers": "customers", "orders": "orders"}.get(resource) or (
            "item_prices" if name == "price" else "items"
        )
        remote = world.cb[kind].get(ids[kind]) or {"updated_at": 0}
        return unix_seconds(world.shop[resource][record]["updated_at"]), unix_seconds(
            remote["updated_at"]
        )

    def winner(self, world: World, resource: str, record: int, name: str) -> str:
        """newest_wins: the newer updated_at in whole seconds; Chargebee on a tie."""
        ours, theirs = self.updated_at(world, resource, record, name)
        return WEBSHOP if ours > theirs else CHARGEBEE

    # ------------------------------------------------------------ the reports' conflicts

    def entries(self, reports: list[dict], resource: str, record: int, world: World) -> list:
        streams = {
            "customers": ("customers",),
            "orders": ("orders",),
            "products": ("products", "items", "item_prices"),
        }[resource]
        ids = {
            str(record),
            *filter(None, chargebee_ids(resource, record, self.links, world).values()),
        }
        return [
            entry
            for report in reports
            for entry in report.get("conflicts") or []
            if entry.get("stream") in streams
            and (str(entry.get("webshop_id")) in ids or str(entry.get("chargebee_id")) in ids)
        ]

    @staticmethod
    def field_details(entry: dict) -> list[dict]:
        """Per-field detail of a conflict entry: its `fields` list, or (the report format of
        a record-level conflict) one detail per key of its `webshop`/`chargebee` versions."""
        if isinstance(entry.get("fields"), list):
            return entry["fields"]
        ours, theirs = entry.get("webshop") or {}, entry.get("chargebee") or {}
        return [
            {"field": k, "webshop": ours.get(k), "chargebee": theirs.get(k)}
            for k in sorted(set(ours) | set(theirs))
        ]

    @staticmethod
    def logical_field(resource: str, reported: str) -> str | None:
        for spec in FIELDS:
            if spec.resource == resource and reported in (spec.name, *spec.report_names):
                return spec.name
        return None

    @staticmethod
    def matches(reported: Any, expected: Any, name: str) -> bool:
        """A reported value is the value of an edit, in either target's shape (an address as
        an object or JSON text; a status in either system's terms; numbers as text)."""
        if isinstance(reported, str) and reported.startswith("{"):
            with contextlib.suppress(ValueError):
                reported = json.loads(reported)
        if isinstance(reported, dict) and name.startswith("billing_address."):
            reported = reported.get(name.split(".", 1)[1])
        wanted = {expected, ORDER_STATUS.get(expected)} if name == "status" else {expected}
        text = None if reported in (None, "") else str(reported)
        return any(text == (None if w in (None, "") else str(w)) for w in wanted)

    def reported(
        self,
        reports: list[dict],
        resource: str,
        record: int,
        name: str,
        sides: dict[str, Edit],
        winner: str,
        world: World,
    ) -> bool:
        for entry in self.entries(reports, resource, record, world):
            for detail in self.field_details(entry):
                if self.logical_field(resource, str(detail.get("field"))) != name:
                    continue
                if not all(self.matches(detail.get(s), sides[s].value, name) for s in SIDES):
                    continue
                if detail.get("winner", entry.get("winner")) in (winner, None):
                    return True
        return False

    def unplanned(self, reports: list[dict], planned: set, world: World, number: int) -> None:
        """Conflict entries for a field only one side edited (or none): only two edits of the
        same field compete. Counted and listed as notes, not failed on alone."""
        ids = {str(v): k for k, v in self.links.items()}
        for report in reports:
            for entry in report.get("conflicts") or []:
                stream = entry.get("stream")
                resource = {"items": "products", "item_prices": "products"}.get(stream, stream)
                try:
                    record = int(entry.get("webshop_id"))
                except (TypeError, ValueError):
                    record = ids.get(str(entry.get("chargebee_id")), entry.get("chargebee_id"))
                for detail in self.field_details(entry):
                    if same(detail.get("webshop"), detail.get("chargebee")):
                        continue
                    name = self.logical_field(resource, str(detail.get("field")))
                    if (resource, record, name) in planned:
                        continue
                    self.result.unplanned_conflicts += 1
                    self.result.notes.append(
                        f"round {number}: {report.get('plugin')} reports a conflict on "
                        f"{stream} {record} field {detail.get('field')!r} (webshop "
                        f"{detail.get('webshop')!r}, Chargebee {detail.get('chargebee')!r}, "
                        f"winner {detail.get('winner', entry.get('winner'))}) that the script "
                        "did not make"
                    )

    # ------------------------------------------------------------ state checks

    def linked(self, world: World) -> dict[str, list[int]]:
        shop = world.shop
        return {
            "customers": [i for i, c in shop["customers"].items() if not c["deleted_at"]],
            "orders": [
                i for i, o in shop["orders"].items() if o["paid_at"] and not o["deleted_at"]
            ],
            "products": [i for i, p in shop["products"].items() if not p["deleted_at"]],
        }

    def check_alike(self, world: World, number: int, covered: set) -> list[str]:
        """(1) every linked record holds equal mapped values on both sides (fields the
        round's edits cover are judged by check_edits)."""
        bad: list[str] = []
        for resource, records in self.linked(world).items():
            for record in records:
                what = label(resource, record, self.links, world)
                if resource == "customers" and record not in self.links:
                    bad += self.violation(
                        f"round {number}: webshop {what} "
                        f"({world.shop['customers'][record]['email']}) is "
                        "linked to no Chargebee customer",
                        "duplicate",
                    )
                    continue
                ids = chargebee_ids(resource, record, self.links, world)
                kinds = {
                    "customers": ("customers",),
                    "orders": ("orders",),
                    "products": ("items", "item_prices"),
                }[resource]
                missing = [ids[k] for k in kinds if ids[k] not in world.cb[k]]
                if missing:
                    bad += self.violation(
                        f"round {number}: webshop {what} has no Chargebee twin "
                        f"{', '.join(missing)}",
                        "lost",
                    )
                    continue
                for name in COMPARED[resource]:
                    if (resource, record, name) in covered:
                        continue
                    ours = shop_value(world, resource, record, name)
                    theirs = cb_value(world, resource, record, name, self.links)
                    if not same(ours, theirs):
                        bad += self.violation(
                            f"round {number}: {what} {name} differs (not edited this round): "
                            f"webshop {ours!r}, Chargebee {theirs!r}"
                        )
        return bad

    def check_duplicates(self, world: World, number: int) -> list[str]:
        """(4) no two live webshop customers with the same e-mail (case-folded), no two
        Chargebee customers with the same e-mail, and no Chargebee customer, item, price or
        order beyond the linked webshop ones."""
        bad: list[str] = []
        linked = self.linked(world)
        shop_emails = Counter(
            world.shop["customers"][i]["email"].casefold() for i in linked["customers"]
        )
        cb_emails = Counter(
            (c.get("email") or "").casefold()
            for c in world.cb["customers"].values()
            if c.get("email")
        )
        for side, emails in ((WEBSHOP, shop_emails), (CHARGEBEE, cb_emails)):
            for email, count in emails.items():
                for _ in range(count - 1):
                    bad += self.violation(
                        f"round {number}: {count} {side} customers have the e-mail {email}",
                        "duplicate",
                    )
        wanted = {
            "customers": {self.links.get(i) for i in linked["customers"]},
            "orders": {f"cws_{i}" for i in linked["orders"]},
            "items": {f"cws_{i}" for i in linked["products"]},
            "item_prices": {
                f"cws_{i}-{world.shop['products'][i]['currency']}" for i in linked["products"]
            },
        }
        for kind, ids in wanted.items():
            extra = sorted(set(world.cb[kind]) - ids)
            for chargebee_id in extra:
                row = world.cb[kind][chargebee_id]
                bad += self.violation(
                    f"round {number}: Chargebee {kind} {chargebee_id} "
                    f"({row.get('email') or row.get('external_name') or ''}) is linked to no "
                    "live webshop record",
                    "duplicate",
                )
            if len(world.cb[kind]) != len(ids):
                bad += self.violation(
                    f"round {number}: Chargebee has {len(world.cb[kind])} "
                    f"{kind}, the webshop {len(ids)} linked ones"
                )
        return bad

    def check_reports(self, reports: list[dict], number: int) -> list[str]:
        """Every edit of the script is one the product supports: a refusal is a failure."""
        bad: list[str] = []
        for report in reports:
            for rejection in report.get("rejections") or []:
                bad += self.violation(
                    f"round {number}: {report.get('plugin')} rejected "
                    f"{json.dumps(rejection, default=str)}"
                )
        return bad

    def check_quiet(self, number: int) -> list[str]:
        """(5) a further sync writes nothing at either server."""
        self.sync.reset_counts()
        if not self.sync_once(f"round {number}, the further sync"):
            return ["sync failed"]
        shop, chargebee = self.sync.write_counts()
        if not shop and not chargebee:
            return []
        changes = [
            f"{r.get('plugin')}: {c.get('stream')} {c.get('webshop_id')}/{c.get('chargebee_id')}"
            f" {c.get('outcome')}"
            for r in (self.sync.reverse_report(), self.sync.last_report())
            for c in r.get("changes") or []
        ]
        return self.violation(
            f"round {number}: the further sync wrote: webshop {dict(shop)}, Chargebee "
            f"{dict(chargebee)}; changes: {changes[:12]}"
        )


def extra_seeds(text: str | None) -> list[int]:
    """`SYNC_CONVERGENCE_SEEDS`: seeds beyond 1, as ranges and lists (`2-20`, `5,8,13-15`)
    or a count (`10`: seeds 2 to 11)."""
    text = (text or "").strip()
    if not text:
        return []
    if text.isdigit():
        return list(range(2, 2 + int(text)))
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds
