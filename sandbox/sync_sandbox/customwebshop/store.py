"""The webshop's records in SQLite: one JSON document per record, a strictly increasing
`updated_at` over all writes (so `(updated_at, id)` orders every change), idempotency keys."""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
from collections.abc import Iterator

from sync_sandbox.database import IdempotencyLog, connect

RESOURCES = ("customers", "products", "orders")
_TICK = datetime.timedelta(microseconds=1)
#: Fields looked up by value (uniqueness checks, list filters): indexed.
LOOKUP_FIELDS = ("email", "sku", "number", "customer_id")


def _json(field: str) -> str:
    """`json_extract(data, '$.field')` written out, so SQLite can use the index on it."""
    if not field.isidentifier():
        raise ValueError(f"not a field name: {field!r}")
    return f"json_extract(data, '$.{field}')"


def format_timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with microseconds: fixed width, so text order is time order."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime.datetime:
    """Any RFC 3339 instant (`Z` or an offset); raises ValueError otherwise."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(datetime.UTC)


class Store:
    def __init__(self, path: str) -> None:
        self.lock = threading.RLock()
        self._db = connect(path)
        self.idempotency = IdempotencyLog(self._db, window_seconds=24 * 3600)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS records (resource TEXT NOT NULL, id INTEGER NOT NULL,
                updated_at TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (resource, id));
            CREATE INDEX IF NOT EXISTS records_by_change ON records (resource, updated_at, id);
            """
        )
        for field in LOOKUP_FIELDS:  # without these, a uniqueness check scans every record
            index = f"records_by_{field} ON records (resource, {_json(field)})"
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {index}")
        last = self._db.execute("SELECT max(updated_at) FROM records").fetchone()[0]
        self._last = parse_timestamp(last) if last else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Many writes in one commit (the generator); also holds the lock."""
        with self.lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def stamp(self, at: datetime.datetime | None = None) -> str:
        """The next `updated_at`: `at` (default now), but always after the previous one."""
        moment = at or datetime.datetime.now(datetime.UTC)
        if self._last is not None and moment <= self._last:
            moment = self._last + _TICK
        self._last = moment
        return format_timestamp(moment)

    def count(self, resource: str) -> int:
        return self._db.execute(
            "SELECT count(*) FROM records WHERE resource = ?", (resource,)
        ).fetchone()[0]

    def get(self, resource: str, id_: int) -> dict | None:
        row = self._db.execute(
            "SELECT data FROM records WHERE resource = ? AND id = ?", (resource, id_)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def find(self, resource: str, field: str, value: object) -> list[dict]:
        """Live and deleted records whose `field` equals `value`."""
        rows = self._db.execute(
            f"SELECT data FROM records WHERE resource = ? AND {_json(field)} = ?",
            (resource, value),
        )
        return [json.loads(data) for (data,) in rows]

    def next_id(self, resource: str) -> int:
        row = self._db.execute("SELECT max(id) FROM records WHERE resource = ?", (resource,))
        return (row.fetchone()[0] or 0) + 1

    def put(self, resource: str, record: dict) -> dict:
        self._db.execute(
            "INSERT INTO records (resource, id, updated_at, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (resource, id) DO UPDATE SET updated_at = excluded.updated_at,"
            " data = excluded.data",
            (resource, record["id"], record["updated_at"], json.dumps(record)),
        )
        return record

    def page(
        self,
        resource: str,
        since: str | None,
        after: tuple[str, int] | None,
        limit: int,
        filters: dict[str, object],
    ) -> tuple[list[dict], bool]:
        """Up to `limit` records in (updated_at, id) order, and whether more follow."""
        where: list[str] = ["resource = ?"]
        args: list[object] = [resource]
        if since:
            where.append("updated_at >= ?")
            args.append(since)
        if after:
            where.append("(updated_at, id) > (?, ?)")
            args += list(after)
        for field, value in filters.items():
            where.append(f"{_json(field)} = ?")
            args.append(value)
        rows = self._db.execute(
            f"SELECT data FROM records WHERE {' AND '.join(where)} ORDER BY updated_at, id LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return [json.loads(data) for (data,) in rows[:limit]], len(rows) > limit
