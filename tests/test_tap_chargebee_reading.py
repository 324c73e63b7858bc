"""tap-chargebee's concurrent list reads (tap_chargebee.reading) against the emulator: the same
records as one page at a time, in ascending updated_at order, pages in flight together, a
record updated during the read still read, an interrupted read resumed from its bookmark
without a loss, a failing request retried, and the final bookmark. In-process, on lists in
memory: the bytes of the pages read ahead across streams stay within the run's budget whatever
the pages' size, and any budget, however small, reads every stream whole and in order."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_common.conflicts import unix_seconds
from sync_sandbox.process import RunningSandbox
from tap_chargebee.reading import Page, Slice, StreamReads, cut, read_sorted_list, slice_params
from tap_chargebee.tap import TapChargebee
from tests.plugin_forks import start_sandbox
from tests.test_tap_chargebee import run_tap

KEY = "tap_reading_chargebee_key_0123456789"
CUSTOMERS = 460  # five pages, spread over several seconds (Chargebee counts whole seconds)


@pytest.fixture(scope="module")
def emulator():
    directory = tempfile.mkdtemp(prefix="tap-chargebee-reading-")
    box = start_sandbox("chargebee", str(Path(directory) / "cb.db"), KEY)
    session = requests.Session()
    session.auth = (KEY, "")
    for n in range(CUSTOMERS):
        if n % 100 == 0 and n:  # the next hundred one second later: slices to cut
            time.sleep(1.0)
        data = {"id": f"r{n:03}", "email": f"r{n}@example.com"}
        session.post(f"{box.url}/api/v2/customers", data=data, timeout=10).raise_for_status()
    yield box
    box.stop()
    shutil.rmtree(directory, ignore_errors=True)


def config(box: RunningSandbox, workers: int) -> dict:
    return {"api_url": box.url + "/api/v2", "api_key": KEY, "requests_per_minute": 100000,
            "concurrent_reads": workers, "retry_dead_letters": False}  # fmt: skip


def stream(box: RunningSandbox, workers: int):
    return TapChargebee(config=config(box, workers), setup_mapper=False).streams["customers"]


def read(box: RunningSandbox, workers: int) -> list[dict]:
    return list(stream(box, workers).request_records(None))


def customers_of(messages: list[dict]) -> list[dict]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == "customers"]


def keys(records: list[dict]) -> list[tuple[int, int, str]]:
    return [(r["updated_at"], r["resource_version"], r["id"]) for r in records]


def update(box: RunningSandbox, customer_id: str, company: str) -> None:
    requests.post(
        f"{box.url}/api/v2/customers/{customer_id}", data={"company": company},
        auth=(KEY, ""), timeout=10,
    ).raise_for_status()  # fmt: skip


def test_cut_covers_the_range_in_whole_seconds_the_last_slice_open():
    assert cut(100, 109, 4) == [Slice(100, 101), Slice(102, 104), Slice(105, 106), Slice(107, None)]
    assert cut(100, 101, 8) == [Slice(100, 100), Slice(101, None)]  # never below one second
    assert cut(100, 100, 8) == [Slice(100, None)]
    params = {"limit": 100, "updated_at[after]": 99}
    assert slice_params(params, Slice(100, 101)) == {
        "limit": 100,
        "updated_at[between]": "[100,101]",
    }
    assert slice_params(params, Slice(107, None)) == {"limit": 100, "updated_at[after]": 106}


def test_concurrent_read_gives_the_sequential_records_in_the_same_order(emulator):
    emulator.reset_stats()
    sequential = read(emulator, 1)
    one_at_a_time = emulator.stats()["operations"]["list_customers"]["200"]
    emulator.reset_stats()
    concurrent = read(emulator, 4)
    calls = emulator.stats()["operations"]["list_customers"]["200"]
    assert len(sequential) >= CUSTOMERS
    assert keys(concurrent) == keys(sequential)  # none missing, none twice, same order
    assert keys(concurrent) == sorted(keys(concurrent))
    # the probe and at most one page per slice boundary more than one page at a time
    assert one_at_a_time <= calls <= one_at_a_time + 1 + 4 * 4


def test_pages_are_in_flight_together(emulator):
    emulator.set_knobs(latency_ms=150)
    try:
        customers = stream(emulator, 4)
        fetch, spans, lock = customers.fetch_page, [], threading.Lock()

        def timed(context, params):
            started = time.monotonic()
            page = fetch(context, params)
            with lock:
                spans.append((started, time.monotonic()))
            return page

        customers.fetch_page = timed  # type: ignore[method-assign]
        started = time.monotonic()
        records = list(customers.request_records(None))
        concurrent_seconds = time.monotonic() - started
    finally:
        emulator.set_knobs(latency_ms=0)
    assert len(records) >= CUSTOMERS
    overlapping = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlapping >= 2, spans
    # one at a time, the same requests would take the sum of their durations
    assert concurrent_seconds < 0.8 * sum(e - s for s, e in spans)


def test_a_record_updated_during_the_read_is_read_again(emulator):
    emulator.set_knobs(latency_ms=100)
    try:
        records = stream(emulator, 4).request_records(None)
        seen = [next(records) for _ in range(5)]  # the first page is in; the rest in flight
        first, last = seen[0]["id"], f"r{CUSTOMERS - 1:03}"
        update(emulator, first, "Moved during the read")
        update(emulator, last, "Moved too")
        seen += list(records)
    finally:
        emulator.set_knobs(latency_ms=0)
    assert keys(seen) == sorted(keys(seen))
    newest = {r["id"]: r for r in seen}
    assert newest[first]["company"] == "Moved during the read"
    assert newest[last]["company"] == "Moved too"
    assert {r["id"] for r in seen} >= {f"r{n:03}" for n in range(CUSTOMERS)}


def test_an_interrupted_read_resumes_from_its_bookmark_without_a_loss(emulator, tmp_path):
    everything = {r["id"] for r in read(emulator, 1)}
    records = iter(stream(emulator, 4).request_records(None))
    before = [next(records) for _ in range(250)]
    records.close()  # stopped mid-read: the workers stop, nothing hangs
    bookmark = before[-1]["updated_at"]
    state = {"bookmarks": {"customers": {"replication_key": "updated_at",
                                         "replication_key_value": bookmark}}}  # fmt: skip
    after = customers_of(run_tap(tmp_path, state, config(emulator, 4)))
    assert min(unix_seconds(r["updated_at"]) for r in after) >= bookmark  # emitted: date-times
    assert {r["id"] for r in before} | {r["id"] for r in after} == everything
    assert {r["id"] for r in after} < everything  # it did resume, not start over


@pytest.mark.parametrize(
    ("knob", "statuses"), [("error_rate", ("500", "502", "503")), ("rate_limited_rate", ("429",))]
)
def test_failing_requests_are_retried_and_the_read_stays_complete(emulator, knob, statuses):
    expected = keys(read(emulator, 1))
    emulator.set_knobs(**{knob: 0.1}, seed=3)
    try:
        emulator.reset_stats()
        got = keys(read(emulator, 4))
        failed = sum(
            count for operation in emulator.stats()["operations"].values()
            for status, count in operation.items() if status in statuses
        )  # fmt: skip
    finally:
        emulator.set_knobs(**{knob: 0.0})
    assert failed >= 1
    assert got == expected


def test_the_tap_emits_in_order_and_bookmarks_the_newest_record(emulator, tmp_path):
    emulator.reset_stats()
    messages = run_tap(tmp_path, config=config(emulator, 4))  # and exits
    # five pages, the probe, at most a part page per slice (a second)
    assert emulator.stats()["operations"]["list_customers"]["200"] <= 5 + 1 + 7
    emitted = customers_of(messages)
    assert keys(emitted) == sorted(keys(emitted))
    state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    newest = max(r["updated_at"] for r in read(emulator, 1))
    assert unix_seconds(state["bookmarks"]["customers"]["replication_key_value"]) == newest


def test_the_next_streams_are_read_while_one_is_emitted(emulator):
    emulator.reset_stats()
    records = stream(emulator, 4).request_records(None)
    next(records)  # customers being emitted; items, item prices and orders are read already
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        read = emulator.stats()["operations"]
        if all(read.get(f"list_{name}") for name in ("items", "prices", "orders")):
            break
        time.sleep(0.1)
    records.close()
    assert all(read.get(f"list_{name}") for name in ("items", "prices", "orders")), read


def test_a_stream_is_read_once_per_run_though_every_stream_starts_the_reads():
    reads, started = StreamReads(workers=1), []

    def pages(lane, stop):
        started.append(stop)
        yield Page([{"id": "a"}], None, 100)

    reads.start("customers", pages)
    assert list(reads.records("customers")) == [{"id": "a"}]
    reads.start("customers", pages)  # the next stream's sync starts them all again
    assert len(started) == 1


class ListInMemory:
    """A Chargebee list sorted by updated_at, answering what read_sorted_list asks of a fetch
    (offset, `updated_at[after]` exclusive, `[between]` inclusive, the newest-first probe);
    counts the records it has handed out."""

    def __init__(self, name: str, count: int, seconds: int, page_bytes: int = 64_000) -> None:
        start = 1_700_000_000
        self.page_bytes = page_bytes  # what each page's response would weigh
        self.records = [
            {"id": f"{name}{n:05}", "updated_at": start + n * seconds // max(count, 1)}
            for n in range(count)
        ]
        self.handed_out = 0
        self._lock = threading.Lock()

    def __call__(self, params: dict) -> Page:
        rows = self.records
        if "updated_at[after]" in params:
            rows = [r for r in rows if r["updated_at"] > int(params["updated_at[after]"])]
        if "updated_at[between]" in params:
            low, high = json.loads(params["updated_at[between]"])
            rows = [r for r in rows if low <= r["updated_at"] <= high]
        if "sort_by[desc]" in params:
            rows = rows[::-1]
        offset, limit = int(params.get("offset") or 0), int(params["limit"])
        page = rows[offset : offset + limit]
        with self._lock:
            self.handed_out += len(page)
        next_offset = str(offset + limit) if offset + limit < len(rows) else None
        return Page(page, next_offset, self.page_bytes)


SORTED = {"limit": 100, "sort_by[asc]": "updated_at"}


def start_reads(
    lists: dict[str, ListInMemory], workers: int, limit_pages: int | None = None
) -> StreamReads:
    reads = StreamReads(workers)
    if limit_pages is not None:
        reads.budget.limit = limit_pages * next(iter(lists.values())).page_bytes
    for name, fetch in lists.items():
        reads.start(name, functools.partial(read_sorted_list, fetch, SORTED, workers))
    return reads


@pytest.mark.parametrize("page_bytes", [16_000, 250_000])
def test_the_pages_read_ahead_across_streams_stay_within_the_runs_budget(page_bytes):
    """The budget is bytes, not pages: lists of big pages (bench/volume.py's are 232 KB on
    average) are read less far ahead than lists of small ones."""
    names = ("customers", "items", "orders")
    lists = {name: ListInMemory(name, 5000, 400, page_bytes) for name in names}
    reads = start_reads(lists, workers=4)
    customers = reads.records("customers")
    next(customers)  # the consumer takes one record, then waits: the reads run ahead
    handed_out, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:  # until they stop for want of room
        before, handed_out = handed_out, sum(fetch.handed_out for fetch in lists.values())
        if handed_out == before:
            break
        time.sleep(0.3)
    budget_pages = reads.budget.limit // page_bytes
    assert handed_out >= min(1000, budget_pages * 100)  # they did run ahead: not met by waiting
    # Besides the budget's pages, per stream: one held between its slices and its own buffer,
    # one a slice may take while its stream waits on it, the part of a page the first slice's
    # cut drops, the probe's record; and the page being emitted.
    assert handed_out <= (budget_pages + 4 * len(lists) + 1) * 100, handed_out
    ids = {"customers": [r["id"] for r in customers]}
    ids |= {name: [r["id"] for r in reads.records(name)] for name in ("items", "orders")}
    expected = {name: [r["id"] for r in fetch.records] for name, fetch in lists.items()}
    assert ids == expected | {"customers": expected["customers"][1:]}
    assert reads.budget.held == 0


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(0, 900), min_size=1, max_size=4),
    seconds=st.integers(1, 40),
    workers=st.integers(1, 4),
    limit=st.integers(1, 3),
    page_bytes=st.sampled_from([1, 64_000, 250_000]),
)
def test_any_page_budget_reads_every_stream_whole_and_in_order(
    counts, seconds, workers, limit, page_bytes
):
    lists = {
        f"s{n}": ListInMemory(f"s{n}", count, seconds, page_bytes) for n, count in enumerate(counts)
    }
    reads = start_reads(lists, workers, limit)
    got: dict[str, list[str]] = {}

    def emit_each_stream_in_turn() -> None:
        for name in lists:
            got[name] = [r["id"] for r in reads.records(name)]

    emitting = threading.Thread(target=emit_each_stream_in_turn, daemon=True)
    emitting.start()
    emitting.join(timeout=20)
    assert not emitting.is_alive(), "the reads are stuck"
    assert got == {name: [r["id"] for r in fetch.records] for name, fetch in lists.items()}
    assert reads.budget.held == 0
