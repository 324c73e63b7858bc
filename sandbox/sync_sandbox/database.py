"""What both sandboxes keep in SQLite alike: the connection, and the stored answers per
idempotency key (both APIs replay the first answer to a repeated write)."""

from __future__ import annotations

import sqlite3
import time


def connect(path: str) -> sqlite3.Connection:
    """Autocommit, shared by the server's threads (each sandbox serialises access itself)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class IdempotencyLog:
    def __init__(self, db: sqlite3.Connection, window_seconds: float) -> None:
        self._db = db
        self.window_seconds = window_seconds
        db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY,"
            " fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL,"
            " created_at REAL NOT NULL)"
        )

    def replay(self, key: str) -> tuple[str, int, str] | None:
        """(request fingerprint, status, body) stored for `key` within the window, else None."""
        row = self._db.execute(
            "SELECT fingerprint, status, body, created_at FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        if row is None or row[3] < time.time() - self.window_seconds:
            return None
        return row[0], row[1], row[2]

    def remember(self, key: str, fingerprint: str, status: int, body: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)",
            (key, fingerprint, status, body, time.time()),
        )

    def clear(self) -> None:
        self._db.execute("DELETE FROM idempotency")
