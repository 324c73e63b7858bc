"""target-customwebshop: upserts Chargebee records (mapped to the webshop's shape by the
stream maps) into the Customwebshop API, through the link store the forward sync shares."""

from __future__ import annotations

import re
import typing as t

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.exceptions import ConfigValidationError

from sync_common.conflicts import CONFLICT_POLICY, EMPTY_OVERWRITES
from sync_common.guard import MAX_DELETE_PERCENT, DeleteGuard
from sync_common.http import ApiClient, preflight, webshop_error
from sync_common.links import CHARGEBEE_API_URL, CHARGEBEE_SITE, LinkedSystems, open_store
from sync_common.matching import release_held
from sync_common.report import RunReport
from sync_common.retry import source_stream_of
from sync_common.run_lock import RUN_LOCK_WAIT, hold_for_run
from target_customwebshop.plan import PlanningClient, PlanningLinks
from target_customwebshop.sinks import SINKS

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink


class TargetCustomwebshop(Target):
    """Writes Chargebee's customers, items, item prices and orders, mapped to the webshop's
    shape, into the Customwebshop API, through the link store target-chargebee shares."""

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
        th.Property(
            "report_dir",
            th.StringType,
            description="Directory of the per-run JSON reports. Default: "
            "<Meltano project>/.meltano/sync/reports.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.dry_run = bool(self.config.get("dry_run"))
        self.source_record: dict | None = None
        errors = settings_problems(self.config)
        if errors and kwargs.get("validate_config", True):
            raise ConfigValidationError("Config validation failed", errors=errors)
        api = ApiClient(
            self.config["api_url"],
            auth_headers={"X-API-Key": self.config["api_key"]},
            parse_error=webshop_error,
        )
        links = open_store(self.config.get("link_store_url"), self.linked_systems())
        waited = 0.0
        if kwargs.get("validate_config", True):
            preflight(api, "/customers", "the webshop")
            if not self.dry_run:  # a dry run writes nothing: it need not wait
                waited = hold_for_run(
                    links, self.name, self.config.get("run_lock_wait"), self.logger
                )
        self.api = PlanningClient(api) if self.dry_run else api
        self.links = PlanningLinks(links) if self.dry_run else links
        self.report = RunReport(
            self.name, run_id=links.run_id, dry_run=self.dry_run, logger=self.logger
        )
        self.report.run_lock_waited = waited
        self.delete_guard = DeleteGuard(self.links, self.config.get("max_delete_percent"))
        #: Unlinked Chargebee items of this run (sink, record): their prices match a product
        #: by the item's name too, and merge the item into it once linked.
        self.unlinked_items: dict[str, tuple] = {}

    def linked_systems(self) -> LinkedSystems | None:
        return LinkedSystems.from_config(self.config, "webshop")

    def source_stream_of(self, stream: str) -> str:
        """The tap stream `stream` comes from, for its dead letters."""
        return source_stream_of(self.mapper, stream)

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        if stream_name not in SINKS:
            msg = f"Stream {stream_name!r} is not one this target writes ({', '.join(SINKS)})"
            raise ValueError(msg)
        return SINKS[stream_name]

    # private SDK hook: no public hook runs per STATE line (to release the held records first)
    def _process_state_message(self, message_dict: dict) -> None:
        self._release_held()
        super()._process_state_message(message_dict)

    def _release_held(self) -> None:
        """Records held back for first-contact matching are decided before a state message
        may cover them, and at the end."""
        release_held(list(self._sinks_active.values()))

    # private SDK hook: the only place the record before the maps is seen (sinks get it mapped)
    def _process_record_message(self, message_dict: dict) -> None:
        """Keeps the record before the maps for the sinks (no public hook shows it; tests pin
        it): the base of the forward sync."""
        self.source_record = message_dict.get("record")
        super()._process_record_message(message_dict)

    # private SDK hook: the one place the SDK emits state (drain_all, which calls it, is final)
    def _write_state_message(self, state: dict) -> None:
        if not self.dry_run:  # a dry run leaves the next real run everything to do
            super()._write_state_message(state)

    def process_endofpipe(self) -> None:
        self._release_held()
        super().process_endofpipe()
        self.report.dead_letters_open = len(self.links.open_dead_letters(source="chargebee"))
        data = self.report.as_dict(self.api.calls())
        self.report.publish(self.logger, data, self.config.get("report_dir"))
        self.links.close()
        self.api.close()


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
