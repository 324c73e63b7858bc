"""The Chargebee list endpoints as incremental streams: sorted by `updated_at` ascending,
pages of 100 through `next_offset` (several at once: tap_chargebee.reading), deletions
included as tombstones."""

from __future__ import annotations

import datetime
import functools
import threading
import typing as t
from functools import cached_property
from urllib.parse import quote

from singer_sdk import RESTStream
from singer_sdk import typing as th
from singer_sdk.authenticators import BasicAuthenticator

from sync_common.chargebee import chargebee_base_url
from sync_common.retry import RetriesDeadLetters
from tap_chargebee.reading import Page, Pages, read_sorted_list

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

    from tap_chargebee.tap import TapChargebee

ADDRESS = th.ObjectType(
    *(th.Property(name, th.StringType) for name in (
        "first_name", "last_name", "email", "company", "phone", "line1", "line2", "line3",
        "city", "state_code", "state", "zip", "country")),
)  # fmt: skip
COMMON = (
    th.Property("id", th.StringType, required=True),
    th.Property("updated_at", th.IntegerType),
    th.Property("resource_version", th.IntegerType),
    th.Property("deleted", th.BooleanType),
    th.Property("business_entity_id", th.StringType),
)


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
            params["updated_at[after]"] = int(start) - 1
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

    def read_pages(self, context: Context | None, cancelled: threading.Event) -> Pages:
        workers = self.config.get("concurrent_reads") or 8
        params = self.get_url_params(context, None)
        fetch = functools.partial(self.fetch_page, context)
        return read_sorted_list(fetch, params, workers, cancelled)

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
        body = response.json()
        rows = [row[self.object_name] for row in body["list"]]
        return Page(rows, body.get("next_offset"))

    def record_path(self, record_id: str) -> str:
        return f"/{self.name}/{quote(record_id, safe='')}"

    def record_from(self, response: requests.Response) -> dict:
        return response.json()[self.object_name]

    def older_than_bookmark(self, record: dict, start: t.Any) -> bool:
        """The list reads from one second before the bookmark: a record at it, it has."""
        return record.get("updated_at") is None or int(record["updated_at"]) < int(start)

    def get_starting_replication_key_value(self, context: Context | None) -> int | None:
        value = super().get_starting_replication_key_value(context)
        if isinstance(value, str):  # start_date, a date-time; Chargebee counts Unix seconds
            value = int(datetime.datetime.fromisoformat(value).timestamp())
        return value

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
    schema = th.PropertiesList(
        *COMMON,
        th.Property("first_name", th.StringType),
        th.Property("last_name", th.StringType),
        th.Property("email", th.StringType),
        th.Property("company", th.StringType),
        th.Property("phone", th.StringType),
        th.Property("billing_address", ADDRESS),
        th.Property("active_id", th.StringType),
        th.Property("created_at", th.IntegerType),
    ).to_dict()

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        # A transfer leaves the old copy under a new id pointing to the active customer:
        # that copy is history, not a customer of its own.
        if row.get("active_id") not in (None, row["id"]):
            return None
        return row


class ItemsStream(ChargebeeStream):
    name = "items"
    object_name = "item"
    # items have no include_deleted; deleted ones show with a status filter
    include_deleted: t.ClassVar[dict[str, str]] = {"status[in]": '["active","archived","deleted"]'}
    schema = th.PropertiesList(
        *COMMON,
        th.Property("name", th.StringType),
        th.Property("external_name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("type", th.StringType),
        th.Property("status", th.StringType),
        th.Property("item_family_id", th.StringType),
        th.Property("is_shippable", th.BooleanType),
    ).to_dict()


class ItemPricesStream(ItemsStream):
    name = "item_prices"
    object_name = "item_price"
    schema = th.PropertiesList(
        *COMMON,
        th.Property("name", th.StringType),
        th.Property("external_name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("item_id", th.StringType),
        th.Property("status", th.StringType),
        th.Property("price", th.IntegerType),
        th.Property("currency_code", th.StringType),
        th.Property("pricing_model", th.StringType),
        th.Property("accounting_detail", th.ObjectType(th.Property("sku", th.StringType))),
    ).to_dict()


class OrdersStream(ChargebeeStream):
    name = "orders"
    object_name = "order"
    schema = th.PropertiesList(
        *COMMON,
        th.Property("document_number", th.StringType),
        th.Property("reference_id", th.StringType),
        th.Property("invoice_id", th.StringType),
        th.Property("customer_id", th.StringType),
        th.Property("status", th.StringType),
        th.Property("shipment_carrier", th.StringType),
        th.Property("tracking_id", th.StringType),
        th.Property("tracking_url", th.StringType),
        th.Property("note", th.StringType),
        th.Property("shipped_at", th.IntegerType),
        th.Property("delivered_at", th.IntegerType),
        th.Property("cancelled_at", th.IntegerType),
        th.Property("shipping_address", ADDRESS),
    ).to_dict()
