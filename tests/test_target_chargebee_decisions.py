"""target-chargebee's upsert decisions, in-process: the real decision layer, resource rules,
gateway and link store (SQLite in a temporary directory), no Meltano, and no threads but the
scheduler's workers where a test is about them. Where a decision must not talk to Chargebee,
the gateway's client points at a closed port and the test checks it sent nothing; where it
needs Chargebee's answer, one emulator serves the module."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_common.chargebee import ChargebeeClient
from sync_common.guard import DeleteGuard
from sync_common.links import LinkStore
from sync_common.merge import SOURCE_RECORD
from sync_common.planning import PlanningLinks
from sync_common.report import RunReport
from target_chargebee.gateway import Gateway, PlanningGateway
from target_chargebee.jobs import Attempt, Job
from target_chargebee.params import composite_hash, to_params, to_remote
from target_chargebee.resources import RULES, FirstContact
from target_chargebee.scheduler import KNOWN_PARENTS, Scheduler
from target_chargebee.upsert import Decisions
from tests.harness import CHARGEBEE_KEY
from tests.plugin_forks import start_sandbox

SETTINGS = {"item_family_id": "webshop", "conflict_policy": "newest_wins"}
#: Nothing listens here: a decision that calls Chargebee fails at once (and the calls show it).
NOWHERE = "http://127.0.0.1:9/api/v2"


def nowhere() -> ChargebeeClient:
    return ChargebeeClient(NOWHERE, "key", max_tries=1, timeout=1)


PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

names = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=40,
)
#: E-mails Chargebee accepts (it refuses more than 70 characters), so that only the field a
#: test makes wrong is refused.
emails = st.emails().map(str.lower).filter(lambda email: len(email) <= 70)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LinkStore:
    store = LinkStore(f"sqlite:///{tmp_path_factory.mktemp('links') / 'links.db'}")
    yield store
    store.close()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    sandbox = start_sandbox(
        "chargebee", str(tmp_path_factory.mktemp("cb") / "chargebee.db"), CHARGEBEE_KEY
    )
    yield sandbox
    sandbox.stop()


def decisions_on(links: LinkStore | PlanningLinks, gateway: Gateway) -> Decisions:
    """The layer as the target builds it (target_chargebee.target.start)."""
    first_contact = FirstContact()
    rules = {
        resource: rules_class(
            gateway=gateway, links=links, settings=SETTINGS, first_contact=first_contact
        )
        for resource, rules_class in RULES.items()
    }
    return Decisions(
        rules=rules,
        links=links,
        delete_guard=DeleteGuard(links, 100),
        logger=logging.getLogger("test-decisions"),
    )


def job_of(resource: str, record: dict) -> Job:
    """A job as the scheduler makes it from a mapped record (no references to resolve)."""
    return Job(
        resource=resource,
        record=record,
        webshop_id=str(record["webshop_id"]),
        webshop_version=record.get("webshop_version"),
        deleted=bool(record.get("deleted")),
        det_id=str(record["id"]),
        params=to_params(record),
    )


def customer(email: str, first_name: str, **fields) -> dict:
    webshop_id = uuid.uuid4().hex[:12]
    return {
        "id": f"cws_{webshop_id}",
        "webshop_id": webshop_id,
        "webshop_version": 2,
        "email": email,
        "first_name": first_name,
        SOURCE_RECORD: {"id": webshop_id, "email": email, "first_name": first_name},
        **fields,
    }


def invoice(webshop_id: str, **fields) -> dict:
    return {
        "id": f"cws_{webshop_id}",
        "webshop_id": webshop_id,
        "webshop_version": 3,
        "customer_id": "cws_1",
        "currency_code": "USD",
        "total": 1200,
        **fields,
    }


# ---------------------------------------------------------------- no call needed


@PROPERTY
@given(email=emails, first_name=names, with_base=st.booleans())
def test_a_job_whose_content_hash_equals_the_links_sends_nothing(
    store, email, first_name, with_base
):
    """Linked, and nothing differs from what the link says Chargebee holds (by its hash, or
    by its base field by field): unchanged, the record counts as existing, no call."""
    gateway = Gateway(nowhere())
    decisions = decisions_on(store, gateway)
    job = job_of("customers", customer(email, first_name))
    rules = decisions.rules["customers"]
    content = composite_hash(rules.hash_parts(Attempt.of(job)))
    base = to_remote(rules.merged(Attempt.of(job))) if with_base else None
    store.save(
        "customers", job.webshop_id, job.det_id, chargebee_hash=content,
        chargebee_base=base, webshop_version=1, deterministic_id=job.det_id,
    )  # fmt: skip

    outcome = decisions.decide(job)

    assert outcome.kind == "unchanged"
    assert outcome.exists_as == job.det_id
    assert gateway.api_calls() == {"writes_by_operation": {}}


@PROPERTY
@given(email=emails, first_name=names)
def test_the_webshop_version_the_link_accounts_for_sends_nothing(store, email, first_name):
    """A version the link store says the sync wrote or saw (the way back wrote it) needs no
    call, whatever the hash says."""
    gateway = Gateway(nowhere())
    decisions = decisions_on(store, gateway)
    job = job_of("customers", customer(email, first_name))
    store.save("customers", job.webshop_id, job.det_id, chargebee_hash="other", webshop_version=2)

    assert decisions.decide(job).kind == "unchanged"
    assert gateway.api_calls() == {"writes_by_operation": {}}


@PROPERTY
@given(email=emails, first_name=names)
def test_a_record_deleted_before_it_reached_chargebee_is_skipped_without_a_call(
    store, email, first_name
):
    gateway = Gateway(nowhere())
    job = job_of("customers", customer(email, first_name, deleted=True))

    outcome = decisions_on(store, gateway).decide(job)

    assert (outcome.kind, outcome.exists_as) == ("skipped", None)
    assert gateway.api_calls() == {"writes_by_operation": {}}


@PROPERTY
@given(webshop_id=st.from_regex(r"[0-9]{1,9}", fullmatch=True), dry_run=st.booleans())
def test_a_rule_refusal_becomes_a_dead_letter_with_its_reason(store, webshop_id, dry_run):
    """A linked invoice deleted in the webshop: Chargebee's rules refuse it (no call); a real
    run keeps a dead letter with the reason, a plan reports the same rejection and keeps
    none."""
    links = PlanningLinks(store) if dry_run else store
    api = nowhere()
    gateway = PlanningGateway(api) if dry_run else Gateway(api)
    webshop_id = f"{webshop_id}-{uuid.uuid4().hex[:6]}"
    job = job_of("invoices", invoice(webshop_id, deleted=True))
    store.save("invoices", webshop_id, job.det_id, chargebee_hash="main:x", webshop_version=1)

    outcome = decisions_on(links, gateway).decide(job)

    assert outcome.kind == "rejected"
    assert outcome.reason == "deleting a invoice in Chargebee is not supported"
    assert outcome.exists_as is None
    letters = [d for d in store.open_dead_letters("invoices") if d.record_key == webshop_id]
    if dry_run:
        assert outcome.dead_letter_attempts is None and letters == []
    else:
        assert outcome.dead_letter_attempts == 1
        [letter] = letters
        assert letter.reason == outcome.reason
        assert letter.details == {"chargebee_id": job.det_id}
    assert gateway.api_calls() == {"writes_by_operation": {}}


# ---------------------------------------------------------------- Chargebee's answers


def emulated(emulator) -> ChargebeeClient:
    return ChargebeeClient(emulator.url + "/api/v2", CHARGEBEE_KEY)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(email=emails, company=st.text(st.sampled_from("abcXYZ "), min_size=251, max_size=400))
def test_a_chargebee_refusal_becomes_a_dead_letter_with_chargebees_reason(
    store, emulator, email, company
):
    """The emulator refuses a company name over 250 characters, as Chargebee does: the
    record is rejected and dead-lettered with Chargebee's own reason (code, message,
    param), and nothing of it exists for its children."""
    gateway = Gateway(emulated(emulator))
    job = job_of("customers", customer(email, "Ann", company=company))

    outcome = decisions_on(store, gateway).decide(job)

    assert outcome.kind == "rejected"
    assert outcome.details["param"] == "company"
    assert outcome.reason.startswith(f"{outcome.details['api_error_code']}: ")
    assert outcome.exists_as is None
    [letter] = [d for d in store.open_dead_letters("customers") if d.record_key == job.webshop_id]
    assert letter.reason == outcome.reason
    assert letter.details["param"] == "company"
    assert store.get_by_webshop("customers", job.webshop_id) is None  # no link


def test_a_new_record_is_created_once_and_then_sends_nothing(store, emulator):
    gateway = Gateway(emulated(emulator))
    decisions = decisions_on(store, gateway)
    job = job_of("customers", customer(f"{uuid.uuid4().hex}@example.com", "Bo"))

    created = decisions.decide(job)
    writes = gateway.api_calls()["writes_by_operation"]
    again = decisions.decide(job)

    assert (created.kind, created.exists_as) == ("created", job.det_id)
    assert writes == {"customers.create": 1}
    assert again.kind == "unchanged"
    assert gateway.api_calls()["writes_by_operation"] == writes


def test_a_plan_of_a_new_record_writes_nothing_and_says_created(store, emulator):
    api = emulated(emulator)
    links = PlanningLinks(store)
    job = job_of("customers", customer(f"{uuid.uuid4().hex}@example.com", "Cy"))

    outcome = decisions_on(links, PlanningGateway(api)).decide(job)

    assert outcome.kind == "created"
    assert not any(call.startswith("POST") for call in api.calls())
    assert store.get_by_webshop("customers", job.webshop_id) is None
    assert links.get_by_webshop("customers", job.webshop_id) is not None  # later records see it


def test_two_chargebee_customers_with_the_e_mail_are_an_ambiguous_skip(store, emulator):
    """First contact finds two Chargebee customers with the record's e-mail (differing in
    case): neither is linked or created over; skipped with both candidates."""
    api = emulated(emulator)
    email = f"{uuid.uuid4().hex}@example.com"
    for n, address in enumerate((email, email.upper())):
        api.post(
            "/customers", {"id": f"hand_{uuid.uuid4().hex[:8]}_{n}", "email": address},
            idempotency_key=uuid.uuid4().hex,
        )  # fmt: skip
    gateway = Gateway(api)
    job = job_of("customers", customer(email, "Di"))

    outcome = decisions_on(store, gateway).decide(job)

    assert outcome.kind == "skipped"
    assert outcome.ambiguous is not None
    assert len(outcome.ambiguous["candidates"]) == 2
    assert gateway.api_calls()["writes_by_operation"] == {}
    assert store.get_by_webshop("customers", job.webshop_id) is None


def posts(api: ChargebeeClient) -> int:
    return sum(n for call, n in api.calls().items() if call.startswith("POST"))


def test_a_plan_of_a_record_chargebee_has_says_matched_with_the_change(store, emulator):
    """The customer is in Chargebee under its derived id, but the link is lost: the plan
    finds it as the run does, says matched, with the field it would change, old -> new."""
    api = emulated(emulator)
    record = customer(f"{uuid.uuid4().hex}@example.com", "Eve")
    api.post(
        "/customers", {"id": record["id"], "email": record["email"], "first_name": "Eva"},
        idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    before = posts(api)
    job = job_of("customers", {**record, "webshop_version": None})

    outcome = decisions_on(PlanningLinks(store), PlanningGateway(api)).decide(job)

    assert (outcome.kind, outcome.chargebee_id) == ("matched", record["id"])
    assert outcome.changes == {"first_name": ["Eva", "Eve"]}
    assert posts(api) == before


def test_a_plan_refuses_a_create_under_an_existing_id_as_chargebee_would(store, emulator):
    """An item price is created without looking first; Chargebee refuses one under an id it
    has (`duplicate_entry`) and the run adopts it. The planning gateway refuses the planned
    create the same way: the plan says matched, and sends nothing."""
    api = emulated(emulator)
    n = uuid.uuid4().hex[:8]
    item, price = f"cws_{n}", f"cws_{n}-USD"
    key = uuid.uuid4().hex
    api.post("/item_families", {"id": f"fam_{n}", "name": f"fam_{n}"}, idempotency_key=key)
    api.post(
        "/items", {"id": item, "name": f"Thing {n}", "type": "charge",
                   "item_family_id": f"fam_{n}"}, idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    fields = {"item_id": item, "name": f"Thing {n} USD", "pricing_model": "flat_fee",
              "currency_code": "USD"}  # fmt: skip
    api.post("/item_prices", {"id": price, **fields, "price": 900}, idempotency_key=key + "p")
    before = posts(api)
    record = {"id": price, "webshop_id": n, "webshop_version": 1, "price": 1000, **fields}

    outcome = decisions_on(PlanningLinks(store), PlanningGateway(api)).decide(
        job_of("item_prices", record)
    )

    assert (outcome.kind, outcome.chargebee_id) == ("matched", price)
    assert outcome.changes == {"price": ["900", "1000"]}
    assert posts(api) == before


@PROPERTY
@given(claimants=st.lists(st.integers(1, 10_000).map(str), min_size=2, max_size=12, unique=True))
def test_one_chargebee_record_is_claimed_by_one_webshop_record_however_decisions_race(
    claimants: list[str],
) -> None:
    """Decisions run in parallel: whoever claims a Chargebee record first has it, and every
    other claimant is told who (and is then ambiguous, not linked to the same record)."""
    first_contact = FirstContact()
    start = threading.Barrier(len(claimants))

    def claim(webshop_id: str) -> str:
        start.wait()
        return first_contact.claim("customers", "cb_1", webshop_id)

    with ThreadPoolExecutor(len(claimants)) as pool:
        owners = list(pool.map(claim, claimants))

    assert len(set(owners)) == 1 and owners[0] in claimants
    assert first_contact.claimed[("customers", "cb_1")] == owners[0]


def test_the_parent_cache_cap_is_read_when_a_run_starts(store, monkeypatch):
    """SYNC_KNOWN_PARENTS is read by each run's scheduler, not at import: the tests' plugins
    are forked from one process that imported them (tests/plugin_forks.py)."""
    gateway = Gateway(nowhere())

    def cap() -> int:
        scheduler = Scheduler(
            decisions=decisions_on(store, gateway), gateway=gateway, links=store,
            report=RunReport("test-decisions"), max_concurrency=1,
        )  # fmt: skip
        scheduler.close()
        return scheduler.known_parents

    assert cap() == KNOWN_PARENTS
    monkeypatch.setenv("SYNC_KNOWN_PARENTS", "1")
    assert cap() == 1


def test_a_batch_of_archivals_runs_in_the_workers_side_by_side(store, emulator, monkeypatch):
    """New inactive items are archived after their prices, a batch at once in the workers:
    each archival here waits at a barrier for the others, so archivals made one after the
    other would break it (and the run would fail)."""
    workers = 4
    monkeypatch.setenv("SYNC_ARCHIVE_BATCH", str(workers))
    api = ChargebeeClient(emulator.url + "/api/v2", CHARGEBEE_KEY)
    gateway = Gateway(api)
    decisions = decisions_on(store, gateway)
    side_by_side = threading.Barrier(workers, timeout=20)
    archive = decisions.archive

    def archive_with_the_others(attempt: Attempt):  # the real archival, once all are in
        side_by_side.wait()
        return archive(attempt)

    monkeypatch.setattr(decisions, "archive", archive_with_the_others)
    report = RunReport("test-decisions")
    scheduler = Scheduler(
        decisions=decisions, gateway=gateway, links=store, report=report,
        max_concurrency=workers,
    )  # fmt: skip
    ids = [f"arch{uuid.uuid4().hex[:10]}" for _ in range(workers)]
    try:
        for webshop_id in ids:
            item = {"id": f"cws_{webshop_id}", "webshop_id": webshop_id, "webshop_version": 1,
                    "name": webshop_id, "type": "charge", "status": "archived"}  # fmt: skip
            price = {"id": f"cws_{webshop_id}-USD", "webshop_id": webshop_id,
                     "webshop_version": 1, "item_id": f"cws_{webshop_id}",
                     "name": f"{webshop_id} USD", "pricing_model": "flat_fee", "price": 100,
                     "currency_code": "USD", "status": "archived"}  # fmt: skip
            scheduler.submit("items", item)
            scheduler.submit("item_prices", price)
            scheduler.verify()  # after the maps of each source record, as the target does
        scheduler.finish()
    finally:
        scheduler.close()
    assert report.outcomes == {"items": {"created": workers}, "item_prices": {"created": workers}}
    for webshop_id in ids:
        item = api.get(f"/items/cws_{webshop_id}")["item"]
        price = api.get(f"/item_prices/cws_{webshop_id}-USD")["item_price"]
        assert (item["status"], price["status"]) == ("archived", "archived")


def test_a_parent_this_run_is_writing_is_waited_for_not_looked_up(store, emulator):
    """An order comes before its invoice (the maps' order), and the invoice waits for a
    customer that comes later: the invoice, which this run is writing, is not looked up in
    Chargebee (a GET that can only answer 404, one per order); each record goes when its
    parent is written. (The customer, unseen when the order's source record ends, is looked
    up: it may exist in Chargebee only.)"""
    api = emulated(emulator)
    gateway = Gateway(api)
    report = RunReport("test-decisions")
    scheduler = Scheduler(
        decisions=decisions_on(store, gateway), gateway=gateway, links=store, report=report,
        max_concurrency=2,
    )  # fmt: skip
    webshop_id = uuid.uuid4().hex[:12]
    buyer = customer(f"{webshop_id}@example.com", "Di")
    order = {"id": f"cws_{webshop_id}", "webshop_id": webshop_id, "webshop_version": 1,
             "invoice_id": f"cws_{webshop_id}", "customer_id": buyer["id"],
             "status": "queued", "created_at": 1_760_000_000, "order_date": 1_760_000_000,
             "shipping_date": 1_760_000_000}  # fmt: skip
    try:
        scheduler.submit("orders", order)
        line = {"entity_type": "adhoc", "description": "Shipping", "quantity": 1,
                "unit_amount": 1200, "amount": 1200}  # fmt: skip
        bill = invoice(webshop_id, customer_id=buyer["id"], date=1_760_000_000,
                       line_items=json.dumps([line]))  # fmt: skip
        scheduler.submit("invoices", bill)
        scheduler.verify()  # after the maps of the webshop order, as the target does
        scheduler.submit("customers", buyer)
        scheduler.verify()
        scheduler.finish()
    finally:
        scheduler.close()
    assert report.outcomes == {
        "customers": {"created": 1}, "invoices": {"created": 1}, "orders": {"created": 1},
    }  # fmt: skip
    assert "GET invoices" not in api.calls()
