"""A field of a linked record edited on both sides since the last sync: who wins, and what an
empty value may do. Both targets take these settings; the rule itself is sync_common.merge,
and each target reports the overruled value with both versions (RunReport.conflicts)."""

from __future__ import annotations

import datetime
from typing import Any

from singer_sdk import typing as th

POLICIES = ("newest_wins", "webshop_wins", "chargebee_wins")

CONFLICT_POLICY = th.Property(
    "conflict_policy",
    th.StringType(allowed_values=list(POLICIES)),
    default="newest_wins",
    description="Who wins when the same field of a linked record changed on both sides since "
    "the last sync (edits of different fields both go through): the side with the newer "
    "updated_at (default; Chargebee on a tie), or always one side. The overruled value is "
    "written to the run report with both values and the base.",
)

EMPTY_OVERWRITES = th.Property(
    "empty_overwrites",
    th.BooleanType,
    default=False,
    description="In a conflict over a field, let an empty value of the winning side clear "
    "the value the other side has filled (default: the filled value stays).",
)


def chargebee_wins(policy: str | None, chargebee_at: Any, webshop_at: Any) -> bool:
    """`chargebee_at` and `webshop_at`: each side's updated_at (Unix seconds or ISO text)."""
    policy = policy or "newest_wins"
    if policy != "newest_wins":
        return policy == "chargebee_wins"
    return unix_seconds(chargebee_at) >= unix_seconds(webshop_at)


def unix_seconds(value: Any) -> int:
    """Date-time text or Unix seconds as Unix seconds (Chargebee's filters take them); text
    without a zone is UTC, as the SDK reads a start_date; nothing is 0."""
    if value in (None, ""):
        return 0
    if isinstance(value, int | float):
        return int(value)
    moment = datetime.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())
