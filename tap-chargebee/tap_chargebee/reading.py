"""Reading one Chargebee list with several pages in flight, records still in ascending
`updated_at` order.

A list sorted by `updated_at` is walked one page after another through `next_offset`: one
round trip per 100 records, whatever the request budget allows. So after the first page
(which also tells where the data starts) and one probe for the newest record, the rest of the
range is cut into slices of whole seconds, and up to `workers` slices are walked at once, each
through its own `next_offset`. Records are yielded slice after slice, so the order is the
sequential read's order and a bookmark taken after any record is safe to resume from: every
record updated before it has been yielded.

- The first slice continues the first request (same params, its offset) and stops at the next
  slice's first second: it keeps what the first request has that a `updated_at` filter would
  drop (customers untouched since 2016 have no `updated_at`).
- The last slice has no upper bound, so a record updated during the read (its `updated_at`
  moves to now) is still read in this run, as the sequential read would.
- Slices are started in order and each buffers at most `BUFFERED_PAGES` pages, so memory stays
  bounded and the slice being yielded is always being read.
- Chargebee counts seconds: records of one second cannot be split, and a list whose records
  share a few seconds is read about sequentially.
"""

from __future__ import annotations

import queue
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

#: Slices per worker: more slices than workers evens out slices that hold more records.
SLICES_PER_WORKER = 4
#: Pages a slice may read ahead of the one being yielded.
BUFFERED_PAGES = 8


@dataclass(frozen=True)
class Page:
    records: list[dict]
    next_offset: str | None


#: One list request with these query params (retried and throttled by the caller).
FetchPage = t.Callable[[dict[str, t.Any]], Page]


@dataclass(frozen=True)
class Slice:
    """Records with `first <= updated_at <= last` seconds (`last` None: no upper bound)."""

    first: int
    last: int | None


def read_sorted_list(fetch: FetchPage, params: dict[str, t.Any], workers: int) -> t.Iterator[dict]:
    """Every record of the list `params` asks for (sorted by `sort_by[asc]=updated_at`, with
    `updated_at[after]` or no filter), in the order one sequential walk would give them."""
    page = fetch(params)
    yield from page.records
    # Records without updated_at sort first; the slicing starts after them.
    while page.next_offset and (workers < 2 or page.records[-1].get("updated_at") is None):
        page = fetch({**params, "offset": page.next_offset})
        yield from page.records
    if not page.next_offset:
        return
    start = int(page.records[-1]["updated_at"])
    newest = _newest(fetch, params)
    slices = cut(start, newest, workers * SLICES_PER_WORKER)
    first = _Walk(fetch, {**params, "offset": page.next_offset}, stop_at=_next_first(slices, 0))
    walks = [first] + [_Walk(fetch, slice_params(params, s)) for s in slices[1:]]
    yield from _run(walks, workers)


def cut(start: int, newest: int, count: int) -> list[Slice]:
    """`[start, newest]` in up to `count` slices of whole seconds, the last open-ended."""
    count = max(1, min(count, newest - start + 1))
    bounds = [start + (newest - start + 1) * i // count for i in range(count + 1)]
    slices = [Slice(bounds[i], bounds[i + 1] - 1) for i in range(count)]
    slices[-1] = Slice(slices[-1].first, None)
    return slices


def slice_params(params: dict[str, t.Any], part: Slice) -> dict[str, t.Any]:
    """The list's params narrowed to one slice (`between` is inclusive; `after` exclusive)."""
    narrowed = {key: value for key, value in params.items() if not key.startswith("updated_at[")}
    if part.last is None:
        narrowed["updated_at[after]"] = part.first - 1
    else:
        narrowed["updated_at[between]"] = f"[{part.first},{part.last}]"
    return narrowed


def _newest(fetch: FetchPage, params: dict[str, t.Any]) -> int:
    """The newest record's updated_at: one record, sorted the other way."""
    probe = {key: value for key, value in params.items() if not key.startswith("sort_by")}
    page = fetch({**probe, "limit": 1, "sort_by[desc]": "updated_at"})
    return int(page.records[0]["updated_at"]) if page.records else 0


def _next_first(slices: list[Slice], index: int) -> int | None:
    return slices[index + 1].first if index + 1 < len(slices) else None


class _Walk:
    """One slice's pages through `next_offset`, into a bounded queue of pages; an error is
    queued too, for the reader to raise. `stop_at`: drop records from that second on and stop
    (the first slice, whose request has no upper bound)."""

    _DONE = object()

    def __init__(self, fetch: FetchPage, params: dict[str, t.Any], stop_at: int | None = None):
        self.fetch = fetch
        self.params = params
        self.stop_at = stop_at
        self.pages: queue.Queue[t.Any] = queue.Queue(BUFFERED_PAGES)

    def run(self, cancelled: threading.Event) -> None:
        params = self.params
        try:
            while not cancelled.is_set():
                page = self.fetch(params)
                records = page.records
                if self.stop_at is not None:
                    kept = [r for r in records if int(r.get("updated_at") or 0) < self.stop_at]
                    if len(kept) < len(records):
                        records, page = kept, Page(kept, None)
                self._put(records, cancelled)
                if not page.next_offset:
                    break
                params = {**self.params, "offset": page.next_offset}
        except Exception as exc:  # handed to the reading thread, raised there
            self._put(exc, cancelled)
            return
        self._put(self._DONE, cancelled)

    def _put(self, item: t.Any, cancelled: threading.Event) -> None:
        while not cancelled.is_set():
            try:
                self.pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def records(self) -> t.Iterator[dict]:
        while (item := self.pages.get()) is not self._DONE:
            if isinstance(item, Exception):
                raise item
            yield from item


def _run(walks: list[_Walk], workers: int) -> t.Iterator[dict]:
    cancelled = threading.Event()
    # Started in order: the walk being yielded is always running or done, never queued
    # behind later ones that wait for room in their buffers.
    pool = ThreadPoolExecutor(workers, thread_name_prefix="chargebee-read")
    try:
        for walk in walks:
            pool.submit(walk.run, cancelled)
        for walk in walks:
            yield from walk.records()
    finally:
        cancelled.set()  # an error, or the consumer stopped early: the others stop too
        pool.shutdown(wait=True, cancel_futures=True)
