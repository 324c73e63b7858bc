"""The emulator's state: every object in memory (fast lists and filters), written through
to SQLite so a restarted emulator keeps its data. One lock serialises all access, which also
makes concurrent requests with one idempotency key safe."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

from sync_sandbox.database import IdempotencyLog, connect


class Store:
    def __init__(self, path: str) -> None:
        self.lock = threading.RLock()
        self._db = connect(path)
        self.idempotency = IdempotencyLog(self._db, window_seconds=30 * 60)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, id TEXT NOT NULL,"
            " data TEXT NOT NULL, PRIMARY KEY (kind, id))"
        )
        self._objects: dict[str, dict[str, dict]] = {}
        # (kind, field) -> value -> ids, and id -> value: made by the first `where` on a field
        self._indexes: dict[tuple[str, str], tuple[dict[Any, dict[str, None]], dict[str, Any]]]
        self._indexes = {}
        # rowid order is creation order: upserts keep a row's rowid
        for kind, id_, data in self._db.execute(
            "SELECT kind, id, data FROM objects ORDER BY rowid"
        ):
            self._objects.setdefault(kind, {})[id_] = json.loads(data)
        self._last_version = max(
            (o.get("resource_version", 0) for k in self._objects.values() for o in k.values()),
            default=0,
        )

    # ---------------------------------------------------------------- objects

    def get(self, kind: str, id_: str) -> dict | None:
        found = self._objects.get(kind, {}).get(id_)
        return copy.deepcopy(found) if found is not None else None

    def all(self, kind: str) -> list[dict]:
        """Every object of a kind in creation order (not copies: callers only read)."""
        return list(self._objects.get(kind, {}).values())

    def count(self, kind: str) -> int:
        return len(self._objects.get(kind, {}))

    def where(self, kind: str, field: str, value: Any) -> list[dict]:
        """The objects of a kind whose `field` is `value` (not copies: callers only read), in
        the order they came to have it. Indexed, so that a write that looks up related
        objects (an invoice's orders, a name in use) does not scan every object: at 100,000
        records the scans made the emulator, not the plugins, what limited a first sync."""
        if (kind, field) not in self._indexes:
            self._indexes[(kind, field)] = ({}, {})
            for obj in self._objects.get(kind, {}).values():
                self._index(kind, field, obj)
        by_value, _ = self._indexes[(kind, field)]
        objects = self._objects.get(kind, {})
        return [objects[id_] for id_ in by_value.get(value, ())]

    def _index(self, kind: str, field: str, obj: dict) -> None:
        by_value, value_of = self._indexes[(kind, field)]
        id_, value = obj["id"], obj.get(field)
        if id_ in value_of:
            if value_of[id_] == value:
                return
            self._unindex(kind, field, id_)
        by_value.setdefault(value, {})[id_] = None
        value_of[id_] = value

    def _unindex(self, kind: str, field: str, id_: str) -> None:
        by_value, value_of = self._indexes[(kind, field)]
        if id_ not in value_of:
            return
        value = value_of.pop(id_)
        ids = by_value[value]
        del ids[id_]
        if not ids:
            del by_value[value]

    def save(self, kind: str, obj: dict, *, touch: bool = True) -> dict:
        """Store `obj`; with `touch`, stamp a new `resource_version` (ms, strictly increasing)
        and `updated_at` first, as every Chargebee write does."""
        if touch:
            now = time.time()
            self._last_version = max(int(now * 1000), self._last_version + 1)
            obj["resource_version"] = self._last_version
            obj["updated_at"] = int(now)
        self._objects.setdefault(kind, {})[obj["id"]] = obj
        for indexed_kind, field in self._indexes:
            if indexed_kind == kind:
                self._index(kind, field, obj)
        self._db.execute(
            "INSERT INTO objects (kind, id, data) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
            (kind, obj["id"], json.dumps(obj)),
        )
        return copy.deepcopy(obj)

    def rename(self, kind: str, old_id: str, obj: dict) -> None:
        """Move the object stored under `old_id` to `obj["id"]` (a transfer's deprecated copy)."""
        self._objects[kind].pop(old_id, None)
        for indexed_kind, field in self._indexes:
            if indexed_kind == kind:
                self._unindex(kind, field, old_id)
        self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, old_id))
        self.save(kind, obj, touch=False)

    def clear(self) -> None:
        """Forget every object and idempotency key (`POST /_sandbox/reset`). Versions keep
        rising, so a client's stored `resource_version` never looks current again."""
        with self.lock:
            self._objects.clear()
            self._indexes.clear()
            self._db.execute("DELETE FROM objects")
            self.idempotency.clear()

    def now(self) -> int:
        return int(time.time())
