"""Dry run, the part both targets share: a stand-in for the link store that reads for real
and keeps what the plan writes in memory. Each target's planning API stand-in (its client or
gateway) is its own; the target picks the pair once, and the rest of its code runs unchanged."""

from __future__ import annotations

import dataclasses
from typing import Any

from sync_common.links import DeadLetter, Link, LinkStore


class PlanningLinks:
    """The link store, read for real; links made during the plan are kept in memory (later
    records of the run see them, as they would), dead letters are neither kept nor
    resolved (`add_dead_letter` answers None: none was kept)."""

    def __init__(self, links: LinkStore) -> None:
        self.links = links
        self.run_id = links.run_id
        self._made: dict[tuple[str, str], Link] = {}  # by (resource, webshop id)
        self._by_chargebee: dict[tuple[str, str], Link] = {}
        self._by_deterministic: dict[tuple[str, str], Link] = {}

    def get_by_webshop(self, resource: str, webshop_id: str) -> Link | None:
        made = self._made.get((resource, str(webshop_id)))
        return made or self.links.get_by_webshop(resource, webshop_id)

    def get_by_chargebee(self, resource: str, chargebee_id: str) -> Link | None:
        made = self._by_chargebee.get((resource, str(chargebee_id)))
        return made or self.links.get_by_chargebee(resource, chargebee_id)

    def get_by_deterministic(self, resource: str, deterministic_id: str) -> Link | None:
        key = (resource, str(deterministic_id))
        made = self._by_deterministic.get(key) or self._by_chargebee.get(key)
        return made or self.links.get_by_deterministic(resource, deterministic_id)

    def read_ahead(self, keys: Any) -> None:
        self.links.read_ahead(keys)  # the plan's own links are in memory already

    def save(self, resource: str, webshop_id: str, chargebee_id: str, **state: Any) -> Link:
        old = self.get_by_webshop(resource, webshop_id)
        link = old or Link(resource, str(webshop_id), str(chargebee_id))
        given = {name: value for name, value in state.items() if value is not None}
        link = dataclasses.replace(link, chargebee_id=str(chargebee_id), **given)
        self._made[(resource, str(webshop_id))] = link
        self._by_chargebee[(resource, link.chargebee_id)] = link
        if link.deterministic_id is not None:
            self._by_deterministic[(resource, link.deterministic_id)] = link
        return link

    def add_dead_letter(self, *args: Any, **kwargs: Any) -> DeadLetter | None:
        return None

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
