"""target-customwebshop: upserts Chargebee records (mapped to the webshop's shape by the
stream maps) into the Customwebshop API, through the link store the forward sync shares."""

from __future__ import annotations

import typing as t
from pathlib import Path

from singer_sdk import Target
from singer_sdk import typing as th

from sync_common.guard import MAX_DELETE_PERCENT, DeleteGuard
from sync_common.http import ApiClient, webshop_error
from sync_common.links import LinkStore
from sync_common.report import RunReport, default_report_dir
from target_customwebshop.sinks import SINKS

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink


class TargetCustomwebshop(Target):
    name = "target-customwebshop"

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
        th.Property(
            "conflict_policy",
            th.StringType(allowed_values=["newest_wins", "webshop_wins", "chargebee_wins"]),
            default="newest_wins",
            description="Who wins when a linked record changed on both sides since the last "
            "sync: the newer updated_at (default), or always one side. The overruled edit is "
            "written to the run report with both versions.",
        ),
        th.Property(
            "empty_overwrites",
            th.BooleanType,
            default=False,
            description="In a conflict won by Chargebee, let an empty Chargebee value clear a "
            "filled webshop field (default: it does not).",
        ),
        MAX_DELETE_PERCENT,
        th.Property("report_dir", th.StringType, description="Where run reports go."),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.api = ApiClient(
            self.config["api_url"],
            auth_headers={"X-API-Key": self.config["api_key"]},
            parse_error=webshop_error,
        )
        self.links = LinkStore(self.config.get("link_store_url"))
        self.report = RunReport(self.name)
        self.delete_guard = DeleteGuard(self.links, self.config.get("max_delete_percent"))

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        if stream_name not in SINKS:
            msg = f"Stream {stream_name!r} is not one this target writes ({', '.join(SINKS)})"
            raise ValueError(msg)
        return SINKS[stream_name]

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        data = self.report.as_dict(self.api.calls())
        for line in self.report.summary_lines(data):
            self.logger.info("%s", line)
        path = self.report.write(Path(self.config.get("report_dir") or default_report_dir()), data)
        self.logger.info("Report written to %s", path)
        self.links.close()
        self.api.close()


if __name__ == "__main__":
    TargetCustomwebshop.cli()
