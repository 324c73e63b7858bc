"""Dry run: the sinks run their real code against a stand-in for the API client that reads
for real and writes nothing (the link store's is sync_common.planning's). A planned PATCH
checks `If-Match` against the record as it is now, so a conflict shows up in the plan as it
would in the run; what each write would change is kept as {field: [old, new]} for the
plan."""

from __future__ import annotations

from typing import Any

from sync_common.http import ApiClient, ApiError
from sync_common.merge import same


class PlanningClient:
    """Reads go to the webshop; writes are answered here, as the webshop would answer them."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._changes: dict[str, list[Any]] = {}
        self._created = 0

    def get(self, path: str, params: Any = None, **options: Any) -> Any:
        return self.api.get(path, params, **options)

    def patch(self, path: str, *, json: dict, headers: dict | None = None, **_: Any) -> dict:
        current = self.api.get(path)
        expected = (headers or {}).get("If-Match")
        if expected and expected.strip('"') != str(current["version"]):
            raise ApiError(
                412, "version_mismatch", "changed since the sync last saw it", method="PATCH"
            )
        self._changes.update(field_changes(current, json))
        return {**current, **json, "version": current["version"] + 1}

    def post(self, path: str, *, json: dict, **_: Any) -> dict:
        self._created += 1
        return {**json, "id": f"new-{self._created}", "version": 1}

    def delete(self, path: str, **_: Any) -> dict:
        current = self.api.get(path)
        self._changes["deleted_at"] = [current.get("deleted_at"), "(now)"]
        return {**current, "version": current["version"] + 1}

    def take_changes(self) -> dict[str, list[Any]]:
        """The fields the current record's writes would change (and start afresh)."""
        changes, self._changes = self._changes, {}
        return changes

    def calls(self) -> dict[str, int]:
        return self.api.calls()

    def close(self) -> None:
        self.api.close()


def field_changes(current: dict, fields: dict) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields whose value would change; an object field (an
    address) is compared member by member (`billing_address.city`)."""
    changes: dict[str, list[Any]] = {}
    for name, new in fields.items():
        old = current.get(name)
        if isinstance(new, dict) or isinstance(old, dict):
            for member in sorted(set(new or {}) | set(old or {})):
                a, b = (old or {}).get(member), (new or {}).get(member)
                if not same(a, b):
                    changes[f"{name}.{member}"] = [a, b]
        elif not same(old, new):
            changes[name] = [old, new]
    return changes
