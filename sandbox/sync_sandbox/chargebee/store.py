"""The emulator's state: every object in memory (fast lists and filters), written through
to SQLite so a restarted emulator keeps its data. One lock serialises all access, which also
makes concurrent requests with one idempotency key safe."""

from __future__ import annotations

import copy
import json
import threading
import time

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

    def save(self, kind: str, obj: dict, *, touch: bool = True) -> dict:
        """Store `obj`; with `touch`, stamp a new `resource_version` (ms, strictly increasing)
        and `updated_at` first, as every Chargebee write does."""
        if touch:
            now = time.time()
            self._last_version = max(int(now * 1000), self._last_version + 1)
            obj["resource_version"] = self._last_version
            obj["updated_at"] = int(now)
        self._objects.setdefault(kind, {})[obj["id"]] = obj
        self._db.execute(
            "INSERT INTO objects (kind, id, data) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
            (kind, obj["id"], json.dumps(obj)),
        )
        return copy.deepcopy(obj)

    def rename(self, kind: str, old_id: str, obj: dict) -> None:
        """Move the object stored under `old_id` to `obj["id"]` (a transfer's deprecated copy)."""
        self._objects[kind].pop(old_id, None)
        self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, old_id))
        self.save(kind, obj, touch=False)

    def clear(self) -> None:
        """Forget every object and idempotency key (`POST /_sandbox/reset`). Versions keep
        rising, so a client's stored `resource_version` never looks current again."""
        with self.lock:
            self._objects.clear()
            self._db.execute("DELETE FROM objects")
            self.idempotency.clear()

    def now(self) -> int:
        return int(time.time())
