"""target-chargebee: upserts records that arrive in Chargebee's shape into Chargebee."""

from __future__ import annotations

import copy
import re
import typing as t

from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.mapper import RemoveRecordTransform

from sync_common.chargebee import ChargebeeClient, chargebee_base_url
from sync_common.conflicts import CONFLICT_POLICY, EMPTY_OVERWRITES
from sync_common.guard import MAX_DELETE_PERCENT
from sync_common.http import ApiClient
from sync_common.links import WEBSHOP_API_URL
from sync_common.run_lock import RUN_LOCK_WAIT
from sync_common.target import REPORT_DIR, VALIDATE_RECORDS, Preflight, SyncTarget
from target_chargebee.gateway import Gateway, PlanningGateway
from target_chargebee.resources import RULES, FirstContact
from target_chargebee.scheduler import Scheduler
from target_chargebee.sinks import SINKS, DroppedStreamSink
from target_chargebee.upsert import Decisions

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,50}$")


class TargetChargebee(SyncTarget):
    """Writes `customers`, `items`, `item_prices`, `invoices` and `orders` to Chargebee as
    idempotent upserts, through a link store that remembers which record is which."""

    side = "chargebee"
    source_side = "webshop"

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
        REPORT_DIR,
        VALIDATE_RECORDS,
    ).to_dict()

    @staticmethod
    def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
        return settings_problems(config)

    # ------------------------------------------------------------------ start-up

    def open_api(self) -> ChargebeeClient:
        config = self.config
        return ChargebeeClient(
            chargebee_base_url(config.get("site"), config.get("api_url")),
            config.get("api_key") or "",
            requests_per_minute=config.get("requests_per_minute") or 150,
            max_concurrency=config.get("max_concurrency") or 4,
            timeout=config.get("request_timeout") or 60,
        )

    def preflight(self) -> Preflight:
        url_setting = "api_url" if self.config.get("api_url") else "site"
        return Preflight("/customers", "Chargebee", url_setting)

    def start(self, api: ApiClient) -> None:
        """target -> scheduler -> upsert decisions -> resource rules -> gateway."""
        chargebee = t.cast(ChargebeeClient, api)
        self.gateway = PlanningGateway(chargebee) if self.dry_run else Gateway(chargebee)
        settings = dict(self.config)
        first_contact = FirstContact()
        rules = {
            resource: rules_class(
                gateway=self.gateway,
                links=self.links,
                settings=settings,
                first_contact=first_contact,
            )  # fmt: skip
            for resource, rules_class in RULES.items()
        }
        decisions = Decisions(
            rules=rules,
            links=self.links,
            delete_guard=self.delete_guard,
            logger=self.logger,
            source_stream_of=self.source_stream_of,
        )
        self.scheduler = Scheduler(
            decisions=decisions,
            gateway=self.gateway,
            links=self.links,
            report=self.report,
            max_concurrency=int(self.config.get("max_concurrency") or 1),
        )
        self._safe_state: dict | None = None
        self._emitted_state: dict | None = None

    def api_calls(self) -> dict[str, t.Any]:
        return self.gateway.api_calls()

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
        before the maps is kept for the sinks (SyncTarget)."""
        try:
            super()._process_record_message(message_dict)
        except UnmappableRecord as error:
            # a stream's map raises it only when it can fail: never a dropped stream's
            self.scheduler.reject_unmappable(error.stream, message_dict["record"], error.reason)
        if self.scheduler.has_unfinished_checks:
            self.scheduler.verify()

    # ------------------------------------------------------------------ state

    # private SDK hook: no public hook runs per STATE line (to settle the records before it)
    def _process_state_message(self, message_dict: dict) -> None:
        self._release_held()
        self.scheduler.settle()  # the records before this state are written (or refused)
        super()._process_state_message(message_dict)
        if not self.scheduler.pending:
            self._safe_state = copy.deepcopy(self._latest_state)

    # private SDK hook: the one place the SDK emits state (drain_all, which calls it, is final)
    def _write_state_message(self, state: dict) -> None:
        """State goes out only past records that were written or dead-lettered: while a
        record waits for its parent, the last state from before it is the one emitted."""
        if self.scheduler.pending:
            if self._safe_state is None:
                return
            state = copy.deepcopy(self._safe_state)
        if state == self._emitted_state:
            return
        super()._write_state_message(state)  # SyncTarget: none in a dry run
        self._emitted_state = state

    # ------------------------------------------------------------------ end of run

    def finish_writes(self) -> None:
        self.scheduler.finish()

    def close(self) -> None:
        self.scheduler.close()
        super().close()
        self.gateway.close()


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
