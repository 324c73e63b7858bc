"""What both targets are beyond their sinks: the start (settings checked, the API client
and the link store opened, the run lock, the dry run's choice of stand-ins), the record
before the maps, state (none in a dry run), held first-contact records, and the end (the
report, dead letters still open, `fail_on_rejects`).

A dry run is decided here, once: the target gets stand-ins that read for real and write
nothing (its own planning API client or gateway, sync_common.planning.PlanningLinks), and the
report says it is a plan. The rest of a target's code runs as in a real run."""

from __future__ import annotations

import typing as t

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.sinks import RecordSink

from sync_common.guard import DeleteGuard
from sync_common.http import ApiClient, preflight
from sync_common.links import LinkedSystems, LinkStore, ReadAheadKey, Side, open_store
from sync_common.matching import release_held
from sync_common.merge import SOURCE_RECORD
from sync_common.planning import PlanningLinks
from sync_common.report import RunReport
from sync_common.retry import source_stream_of
from sync_common.run_lock import hold_for_run

#: The settings both targets take.
REPORT_DIR = th.Property(
    "report_dir",
    th.StringType,
    description="Directory of the per-run JSON reports. Default: "
    "<Meltano project>/.meltano/sync/reports.",
)
#: singer-sdk's own setting, declared for its default: the SDK's is on, and its check was 13 %
#: of target-customwebshop's CPU (bench/README.md).
VALIDATE_RECORDS = th.Property(
    "validate_records",
    th.BooleanType,
    default=False,
    description="Check every record against its stream's schema before it is written "
    "(singer-sdk's jsonschema check; a record that fails it stops the run). Off by default: "
    "the API checks every field and refuses a bad record with its reason, which is kept as a "
    "dead letter while the run goes on.",
)


#: Records a target holds before it handles them, so that their links are read in one query
#: per resource (LinkStore.read_ahead) instead of one per record; before a state message and
#: at the end, fewer. Not more: with 500, target-chargebee's peak memory grew 12.6-12.8 MB
#: from 3,000 to 30,000 webshop records (`bench/volume.py --records 3000,30000`), 8.9 MB with 100.
READ_AHEAD = 100


class SyncSink(RecordSink):
    """A sink of a SyncTarget. It keeps each record's source record (before the maps) beside
    its translation: the base of the sync the other way. It hands each record to the target,
    which reads the links of `READ_AHEAD` records in one go, then gives each back to `handle`
    in the order they came (SyncTarget.handle_read_ahead)."""

    def __init__(self, target: SyncTarget, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.target = target

    def preprocess_record(self, record: dict, context: dict) -> dict:
        return {**record, SOURCE_RECORD: self.target.source_record}

    def process_record(self, record: dict, context: dict) -> None:
        self.target.add_to_read_ahead(self, record)

    def link_key(self, record: dict) -> ReadAheadKey | None:
        """The link this record's handling looks up first (None: none)."""
        raise NotImplementedError

    def handle(self, record: dict) -> None:
        """What the sink does with the record, its link read ahead."""
        raise NotImplementedError


class Preflight(t.NamedTuple):
    """The call that checks the API and the key at start, and how to name the service."""

    path: str
    service: str
    url_setting: str = "api_url"


class SyncTarget(Target):
    """A target of this project; a subclass gives its API, its settings check and its
    stack (`start`)."""

    #: The side this target writes: the link store's pair is bound from its settings.
    side: t.ClassVar[Side]
    #: The side its records come from: its dead letters' `source`.
    source_side: t.ClassVar[Side]

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        check = kwargs.get("validate_config", True)
        config = self.config
        self.dry_run = bool(config.get("dry_run"))
        #: the record the maps are translating now, before the maps (the sinks keep it)
        self.source_record: dict | None = None
        #: records the sinks handed in and that wait for their links to be read, in order
        self.reading_ahead: list[tuple[SyncSink, dict]] = []
        problems = self.settings_problems(config)
        if problems and check:
            raise ConfigValidationError("Config validation failed", errors=problems)
        api = self.open_api()
        systems = LinkedSystems.from_config(config, self.side)
        store = open_store(config.get("link_store_url"), systems, side=self.side)
        waited = 0.0
        if check:
            preflight(api, *self.preflight())
            if not self.dry_run:  # a dry run writes nothing: it need not wait
                waited = hold_for_run(store, self.name, config.get("run_lock_wait"), self.logger)
        self.links: LinkStore | PlanningLinks = PlanningLinks(store) if self.dry_run else store
        self.report = RunReport(
            self.name, run_id=store.run_id, dry_run=self.dry_run, logger=self.logger
        )
        self.report.run_lock_waited = waited
        self.delete_guard = DeleteGuard(self.links, config.get("max_delete_percent"))
        self.start(api)

    # ------------------------------------------------------------------ what a target gives

    @staticmethod
    def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
        """Settings that are missing or malformed, each message naming its setting."""
        raise NotImplementedError

    def open_api(self) -> ApiClient:
        raise NotImplementedError

    def preflight(self) -> Preflight:
        raise NotImplementedError

    def start(self, api: ApiClient) -> None:
        """Build what writes the records on `api` (a plan wraps it in its stand-in)."""
        raise NotImplementedError

    def api_calls(self) -> dict[str, t.Any]:
        """The API calls of the run, for the report."""
        raise NotImplementedError

    def finish_writes(self) -> None:
        """End of input: what is still to write is written (or refused)."""

    def close(self) -> None:
        self.links.close()

    # ------------------------------------------------------------------ shared behaviour

    def source_stream_of(self, stream: str) -> str:
        """The tap stream `stream` comes from, for its dead letters."""
        return source_stream_of(self.mapper, stream)

    # private SDK hook: the only place the record before the maps is seen (sinks get it mapped)
    def _process_record_message(self, message_dict: dict) -> None:
        """Keeps the record before the maps for the sinks (no public hook shows it; tests pin
        it): the base of the sync the other way."""
        self.source_record = message_dict.get("record")
        super()._process_record_message(message_dict)
        if len(self.reading_ahead) >= READ_AHEAD:
            self.handle_read_ahead()

    # private SDK hook: no public hook runs per STATE line (to release the held records first)
    def _process_state_message(self, message_dict: dict) -> None:
        self._release_held()
        super()._process_state_message(message_dict)

    # private SDK hook: the one place the SDK emits state (drain_all, which calls it, is final)
    def _write_state_message(self, state: dict) -> None:
        if not self.dry_run:  # a dry run leaves the next real run everything to do
            super()._write_state_message(state)

    def add_to_read_ahead(self, sink: SyncSink, record: dict) -> None:
        """A sink's record, handled with the ones around it (`handle_read_ahead`), in the
        order they came, whichever sink they came to (an order's invoice before the order)."""
        self.reading_ahead.append((sink, record))

    def handle_read_ahead(self) -> None:
        """The links of the records waiting read in one query per resource, then each
        record handled by its sink."""
        waiting, self.reading_ahead = self.reading_ahead, []
        if waiting:
            keys = (sink.link_key(record) for sink, record in waiting)
            self.links.read_ahead(key for key in keys if key is not None)
        for sink, record in waiting:
            sink.handle(record)

    def _release_held(self) -> None:
        """Records still waiting to be read ahead are handled, then records held back for
        first-contact matching are decided: before a state message may cover them, and at
        the end."""
        self.handle_read_ahead()
        release_held(list(self._sinks_active.values()))

    def process_endofpipe(self) -> None:
        self._release_held()
        self.finish_writes()
        self.report.dead_letters_open = len(self.links.open_dead_letters(source=self.source_side))
        data = self.report.as_dict(self.api_calls())
        path = self.report.publish(self.logger, data, self.config.get("report_dir"))
        super().process_endofpipe()
        self.close()
        rejected = data["rejected"]
        if rejected and self.config.get("fail_on_rejects"):
            self.logger.error(
                "%d record(s) were rejected and fail_on_rejects is set; see %s", rejected, path
            )
            raise SystemExit(1)
