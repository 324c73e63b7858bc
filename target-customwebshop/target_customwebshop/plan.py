"""Dry run: the sinks run their real code against stand-ins for the API client and the link
store that read for real and write nothing. A planned PATCH checks `If-Match` against the
record as it is now, so a conflict shows up in the plan as it would in the run; what each
write would change is kept as {field: [old, new]} for the plan."""

from __future__ import annotations

import dataclasses
from typing import Any

from sync_common.http import ApiClient, ApiError
from sync_common.links import Link, LinkStore
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


class PlanningLinks:
    """The link store, read for real; links made during the plan are kept in memory (later
    records of the run see them, as they would), dead letters are neither kept nor
    resolved."""

    def __init__(self, links: LinkStore) -> None:
        self.links = links
        self._made: dict[tuple[str, str], Link] = {}

    def get_by_webshop(self, resource: str, webshop_id: str) -> Link | None:
        made = self._made.get((resource, str(webshop_id)))
        return made or self.links.get_by_webshop(resource, webshop_id)

    def get_by_chargebee(self, resource: str, chargebee_id: str) -> Link | None:
        for link in self._made.values():
            if link.resource == resource and link.chargebee_id == str(chargebee_id):
                return link
        return self.links.get_by_chargebee(resource, chargebee_id)

    def save(self, resource: str, webshop_id: str, chargebee_id: str, **state: Any) -> Link:
        old = self.get_by_webshop(resource, webshop_id)
        link = old or Link(resource, str(webshop_id), str(chargebee_id))
        given = {name: value for name, value in state.items() if value is not None}
        link = dataclasses.replace(link, chargebee_id=str(chargebee_id), **given)
        self._made[(resource, str(webshop_id))] = link
        return link

    def add_dead_letter(self, *args: Any, **kwargs: Any) -> None:
        pass

    def resolve_dead_letter(self, *args: Any) -> bool:
        return False

    def failed_attempts(self, *args: Any) -> int:
        return self.links.failed_attempts(*args)

    def open_dead_letters(self, *args: Any, **kwargs: Any) -> list:
        return self.links.open_dead_letters(*args, **kwargs)

    def count(self, resource: str) -> int:
        return self.links.count(resource)

    def close(self) -> None:
        self.links.close()


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
