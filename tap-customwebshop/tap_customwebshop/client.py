"""The REST client shared by every webshop stream: auth, paging, retries, error messages."""

from __future__ import annotations

import datetime
import decimal
import email.utils
import typing as t
from functools import cached_property
from importlib import resources
from urllib.parse import quote, urlparse

from singer_sdk import OpenAPISchema, RESTStream, StreamSchema
from singer_sdk.authenticators import APIKeyAuthenticator
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.helpers.jsonpath import extract_jsonpath
from singer_sdk.pagination import JSONPathPaginator

from sync_common.retry import RetriesDeadLetters

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

#: The API contract; the stream schemas are its `Customer`, `Product` and `Order` components.
OPENAPI = OpenAPISchema(resources.files("sync_common") / "customwebshop-openapi.yaml")


class ContractSchema(StreamSchema):
    """A component of the contract as a stream's schema, resolved once per stream: the SDK's
    StreamSchema resolves (deep-copies) it on every read of `schema`, which the SDK does for
    every record, and that was most of the tap's CPU (bench/README.md)."""

    def get_stream_schema(self, stream: t.Any, stream_class: t.Any) -> dict:
        if "_contract_schema" not in stream.__dict__:
            stream.__dict__["_contract_schema"] = super().get_stream_schema(stream, stream_class)
        return stream.__dict__["_contract_schema"]


#: Errors that are about a setting, not a record: the message names the setting to check.
SETTING_HINTS = {
    401: " (check the api_key setting)",
    403: " (check the api_key setting)",
    404: " (check the api_url setting and the *_path settings)",
}


class CustomwebshopStream(RetriesDeadLetters, RESTStream):
    """A list endpoint of the webshop: `GET {path}?updated_since=&limit=&cursor=`, answering
    `{"data": [...], "next_cursor": ...}` in (updated_at, id) order; records with an open
    dead letter first, by `GET {path}/{id}` (sync_common.retry)."""

    primary_keys = ("id",)
    replication_key = "updated_at"
    is_sorted = True  # the API sorts by (updated_at, id): the bookmark advances record by record
    records_jsonpath = "$.data[*]"
    max_tries = 8  # per request, the first included; see backoff_wait_generator for the waits

    @property
    def url_base(self) -> str:
        return self.config["api_url"].rstrip("/")

    @property
    def path(self) -> str:  # type: ignore[override]  # the SDK's attribute, only ever read
        return self.config[f"{self.name}_path"]

    @cached_property
    def authenticator(self) -> APIKeyAuthenticator:
        return APIKeyAuthenticator(key="X-API-Key", value=self.config["api_key"])

    @property
    def timeout(self) -> int:
        return self.config["request_timeout"]

    def get_new_paginator(self) -> JSONPathPaginator:
        return JSONPathPaginator("$.next_cursor")

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        start = self.get_starting_timestamp(context)  # the bookmark, else start_date
        return {
            "updated_since": start and rfc3339(start),  # inclusive: the boundary record repeats
            "limit": self.config["page_size"],
            "cursor": next_page_token,
        }

    def record_path(self, record_id: str) -> str:
        return f"{self.path}/{quote(record_id, safe='')}"

    def record_from(self, response: requests.Response) -> dict:
        return response.json(parse_float=decimal.Decimal)

    def older_than_bookmark(self, record: dict, start: t.Any) -> bool:
        """The list reads `updated_since` inclusively: a record at the bookmark it has."""
        return parse_time(record["updated_at"]) < parse_time(start)

    def parse_response(self, response: requests.Response) -> t.Iterable[dict]:
        """Records of one page; a body that is not a whole page fails the stream, so the
        bookmark never passes records that were not read."""
        where = f"GET {urlparse(response.url).path}"
        try:
            page = response.json(parse_float=decimal.Decimal)
        except ValueError as exc:
            msg = f"{where} returned a malformed or truncated page, not valid JSON ({exc})"
            raise FatalAPIError(msg) from None
        if not (isinstance(page, dict) and isinstance(page.get("data"), list)):
            msg = f"{where} returned JSON that is not a list page ({{'data': [...], ...}})"
            raise FatalAPIError(msg)
        if "next_cursor" not in page:
            msg = f"{where} returned a page without 'next_cursor'; it may be truncated"
            raise FatalAPIError(msg)
        yield from extract_jsonpath(self.records_jsonpath, input=page)

    def response_error_message(self, response: requests.Response) -> str:
        """Status plus the error's code and message: never the whole body or the headers."""
        try:
            error = response.json()["error"]
            detail = f"{error['code']}: {error['message']}"
            if error.get("field"):
                detail += f" (field: {error['field']})"
        except (ValueError, KeyError, TypeError, AttributeError):
            detail = "no error details in the response"
        path = urlparse(response.url).path
        hint = SETTING_HINTS.get(response.status_code, "")
        return f"{response.status_code} {response.reason} for GET {path}: {detail}{hint}"

    def backoff_wait_generator(self) -> t.Generator[float, t.Any, None]:
        """Seconds to wait before each retry: the server's Retry-After when it sends one
        (429, 503), else 1, 2, 4 … capped at 30 (5xx, timeouts, dropped connections)."""
        exception = yield  # type: ignore[misc]  # primed by backoff, then sent each exception
        attempt = 0
        while True:
            response = getattr(exception, "response", None)
            wait = retry_after(response) if response is not None else None
            exception = yield wait if wait is not None else min(2**attempt, 30)
            attempt += 1

    def backoff_max_tries(self) -> int:
        return self.max_tries


def rfc3339(moment: datetime.datetime) -> str:
    """`2026-01-31T12:00:00.000000Z`, the API's timestamp format."""
    utc = moment.astimezone(datetime.UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str | datetime.datetime) -> datetime.datetime:
    """An API timestamp, a bookmark or start_date, aware (a start_date without zone is UTC)."""
    moment = (
        value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    )
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def retry_after(response: requests.Response) -> float | None:
    """The Retry-After header in seconds (delta-seconds or an HTTP date), if present."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0)
