"""target-chargebee: upserts records that arrive in Chargebee's shape into Chargebee."""

from __future__ import annotations

import copy
import re
import typing as t

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.mapper import RemoveRecordTransform

from sync_common.chargebee import ChargebeeClient, chargebee_base_url
from sync_common.conflicts import CONFLICT_POLICY, EMPTY_OVERWRITES
from sync_common.guard import MAX_DELETE_PERCENT
from sync_common.http import preflight
from sync_common.links import WEBSHOP_API_URL, LinkedSystems, open_store
from sync_common.matching import release_held
from sync_common.retry import source_stream_of
from sync_common.run_lock import RUN_LOCK_WAIT, hold_for_run
from target_chargebee.engine import Engine
from target_chargebee.sinks import SINKS, DroppedStreamSink, ResourceSink
from target_chargebee.store import Links

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,50}$")


class TargetChargebee(Target):
    """Writes `customers`, `items`, `item_prices`, `invoices` and `orders` to Chargebee as
    idempotent upserts, through a link store that remembers which record is which."""

    name = "target-chargebee"
    package_name = "webshop-chargebee-sync-target-chargebee"  # its distribution (--version)
    message_reader_class = MsgSpecReader  # the SDK's faster JSON reader (bench/README.md)

    config_jsonschema = th.PropertiesList(
        th.Property(
            "site",
            th.StringType,
            description="Chargebee site name: the API is https://{site}.chargebee.com/api/v2. "
            "Required unless api_url is set.",
        ),
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="A Chargebee API key with write access (HTTP Basic user name).",
        ),
        th.Property(
            "api_url",
            th.StringType,
            description="Overrides https://{site}.chargebee.com/api/v2 (a proxy, the local "
            "emulator), e.g. http://127.0.0.1:8766/api/v2.",
        ),
        th.Property(
            "business_entity_id",
            th.StringType,
            description="Business entity new customers are placed in, unless a record's "
            "`business_entity_id` (from the stream map) says otherwise. Empty: the site's "
            "default entity. A linked customer whose entity changes is transferred.",
        ),
        th.Property(
            "item_family_id",
            th.StringType,
            default="webshop",
            description="Item family of the items this target creates; created once if missing.",
        ),
        th.Property(
            "link_store_url",
            th.StringType,
            description="SQLAlchemy URL of the link store (which webshop record is which "
            "Chargebee record, and what each side last held). Default: SQLite inside the "
            "Meltano project. Use postgresql+psycopg://… when several runners share it.",
        ),
        th.Property(
            "requests_per_minute",
            th.IntegerType,
            default=150,
            description="Client-side limit on API calls per rolling minute: the site's plan "
            "limit (test sites and Starter: 150; Performance: 1000; Enterprise: 3500).",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType,
            default=4,
            description="Most API calls in flight at once.",
        ),
        th.Property(
            "request_timeout",
            th.IntegerType,
            default=60,
            description="Seconds to wait for one API answer.",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Read and plan, write nothing (no Chargebee writes, links, dead "
            "letters or state): the log and the report list what the run would create, "
            "match, update (fields, old -> new), leave unchanged, delete or reject.",
        ),
        th.Property(
            "fail_on_rejects",
            th.BooleanType,
            default=False,
            description="Exit non-zero (after emitting state and the report) when Chargebee "
            "refused any record. By default a run with rejects succeeds; the rejects are in "
            "the dead-letter table, the log and the report.",
        ),
        WEBSHOP_API_URL,
        CONFLICT_POLICY,
        EMPTY_OVERWRITES,
        MAX_DELETE_PERCENT,
        RUN_LOCK_WAIT,
        th.Property(
            "report_dir",
            th.StringType,
            description="Directory of the per-run JSON reports. Default: "
            "<Meltano project>/.meltano/sync/reports.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe_state: dict | None = None
        self._emitted_state: dict | None = None
        self.engine = self._start_engine(check=kwargs.get("validate_config", True))
        self.engine.source_stream_of = lambda stream: source_stream_of(self.mapper, stream)

    # ------------------------------------------------------------------ start-up

    def _start_engine(self, *, check: bool) -> Engine:
        config = self.config
        problems = settings_problems(config)
        if problems and check:
            raise ConfigValidationError("Config validation failed", errors=problems)
        api = ChargebeeClient(
            chargebee_base_url(config.get("site"), config.get("api_url")),
            config.get("api_key") or "",
            requests_per_minute=config.get("requests_per_minute") or 150,
            max_concurrency=config.get("max_concurrency") or 4,
            timeout=config.get("request_timeout") or 60,
        )
        systems = LinkedSystems.from_config(config, "chargebee")
        links = t.cast(Links, open_store(config.get("link_store_url"), systems, store=Links))
        waited = 0.0
        if check:
            url_setting = "api_url" if config.get("api_url") else "site"
            preflight(api, "/customers", "Chargebee", url_setting)
            if not config.get("dry_run"):  # a dry run writes nothing: it need not wait
                waited = hold_for_run(links, self.name, config.get("run_lock_wait"), self.logger)
        engine = Engine(api=api, links=links, settings=dict(config), logger=self.logger)
        engine.report.run_lock_waited = waited
        return engine

    # ------------------------------------------------------------------ sinks

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        if stream_name in SINKS:
            return SINKS[stream_name]
        if self._dropped_by_map(stream_name):
            return DroppedStreamSink
        msg = (
            f"Stream {stream_name!r} is not a Chargebee resource this target writes "
            f"({', '.join(SINKS)}). Rename it with a stream map (__alias__ / __source__) or "
            f"drop it (`{stream_name}: __NULL__`)."
        )
        raise ValueError(msg)

    def _dropped_by_map(self, stream_name: str) -> bool:
        """True for a stream the stream maps drop (`products: __NULL__`): the SDK still makes
        a sink for it, which never receives a record."""
        maps = self.mapper.stream_maps.get(stream_name, [])
        return bool(maps) and any(
            isinstance(m, RemoveRecordTransform) and m.stream_alias == stream_name for m in maps
        )

    # ------------------------------------------------------------------ records the maps cannot map

    # private SDK hook: the maps exist only once the SDK registered them here; no public hook
    def _process_schema_message(self, message_dict: dict) -> None:
        super()._process_schema_message(message_dict)
        for stream_map in self.mapper.stream_maps.get(message_dict["stream"], []):
            if not isinstance(stream_map.transform, _GuardedTransform):
                # private SDK member: no SDK hook wraps a map's transform; replaced on this map
                stream_map.transform = _GuardedTransform(stream_map)  # type: ignore[method-assign]

    # private SDK hook: the only place the record before the maps is seen and a map's error caught
    def _process_record_message(self, message_dict: dict) -> None:
        """A record a map expression fails on (a wrong type: `int('12.50')`) is dead-lettered
        with the error, so it does not stop every record after it, run after run. The record
        before the maps is kept for the sinks (no public hook shows it; tests pin it)."""
        self.engine.source_record = message_dict.get("record")
        try:
            super()._process_record_message(message_dict)
        except UnmappableRecord as error:
            # a stream's map raises it only when it can fail: never a dropped stream's
            sink = t.cast(ResourceSink, self.get_sink(error.stream))
            self.engine.reject_unmappable(sink, message_dict["record"], error.reason)
        if self.engine.unverified or self.engine.to_archive:
            self.engine.verify()

    # ------------------------------------------------------------------ state

    # private SDK hook: no public hook runs per STATE line (to settle the records before it)
    def _process_state_message(self, message_dict: dict) -> None:
        self._release_held()
        self.engine.settle()  # the records before this state are written (or refused)
        super()._process_state_message(message_dict)
        if not self.engine.pending:
            self._safe_state = copy.deepcopy(self._latest_state)

    # private SDK hook: the one place the SDK emits state (drain_all, which calls it, is final)
    def _write_state_message(self, state: dict) -> None:
        """State goes out only past records that were written or dead-lettered: while a
        record waits for its parent, the last state from before it is the one emitted."""
        if self.engine.dry_run:
            return
        if self.engine.pending:
            if self._safe_state is None:
                return
            state = copy.deepcopy(self._safe_state)
        if state == self._emitted_state:
            return
        super()._write_state_message(state)
        self._emitted_state = state

    # ------------------------------------------------------------------ end of run

    def _release_held(self) -> None:
        """Records held back for first-contact matching are decided before a state message
        may cover them, and at the end."""
        release_held(list(self._sinks_active.values()))

    def process_endofpipe(self) -> None:
        self._release_held()
        self.engine.finish()
        self.engine.report.dead_letters_open = len(
            self.engine.links.open_dead_letters(source="webshop")
        )
        data = self.engine.report.as_dict(self.engine.api_calls())
        path = self.engine.report.publish(self.logger, data, self.config.get("report_dir"))
        super().process_endofpipe()
        self.engine.close()
        rejected = data["rejected"]
        if rejected and self.config.get("fail_on_rejects"):
            self.logger.error(
                "%d record(s) were rejected and fail_on_rejects is set; see %s", rejected, path
            )
            raise SystemExit(1)


class UnmappableRecord(Exception):  # noqa: N818 (a decision about one record)
    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(reason)
        self.stream, self.reason = stream, reason


class _GuardedTransform:
    """A stream map's transform whose failure on the data of one record (not a broken
    expression, which still stops the run) raises UnmappableRecord naming the stream."""

    DATA_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)

    def __init__(self, stream_map: t.Any) -> None:
        self.stream = stream_map.stream_alias
        self.transform = stream_map.transform

    def __call__(self, record: dict) -> dict | None:
        try:
            return self.transform(record)
        except self.DATA_ERRORS as exc:
            reason = f"the stream map cannot translate this record: {type(exc).__name__}: {exc}"
            raise UnmappableRecord(self.stream, reason) from None


def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
    """Settings that are missing or malformed, each message naming its setting."""
    problems = []
    if not config.get("api_key"):
        problems.append("api_key: missing (a Chargebee API key)")
    webshop = config.get("webshop_api_url")
    if not webshop:
        problems.append(
            "webshop_api_url: missing (the webshop the records come from: the link store is "
            "bound to it and to this Chargebee site)"
        )
    elif not re.match(r"^https?://[^/\s]+", str(webshop)):
        problems.append(f"webshop_api_url: {webshop!r} is not an http(s) URL")
    api_url = config.get("api_url")
    site = config.get("site")
    if api_url:
        if not re.match(r"^https?://[^/\s]+", str(api_url)):
            problems.append(f"api_url: {api_url!r} is not an http(s) URL")
    elif not site:
        problems.append("site: missing (or set api_url)")
    elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]*$", str(site)):
        problems.append(f"site: {site!r} is not a Chargebee site name (letters, digits, '-')")
    for name in ("requests_per_minute", "max_concurrency", "request_timeout"):
        value = config.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"{name}: must be a whole number of at least 1, not {value!r}")
    for name in ("business_entity_id", "item_family_id"):
        value = config.get(name)
        if value and not ID_PATTERN.match(str(value)):
            problems.append(f"{name}: {value!r} is not a Chargebee id (≤50 of A-Z a-z 0-9 _ . @ -)")
    if not config.get("item_family_id"):
        problems.append("item_family_id: missing (the item family of the webshop's items)")
    maps = config.get("stream_maps")
    if maps is not None and not isinstance(maps, dict):
        problems.append("stream_maps: must be an object")
    return problems


if __name__ == "__main__":
    TargetChargebee.cli()
