"""target-customwebshop: upserts Chargebee records (mapped to the webshop's shape by the
stream maps) into the Customwebshop API, through the link store the forward sync shares."""

from __future__ import annotations

import re
import typing as t

from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader

from sync_common.conflicts import CONFLICT_POLICY, EMPTY_OVERWRITES
from sync_common.guard import MAX_DELETE_PERCENT
from sync_common.http import ApiClient, webshop_error
from sync_common.links import CHARGEBEE_API_URL, CHARGEBEE_SITE
from sync_common.run_lock import RUN_LOCK_WAIT
from sync_common.target import REPORT_DIR, VALIDATE_RECORDS, Preflight, SyncTarget
from target_customwebshop.plan import PlanningClient
from target_customwebshop.resources import RULES
from target_customwebshop.sinks import SINKS

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink


class TargetCustomwebshop(SyncTarget):
    """Writes Chargebee's customers, items, item prices and orders, mapped to the webshop's
    shape, into the Customwebshop API, through the link store target-chargebee shares."""

    side = "webshop"
    source_side = "chargebee"

    name = "target-customwebshop"
    message_reader_class = MsgSpecReader  # the SDK's faster JSON reader (bench/README.md)
    package_name = "webshop-chargebee-sync-target-customwebshop"  # its distribution (--version)

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.StringType,
            required=True,
            description="Base URL of the webshop API including /api/v1.",
        ),
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="The webshop API key (sent as X-API-Key; never logged).",
        ),
        th.Property(
            "link_store_url",
            th.StringType,
            description="SQLAlchemy URL of the link store; must be the one target-chargebee "
            "uses. Default: SQLite inside the Meltano project.",
        ),
        CHARGEBEE_SITE,
        CHARGEBEE_API_URL,
        CONFLICT_POLICY,
        EMPTY_OVERWRITES,
        MAX_DELETE_PERCENT,
        RUN_LOCK_WAIT,
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Read and plan, write nothing (no webshop writes, links, dead letters "
            "or state): the log and the report list what would be created, updated (fields, "
            "old -> new), left unchanged, skipped or rejected, and the conflicts.",
        ),
        REPORT_DIR,
        VALIDATE_RECORDS,
    ).to_dict()

    @staticmethod
    def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
        return settings_problems(config)

    def open_api(self) -> ApiClient:
        return ApiClient(
            self.config["api_url"],
            auth_headers={"X-API-Key": self.config["api_key"]},
            parse_error=webshop_error,
        )

    def preflight(self) -> Preflight:
        return Preflight("/customers", "the webshop")

    def start(self, api: ApiClient) -> None:
        """target -> sinks -> the webshop's rules per resource -> the API client."""
        self.api: ApiClient | PlanningClient = PlanningClient(api) if self.dry_run else api
        unlinked_items: dict[str, tuple] = {}  # shared by the items' and the prices' rules
        self.rules = {
            stream: rules_class(
                stream=stream,
                api=self.api,
                links=self.links,
                report=self.report,
                delete_guard=self.delete_guard,
                settings=dict(self.config),
                logger=self.logger,
                source_stream_of=self.source_stream_of,
                unlinked_items=unlinked_items,
            )  # fmt: skip
            for stream, rules_class in RULES.items()
        }

    def api_calls(self) -> dict[str, t.Any]:
        return dict(self.api.calls())

    def close(self) -> None:
        super().close()
        self.api.close()

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        if stream_name not in SINKS:
            msg = f"Stream {stream_name!r} is not one this target writes ({', '.join(SINKS)})"
            raise ValueError(msg)
        return SINKS[stream_name]


def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
    """Settings that are missing or malformed, each message naming its setting."""
    problems = []
    for name, required in (("api_url", True), ("chargebee_api_url", False)):
        value = config.get(name)
        if (value or required) and not re.match(r"^https?://[^/\s]+", str(value or "")):
            problems.append(f"{name}: {value!r} is not an http(s) URL")
    if not (config.get("chargebee_site") or config.get("chargebee_api_url")):
        problems.append(
            "chargebee_site: missing (or set chargebee_api_url): the Chargebee site the "
            "records come from; the link store is bound to it and to this webshop"
        )
    return problems


if __name__ == "__main__":
    TargetCustomwebshop.cli()
