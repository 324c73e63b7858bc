"""One writer at a time per pair of systems: the lock a target holds from its start to its
end, so two runs for the same pair (an orchestrator's overlapping schedules, a retry started
while a run hangs, a second runner on another machine) never interleave their writes.

It lives where the link store lives, so everyone who shares the store shares the lock: a
session-level PostgreSQL advisory lock keyed by the pair (tenants sharing one database lock
apart), or an exclusive `flock` on a file beside a SQLite store. The operating system or the
database lets go when the process ends, however it ends: no stale lock outlives a killed run.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa
from singer_sdk import typing as th

if TYPE_CHECKING:
    from sync_common.links import LinkStore

#: Seconds a run waits for the lock by default: longer than most runs, shorter than a hang.
DEFAULT_WAIT = 600
#: The setting both targets declare.
RUN_LOCK_WAIT = th.Property(
    "run_lock_wait",
    th.IntegerType,
    default=DEFAULT_WAIT,
    description="Seconds to wait for another run of the same pair of systems to finish (it "
    "holds the link store's run lock) before stopping with a message naming that run. 0: "
    "stop at once.",
)
#: Seconds between two tries while another run holds the lock.
POLL_SECONDS = 0.5
#: First key of the two-int advisory lock: this product's lock space in a shared database.
_ADVISORY_SPACE = 0x5C11


class RunLockHeld(Exception):  # noqa: N818 (reads as what happened)
    """Another run holds the lock for longer than this run was allowed to wait."""


def holder_description(plugin: str, run_id: str) -> str:
    """Who holds the lock, as the waiting run's message names it (never a secret)."""
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{plugin} run {run_id} (pid {os.getpid()} on {socket.gethostname()}, since {started})"


@dataclass
class _Hold:
    """A lock this process holds: the open file or database session that holds it, and how
    many RunLocks of this process share it."""

    file: IO[str] | None = None
    connection: sa.Connection | None = None
    count: int = 1


#: The locks this process holds, by what they lock. A second target in one process (the
#: SDK's in-process tests) is part of the same run, not another one: it shares the hold.
_HELD: dict[tuple[str, ...], _Hold] = {}


class RunLock:
    """The run lock of one link store (`url`, `engine`) for the pair with key `pair_key`."""

    def __init__(self, engine: sa.Engine, url: sa.URL, pair_key: str) -> None:
        self._engine, self._url, self._pair_key = engine, url, pair_key
        self._holding = False

    @property
    def _on_postgresql(self) -> bool:
        return self._url.get_backend_name() == "postgresql"

    @property
    def _in_memory(self) -> bool:
        return not self._on_postgresql and self._url.database in (None, "", ":memory:")

    @property
    def _key(self) -> tuple[str, ...]:
        if self._on_postgresql:
            return ("postgresql", self._url.render_as_string(), self._pair_key)
        return ("sqlite", os.path.realpath(self._file_path()))

    def acquire(
        self, holder: str, wait_seconds: float, on_wait: Callable[[str], None] | None = None
    ) -> float:
        """Take the lock, waiting up to `wait_seconds` while another run holds it (`on_wait`
        is told who, once). Returns the seconds waited; raises RunLockHeld naming the holder."""
        if self._holding:
            return 0.0
        if self._url.get_backend_name() == "sqlite" and self._url.database in (
            None,
            "",
            ":memory:",
        ):
            self._holding = True  # a store in memory is this process's alone
            return 0.0
        if (shared := _HELD.get(self._key)) is not None:
            shared.count += 1
            self._holding = True
            return 0.0
        started = time.monotonic()
        told = False
        while (hold := self._try(holder)) is None:
            waited = time.monotonic() - started
            current = self.holder() or "another run (it did not say which)"
            if waited >= wait_seconds:
                raise RunLockHeld(
                    f"the link store {self._url.render_as_string(hide_password=True)} is in use "
                    f"by {current}; waited {waited:.0f} s (run_lock_wait = {wait_seconds:g}). "
                    "Let that run finish, or stop it; a run that was killed lets go at once."
                )
            if not told and on_wait is not None:
                on_wait(current)
                told = True
            time.sleep(min(POLL_SECONDS, max(wait_seconds - waited, 0.01)))
        _HELD[self._key] = hold
        self._holding = True
        return time.monotonic() - started

    def _try(self, holder: str) -> _Hold | None:
        if self._on_postgresql:
            return self._try_advisory(holder)
        return self._try_file(holder)

    def _try_file(self, holder: str) -> _Hold | None:
        path = self._file_path()
        handle = open(path, "a+")  # noqa: SIM115 (kept open while the lock is held)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        os.chmod(path, 0o600)
        handle.seek(0)
        handle.truncate()
        handle.write(holder)
        handle.flush()
        return _Hold(file=handle)

    def _try_advisory(self, holder: str) -> _Hold | None:
        connection = self._engine.connect()
        # the waiting run reads the holder from pg_stat_activity (63 characters at most)
        connection.execute(sa.text("SELECT set_config('application_name', :name, false)"),
                           {"name": holder[:63]})  # fmt: skip
        got = connection.execute(
            sa.text("SELECT pg_try_advisory_lock(:space, :key)"),
            {"space": _ADVISORY_SPACE, "key": self._advisory_key()},
        ).scalar()
        connection.commit()  # a session lock outlives the transaction; the session is kept
        if got:
            return _Hold(connection=connection)
        connection.close()
        return None

    def holder(self) -> str | None:
        """Who holds the lock now, if anyone says."""
        if self._on_postgresql:
            query = sa.text(
                "SELECT a.application_name, a.pid FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :space "
                "AND l.objid = :key AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            key = self._advisory_key() & 0xFFFFFFFF  # pg_locks shows the key as an oid
            with self._engine.connect() as db:
                row = db.execute(query, {"space": _ADVISORY_SPACE, "key": key}).first()
            if row is None:
                return None
            return f"{row.application_name} (database session of pid {row.pid})"
        try:
            with open(self._file_path()) as handle:
                return handle.read().strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if not self._holding:
            return
        self._holding = False
        hold = None if self._in_memory else _HELD.get(self._key)
        if hold is None:
            return
        hold.count -= 1
        if hold.count:
            return
        del _HELD[self._key]
        if hold.connection is not None:
            hold.connection.execute(
                sa.text("SELECT pg_advisory_unlock(:space, :key)"),
                {"space": _ADVISORY_SPACE, "key": self._advisory_key()},
            )
            hold.connection.close()
        if hold.file is not None:
            hold.file.close()  # closing the only descriptor lets go of the flock

    def _file_path(self) -> str:
        return f"{self._url.database}.run-lock"

    def _advisory_key(self) -> int:
        """The pair as a signed 32-bit int: the second key of pg_try_advisory_lock."""
        value = int.from_bytes(hashlib.sha256(self._pair_key.encode()).digest()[:4], "big")
        return value - (1 << 32) if value >= 1 << 31 else value


#: How a target's log says it waits for another run (tests/test_tenants.py looks for it).
WAITING = "it holds the link store's run lock"


def hold_for_run(store: LinkStore, plugin: str, wait: int | None, logger: Any) -> float:
    """Take the run lock of `store` for a target's run, before its first write; the seconds
    waited. When another run holds it past `wait` seconds (the run_lock_wait setting) this
    run stops (exit 1) with that run's name."""
    wait_seconds = DEFAULT_WAIT if wait is None else wait
    try:
        return store.run_lock().acquire(
            holder_description(plugin, store.run_id),
            wait_seconds,
            on_wait=lambda who: logger.warning(
                "Waiting up to %g s for %s to finish: %s", wait_seconds, who, WAITING
            ),
        )
    except RunLockHeld as exc:
        logger.error("Stopped before any write: %s", exc)
        raise SystemExit(1) from None
