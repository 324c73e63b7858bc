"""Reading Chargebee lists with several pages in flight, records still in ascending
`updated_at` order.

A list sorted by `updated_at` is walked one page after another through `next_offset`: one
round trip per 100 records, whatever the request budget allows. So after the first page
(which also tells where the data starts) and one probe for the newest record, the rest of the
range is cut into slices of whole seconds, and up to `workers` slices are walked at once, each
through its own `next_offset`. Pages are yielded slice after slice, so the order is the
sequential read's order and a bookmark taken after any record is safe to resume from: every
record updated before it has been yielded.

- The first slice continues the first request (same params, its offset) and stops at the next
  slice's first second: it keeps what the first request has that a `updated_at` filter would
  drop (customers untouched since 2016 have no `updated_at`).
- The last slice has no upper bound, so a record updated during the read (its `updated_at`
  moves to now) is still read in this run, as the sequential read would.
- The probe and the first slice's next page are read at once.
- At most `workers` slices past the one being yielded are started, each buffering at most
  `BUFFERED_PAGES` pages, and all buffers of a run together hold at most the `PageBudget`'s
  bytes (a page's share is taken before the request, as the mean page so far, and set to its
  size when it comes): memory stays flat whatever the lists' lengths and their pages' sizes.
  A stream read ahead of its turn may take half the budget (`Lane`), and the buffer the
  consumer waits on is exempt, so the stream being emitted is never held back by pages read
  ahead for later ones.
- Chargebee counts seconds: records of one second cannot be split, so a list whose records
  share a few seconds is read about sequentially. `StreamReads` therefore also reads the
  streams at once: the SDK emits them one after another, and each is read ahead meanwhile.
"""

from __future__ import annotations

import functools
import queue
import threading
import typing as t
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

#: Slices per worker: more slices than workers evens out slices that hold more records.
SLICES_PER_WORKER = 4
#: Pages a slice may read ahead of the one being yielded.
BUFFERED_PAGES = 8
#: Bytes all the run's buffers may hold, per list request in flight: a page waits as the
#: response's bytes, which vary with the records (bench/reads.py's pages are far smaller
#: than bench/volume.py's at 100,000 records, where a budget of 64 pages let tap-chargebee's
#: memory grow 13.4 MB; in bytes, 5.6 MB). bench/reads.py reads as fast as with 8 pages.
BYTES_AHEAD_PER_WORKER = 512 * 1024
#: A page's share of the budget before any page has come (then: the mean page so far).
FIRST_PAGE_ESTIMATE = 64 * 1024


class Page:
    """One list response. Its records are parsed when first asked for: a page waiting in a
    buffer is the response's bytes, a third of the memory of the records parsed."""

    def __init__(
        self,
        records: list[dict] | t.Callable[[], list[dict]],
        next_offset: str | None,
        size: int,
    ) -> None:
        self._records = records
        self.next_offset = next_offset
        self.size = size  # bytes it holds while it waits: its share of the PageBudget (required:
        # a page of no size would let the reads run ahead without bound)

    @property
    def records(self) -> list[dict]:
        if callable(self._records):  # one thread at a time has a page: no lock
            self._records = self._records()
        return self._records


#: One list request with these query params (retried and throttled by the caller).
FetchPage = t.Callable[[dict[str, t.Any]], Page]
#: A list's pages, in order.
Pages = t.Generator[Page, None, None]


@dataclass(frozen=True)
class Slice:
    """Records with `first <= updated_at <= last` seconds (`last` None: no upper bound)."""

    first: int
    last: int | None


def read_sorted_list(
    fetch: FetchPage,
    params: dict[str, t.Any],
    workers: int,
    lane: Lane,
    cancelled: threading.Event | None = None,
) -> Pages:
    """Every record of the list `params` asks for (sorted by `sort_by[asc]=updated_at`, with
    `updated_at[after]` or no filter), in pages, in the order one sequential walk gives them;
    the pages read ahead count against the stream's `lane` of the run's budget. Setting
    `cancelled` stops the slices' requests (so does closing the iterator)."""
    page = fetch(params)
    yield page
    # Records without updated_at sort first; the slicing starts after them.
    while page.next_offset and (workers < 2 or page.records[-1].get("updated_at") is None):
        page = fetch({**params, "offset": page.next_offset})
        yield page
    if not page.next_offset:
        return
    start = int(page.records[-1]["updated_at"])
    stop = threading.Event()  # set when this read ends, however it ends
    stops = (stop, cancelled) if cancelled else (stop,)
    pool = _Workers(workers)
    try:
        # The first slice's next page is read while the probe finds the newest record; its
        # records are kept once the cut says where the slice ends.
        slices: Future[list[Slice]] = Future()
        first = _Walk(fetch, {**params, "offset": page.next_offset}, _Buffer(stops, lane), slices)
        newest = pool.submit(functools.partial(_newest, fetch, params))
        pool.submit(first.run)
        try:
            slices.set_result(cut(start, newest.result(), workers * SLICES_PER_WORKER))
        except BaseException as exc:
            slices.set_exception(exc)
            raise
        walks = [first]
        walks += [
            _Walk(fetch, slice_params(params, s), _Buffer(stops, lane)) for s in slices.result()[1:]
        ]
        # Submitted in order, `workers` ahead of the one yielded: that one is always running
        # or done, never queued behind later ones waiting for room in their buffers.
        for walk in walks[1 : workers + 1]:
            pool.submit(walk.run)
        for index, walk in enumerate(walks):
            if index + workers + 1 < len(walks):
                pool.submit(walks[index + workers + 1].run)
            yield from walk.buffer.pages()
    finally:
        stop.set()  # an error, or the consumer stopped early: the others stop too
        pool.shutdown()


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


class _Workers:
    """`count` threads running the calls submitted, in order. Not concurrent.futures'
    executor: its threads are joined at exit, so a read abandoned when the tap stops on an
    error (its buffer full, nobody taking) would keep the tap from exiting; these are daemons,
    and every call they run ends soon once its read is stopped."""

    def __init__(self, count: int) -> None:
        self._calls: queue.SimpleQueue[tuple[t.Callable[[], t.Any], Future] | None]
        self._calls = queue.SimpleQueue()
        self._count = count
        for _ in range(count):
            threading.Thread(target=self._work, name="chargebee-read", daemon=True).start()

    def submit(self, call: t.Callable[[], t.Any]) -> Future:
        future: Future = Future()
        self._calls.put((call, future))
        return future

    def shutdown(self) -> None:
        for _ in range(self._count):
            self._calls.put(None)

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 (the submitter's to raise)
                future.set_exception(exc)


class PageBudget:
    """The bytes a run's buffers may hold together (`limit`), and the one lock and condition
    every buffer of the run waits on."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes of pages in buffers, and the shares taken for pages being read
        self.changed = threading.Condition()
        self._pages = 0  # pages come so far, and their bytes: the estimate of the next one
        self._bytes = 0

    def estimate(self) -> int:
        """The share a page being read takes: the mean page so far."""
        return self._bytes // self._pages if self._pages else FIRST_PAGE_ESTIMATE

    def came(self, size: int) -> None:
        self._pages += 1
        self._bytes += size


class Lane:
    """One stream's draw on the run's PageBudget: the stream being emitted may fill the
    budget, a stream read ahead of its turn half of it, so that the one being emitted always
    has room for its next slices' pages however far the others have read."""

    def __init__(self, budget: PageBudget) -> None:
        self.budget = budget
        self.emitting = False

    @property
    def limit(self) -> int:
        return self.budget.limit if self.emitting else self.budget.limit // 2

    def emit(self) -> None:
        with self.budget.changed:
            self.emitting = True
            self.budget.changed.notify_all()


class _Buffer:
    """Pages from a reading thread to the one yielding them: at most `BUFFERED_PAGES` here and
    the budget's limit in all buffers, unless the yielding thread waits on this one; the end,
    or the error that ended the reading, comes through too."""

    _END = object()

    def __init__(self, stops: tuple[threading.Event, ...], lane: Lane) -> None:
        self.stops = stops  # any of them set: nobody takes pages any more
        self.lane = lane
        self._items: deque[t.Any] = deque()
        self._slots = 0  # slots taken here, for pages in `_items` or being read
        self._shares: deque[int] = deque()  # the shares taken for the pages being read
        self._awaited = False  # the yielding thread waits on this buffer

    @property
    def stopped(self) -> bool:
        return any(stop.is_set() for stop in self.stops)

    @property
    def budget(self) -> PageBudget:
        return self.lane.budget

    def reserve(self) -> bool:
        """Wait for a slot for the next page (False: the reading was stopped, nobody would
        take it). Taken before the page is read, so no read page waits outside a buffer."""
        budget = self.budget
        with budget.changed:
            while not self.stopped:
                room_here = self._slots < BUFFERED_PAGES
                if self._awaited or (room_here and budget.held < self.lane.limit):
                    share = budget.estimate()
                    self._slots += 1
                    self._shares.append(share)
                    budget.held += share
                    return True
                budget.changed.wait(0.2)  # stops are events of their own: look again soon
            return False

    def release(self) -> None:
        """Give back a slot whose page will not come (the read failed or stopped)."""
        with self.budget.changed:
            self._give_back_slot(self._shares.pop())

    def _give_back_slot(self, size: int) -> None:  # under the budget's lock
        self._slots -= 1
        self.budget.held -= size
        self.budget.changed.notify_all()

    def put(self, item: Page | object) -> None:
        """A page into the slot reserved for it (its share becomes its size), or the end, or
        the reading's error."""
        budget = self.budget
        with budget.changed:
            if isinstance(item, Page):  # one reader per buffer: its pages come in order
                budget.held += item.size - self._shares.popleft()
                budget.came(item.size)
            self._items.append(item)
            budget.changed.notify_all()

    def put_waiting(self, page: Page) -> None:
        """A page read without a slot: wait for one (unless the reading was stopped)."""
        if self.reserve():
            self.put(page)

    def end(self, error: Exception | None = None) -> None:
        self.put(self._END if error is None else error)

    def pages(self) -> t.Iterator[Page]:
        budget = self.budget
        while True:
            with budget.changed:
                while not self._items:
                    if not self._awaited:  # once: a notification would wake the other waiters
                        self._awaited = True
                        budget.changed.notify_all()  # a reader waiting for a slot may take one
                    budget.changed.wait()
                self._awaited = False
                item = self._items.popleft()
                if isinstance(item, Page):
                    self._give_back_slot(item.size)
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item


class _Walk:
    """One slice's pages through `next_offset`, into a buffer. With `cut` (the first slice,
    whose request has no upper bound): drop the records from the next slice's first second
    on, and stop there."""

    def __init__(
        self,
        fetch: FetchPage,
        params: dict[str, t.Any],
        buffer: _Buffer,
        cut: Future[list[Slice]] | None = None,
    ) -> None:
        self.fetch = fetch
        self.params = params
        self.cut = cut
        self.buffer = buffer

    def run(self) -> None:
        params = self.params
        try:
            while self.buffer.reserve():
                try:
                    page = self.fetch(params)
                except BaseException:
                    self.buffer.release()
                    raise
                slices = self.cut.result() if self.cut else []
                if len(slices) > 1:  # only the first slice's pages are parsed here
                    stop_at = slices[1].first
                    kept = [r for r in page.records if int(r.get("updated_at") or 0) < stop_at]
                    if len(kept) < len(page.records):
                        page = Page(kept, None, page.size)
                self.buffer.put(page)
                if not page.next_offset:
                    break
                params = {**self.params, "offset": page.next_offset}
        except Exception as exc:  # handed to the yielding thread, raised there
            self.buffer.end(exc)
            return
        self.buffer.end()


class StreamReads:
    """The tap's list reads, one background thread per stream: every selected stream's read
    starts when the first stream is synced, so while the SDK emits one stream the next ones
    are read (each into a buffer, plus its slices'). All requests still go through the tap's
    one throttle."""

    def __init__(self, workers: int) -> None:
        #: shared by every buffer of the run's reads, the streams' and their slices'
        self.budget = PageBudget(BYTES_AHEAD_PER_WORKER * workers)
        self._reads: dict[str, _Buffer] = {}
        self._started: set[str] = set()  # a stream is read once per run
        self._lock = threading.Lock()

    def start(self, name: str, pages: t.Callable[[Lane, threading.Event], Pages]) -> None:
        """Start reading stream `name` in the background (once; later calls do nothing);
        `pages` is given the stream's lane of the page budget and the event that stops it."""
        with self._lock:
            if name in self._started:
                return
            self._started.add(name)
            buffer = self._reads[name] = _Buffer((threading.Event(),), Lane(self.budget))
        threading.Thread(target=_read_into, args=(pages, buffer), daemon=True).start()

    def records(self, name: str) -> t.Iterator[dict]:
        """The started read's records, in order; stops the read when the caller stops."""
        with self._lock:
            buffer = self._reads.pop(name)
        buffer.lane.emit()
        try:
            for page in buffer.pages():
                yield from page.records
        finally:
            buffer.stops[0].set()


def _read_into(pages: t.Callable[[Lane, threading.Event], Pages], buffer: _Buffer) -> None:
    generator = pages(buffer.lane, buffer.stops[0])
    try:
        for page in generator:
            if buffer.stopped:
                return
            buffer.put_waiting(page)
    except Exception as exc:  # handed to the yielding thread, raised there
        buffer.end(exc)
        return
    finally:
        generator.close()  # stops its slices' threads too
    buffer.end()
