"""The circuit breaker for deletions: a broken listing, a wrong filter or a bad map must not
look like "everything was deleted" and empty the other side."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Protocol

from singer_sdk import typing as th

#: A run may always delete this many records of a resource; the share applies beyond it.
ALWAYS_ALLOWED = 10


#: The setting both targets take.
MAX_DELETE_PERCENT = th.Property(
    "max_delete_percent",
    th.IntegerType(minimum=0, maximum=100),
    default=50,
    description="Circuit breaker: the run stops before deleting or archiving more than this "
    "percentage of a resource's linked records (10 are always allowed).",
)


class TooManyDeletes(Exception):  # noqa: N818 (reads as the reason the run stopped)
    pass


class LinkCounts(Protocol):
    """What the guard reads: a LinkStore, or a dry run's PlanningLinks."""

    def count(self, resource: str) -> int: ...


class DeleteGuard:
    def __init__(self, links: LinkCounts, max_percent: int | None) -> None:
        self.links = links
        self.max_percent = 50 if max_percent is None else max_percent
        self.setting = MAX_DELETE_PERCENT.name  # named in the error: what the user may change
        self.deletes: Counter[str] = Counter()
        self._linked: dict[str, int] = {}
        self._counting = threading.Lock()  # target-chargebee's workers count at once

    def allow(self, resource: str) -> None:
        """Count one more deletion or archival of `resource`; raise before it would pass
        `max_percent` of the records linked when the run began."""
        with self._counting:
            if resource not in self._linked:
                self._linked[resource] = self.links.count(resource)
            self.deletes[resource] += 1
            done, linked = self.deletes[resource], self._linked[resource]
        if done > ALWAYS_ALLOWED and done * 100 > self.max_percent * linked:
            raise TooManyDeletes(
                f"stopped: this run would delete or archive more than {self.max_percent}% of "
                f"the {linked} linked {resource} ({self.setting}). If that is intended, raise "
                f"{self.setting} for one run; otherwise check the source listing and the maps."
            )
