"""The link store as the target uses it: links found by webshop id or by the derived
Chargebee id, and rejected records kept as dead letters."""

from __future__ import annotations

from typing import Any

from sync_common.links import DeadLetter, Link, LinkStore, LinkStoreUnavailable

__all__ = ["Link", "LinkStoreUnavailable", "Links"]


class Links(LinkStore):
    def get(self, resource: str, webshop_id: str) -> Link | None:
        return self.get_by_webshop(resource, webshop_id)

    def resolve(self, resource: str, deterministic_id: str) -> str | None:
        """The Chargebee id of the record whose derived id is `deterministic_id`."""
        link = self.get_by_deterministic(resource, deterministic_id)
        return link.chargebee_id if link else None

    def dead_letter(
        self,
        stream: str,
        webshop_id: str,
        reason: str,
        *,
        source_stream: str,
        chargebee_id: str | None,
        details: dict[str, Any] | None,
        record: Any,
    ) -> DeadLetter:
        return self.add_dead_letter(
            stream,
            webshop_id,
            reason,
            record,
            source="webshop",
            source_stream=source_stream,
            details={**(details or {}), "chargebee_id": chargebee_id},
        )
