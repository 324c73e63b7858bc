"""How the benchmark measures: one child process at a time, its CPU and peak memory from the
kernel's accounting of that child (wait4), and request counts sampled from a sandbox."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from resource import RUSAGE_SELF, getrusage
from typing import IO


@dataclass
class Run:
    """One finished process: wall seconds, CPU seconds (user + system) and peak resident
    memory in bytes. For `meltano run` these include the plugins it ran (the kernel adds a
    child's waited-for children to its usage)."""

    wall: float
    cpu: float
    peak_rss: int


def run(
    command: list[str],
    *,
    env: dict,
    log: Path,
    stdin: Path | None = None,
    stdout: Path | None = None,
    cwd: Path | None = None,
    feed: Callable[[IO[bytes]], None] | None = None,
) -> Run:
    """Run `command` to the end; stdin from `stdin` or written by `feed` in a thread, stdout
    to `stdout` (or /dev/null), stderr to `log`."""
    with (
        open(stdin or os.devnull, "rb") as source,
        open(stdout or os.devnull, "wb") as sink,
        open(log, "ab") as errors,
    ):
        errors.write(f"\n$ {' '.join(command)}\n".encode())
        errors.flush()
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if feed else source,
            stdout=sink,
            stderr=errors,
            env=env,
            cwd=cwd,
        )
        if feed:
            threading.Thread(target=_feed, args=(feed, process.stdin), daemon=True).start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{command[0]} exited with {process.returncode}; log tail:\n{tail}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def _feed(feed: Callable[[IO[bytes]], None], pipe: IO[bytes]) -> None:
    try:
        feed(pipe)
    finally:
        with contextlib.suppress(BrokenPipeError):
            pipe.close()


def count_records(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(1 for line in lines if line.startswith(b'{"type":"RECORD"'))


def head(source: Path, target: Path, records: int) -> None:
    """The first `records` RECORD lines of a Singer file, with every other line before them."""
    seen = 0
    with open(source, "rb") as lines, open(target, "wb") as out:
        for line in lines:
            if line.startswith(b'{"type":"RECORD"'):
                seen += 1
                if seen > records:
                    break
            out.write(line)


def schema_only(source: Path, target: Path) -> None:
    """The Singer file without its RECORD lines: a run on it costs what any run costs."""
    head(source, target, 0)


class RequestSampler:
    """Samples a sandbox's request total every `every` seconds in a thread: a time series
    from which the requests of any 60 s window are read."""

    def __init__(self, sandbox, every: float = 0.5) -> None:
        self.sandbox = sandbox
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RequestSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.samples.append((time.monotonic(), self.sandbox.stats()["total"]))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def busy_seconds(self) -> float:
        """From the sample before the first request to the sample of the last one."""
        busy = [t for t, n in self.samples if n > self.samples[0][1]]
        return busy[-1] - busy[0] + self.every if busy else 0.0

    def windows(self, seconds: float = 60.0) -> list[int]:
        """Requests in each `seconds` window that starts at a sample after the first request
        and ends before the last one."""
        busy = [(t, n) for t, n in self.samples if n > self.samples[0][1]]
        if not busy:
            return []
        first, last = busy[0][0] - self.every, busy[-1][0]
        counts = []
        for start, total in self.samples:
            if start < first or start + seconds > last:
                continue
            end = next(n for t, n in self.samples if t >= start + seconds)
            counts.append(end - total)
        return counts


def status_count(stats: dict, status: str) -> int:
    """Answers with `status` in a sandbox's `/_sandbox/stats`, all operations together."""
    return sum(by_status.get(status, 0) for by_status in stats["operations"].values())


def cpu_per_call(call: Callable[[], object], calls: int = 500) -> float:
    """CPU seconds this process spends per `call()`, over `calls` of them."""
    before = getrusage(RUSAGE_SELF)
    for _ in range(calls):
        call()
    after = getrusage(RUSAGE_SELF)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / calls
