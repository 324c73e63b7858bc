"""The Chargebee list endpoints as incremental streams: sorted by `updated_at` ascending,
pages of 100 through `next_offset` (several at once: tap_chargebee.reading), deletions
included as tombstones. Each stream's schema is `schemas/<stream>.json`, every attribute
Chargebee returns, generated from the official SDK's models by `make docs`
(tools/sync_docs/chargebee_schemas.py); timestamps are date-times."""

from __future__ import annotations

import functools
import importlib.resources
import threading
import typing as t
from functools import cached_property
from urllib.parse import quote

import msgspec
from singer_sdk import RESTStream, SchemaDirectory, StreamSchema
from singer_sdk.authenticators import BasicAuthenticator

from sync_common.chargebee import chargebee_base_url
from sync_common.conflicts import unix_seconds
from sync_common.retry import RetriesDeadLetters
from tap_chargebee.reading import Lane, Page, Pages, read_sorted_list
from tap_chargebee.timestamps import Tree, timestamp_tree, to_date_times

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

    from tap_chargebee.tap import TapChargebee

SCHEMAS = SchemaDirectory(importlib.resources.files("tap_chargebee") / "schemas")


class ListAnswer(msgspec.Struct):
    """What the reading needs of a list answer before its records: where the next page is
    (decoding only this skips the records, which wait unparsed: tap_chargebee.reading.Page)."""

    next_offset: str | None = None


#: Errors that are about a setting, not a record: the message names the setting to check.
SETTING_HINTS = {
    401: " (check the api_key setting)",
    403: " (check the api_key setting)",
    404: " (check the site / api_url setting)",
}


class ChargebeeStream(RetriesDeadLetters, RESTStream):
    """`GET /{name}?limit=100&sort_by[asc]=updated_at[&updated_at[after]=…]`; records with an
    open dead letter first, by `GET /{name}/{id}` (sync_common.retry)."""

    primary_keys = ("id",)
    replication_key = "updated_at"
    schema = StreamSchema(SCHEMAS)  # schemas/<name>.json
    is_sorted = True
    object_name: str = ""
    #: Extra list params: how deleted records are included (they differ per list).
    include_deleted: t.ClassVar[dict[str, str]] = {"include_deleted": "true"}
    _tap: TapChargebee  # private SDK member: a stream's only link to its tap (no public one)

    @property
    def url_base(self) -> str:
        return chargebee_base_url(self.config.get("site"), self.config.get("api_url"))

    @property
    def path(self) -> str:  # type: ignore[override]  # the SDK's attribute, only ever read
        return f"/{self.name}"

    @property
    def timeout(self) -> int:
        return self.config.get("request_timeout") or 60

    @cached_property
    def authenticator(self) -> BasicAuthenticator:
        return BasicAuthenticator(username=self.config["api_key"], password="")

    @property
    def requests_session(self) -> requests.Session:
        return self._tap.throttled_session  # one throttle for every stream of the run

    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict:
        params = {"limit": 100, "sort_by[asc]": "updated_at", **self.include_deleted}
        start = self.get_starting_replication_key_value(context)
        # No filter on a first full read: customers untouched since 2016 have no updated_at
        # and a filtered read would skip them. `after` is exclusive and counts whole
        # seconds: one second back re-reads the boundary instead of missing its neighbours.
        if start:
            params["updated_at[after]"] = unix_seconds(start) - 1
        return params  # the pages' offsets: tap_chargebee.reading

    def request_records(self, context: Context | None) -> t.Iterable[dict]:
        """The list's pages, several in flight over updated_at ranges, and the streams after
        this one read meanwhile (tap_chargebee.reading)."""
        reads = self._tap.stream_reads
        for stream in self._tap.streams.values():
            if stream.selected and isinstance(stream, ChargebeeStream):
                # private SDK hook: the SDK writes a stream's starting bookmark only when it
                # syncs it; a stream read ahead needs it now (tests/test_sdk_hooks.py)
                stream._write_starting_replication_value(context)
                reads.start(stream.name, functools.partial(stream.read_pages, context))
        return reads.records(self.name)

    def read_pages(self, context: Context | None, lane: Lane, cancelled: threading.Event) -> Pages:
        params = self.get_url_params(context, None)
        fetch = functools.partial(self.fetch_page, context)
        return read_sorted_list(fetch, params, self._tap.concurrent_reads, lane, cancelled)

    def fetch_page(self, context: Context | None, params: dict) -> Page:
        """One list request with the stream's session (throttled), auth and retries."""

        def get() -> requests.Response:
            request = self.build_prepared_request(
                method="GET", url=self.get_url(context), params=params, headers=self.http_headers
            )
            response = self.requests_session.send(request, timeout=self.timeout)
            self.validate_response(response)
            return response

        # the SDK types its decorator by its own request function's signature; it wraps any
        response = self.request_decorator(get)()  # type: ignore[arg-type, call-arg]
        body, object_name = response.content, self.object_name

        def records() -> list[dict]:
            return [row[object_name] for row in msgspec.json.decode(body)["list"]]

        return Page(records, msgspec.json.decode(body, type=ListAnswer).next_offset, len(body))

    def record_path(self, record_id: str) -> str:
        return f"/{self.name}/{quote(record_id, safe='')}"

    def record_from(self, response: requests.Response) -> dict:
        return response.json()[self.object_name]

    def older_than_bookmark(self, record: dict, start: t.Any) -> bool:
        """The list reads from one second before the bookmark: a record at it, it has. (The
        record as Chargebee sends it: Unix seconds.)"""
        updated = record.get("updated_at")
        return updated is None or unix_seconds(updated) < unix_seconds(start)

    @cached_property
    def timestamps(self) -> Tree:
        return timestamp_tree(self.schema)

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        """Chargebee's Unix seconds as date-times, top-level and nested: the one conversion."""
        return to_date_times(row, self.timestamps)

    def response_error_message(self, response: requests.Response) -> str:
        """Chargebee's own words, never the request (it may carry the key)."""
        try:
            body = response.json()
            detail = f"{body.get('api_error_code')}: {body.get('message')}"
        except ValueError:
            detail = "no error details in the response"
        hint = SETTING_HINTS.get(response.status_code, "")
        return f"{response.status_code} {response.reason} for GET {self.path}: {detail}{hint}"


class CustomersStream(ChargebeeStream):
    name = "customers"
    object_name = "customer"

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        # A transfer leaves the old copy under a new id pointing to the active customer:
        # that copy is history, not a customer of its own.
        if row.get("active_id") not in (None, row["id"]):
            return None
        return super().post_process(row, context)


class ItemsStream(ChargebeeStream):
    name = "items"
    object_name = "item"
    # items have no include_deleted; deleted ones show with a status filter
    include_deleted: t.ClassVar[dict[str, str]] = {"status[in]": '["active","archived","deleted"]'}


class ItemPricesStream(ItemsStream):
    name = "item_prices"
    object_name = "item_price"


class OrdersStream(ChargebeeStream):
    name = "orders"
    object_name = "order"
