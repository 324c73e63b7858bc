"""tap-customwebshop: customers, products and orders of the webshop API, incremental by
updated_at, soft-deleted records included (deleted_at set) so deletes can propagate."""

from __future__ import annotations

from functools import cached_property

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter

from sync_common.links import CHARGEBEE_API_URL, CHARGEBEE_SITE
from sync_common.retry import RETRY_DEAD_LETTERS, TAP_LINK_STORE_URL, records_to_retry
from tap_customwebshop import streams


class TapCustomwebshop(Tap):
    """Customers, products and orders of the Customwebshop API, incremental by updated_at."""

    name = "tap-customwebshop"
    message_writer_class = MsgSpecWriter  # the SDK's faster JSON writer (bench/README.md)
    package_name = "webshop-chargebee-sync-tap-customwebshop"  # its distribution (--version)

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.URIType,
            required=True,
            description="Base URL of the webshop API including the version path, "
            "e.g. http://127.0.0.1:8765/api/v1.",
        ),
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="API key, sent in the X-API-Key header.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Read only records updated at or after this moment (RFC 3339). "
            "A later bookmark in the state wins; without either, everything is read.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=500),
            default=100,
            description="Records per request (the API's `limit`, 1 to 500).",
        ),
        th.Property(
            "customers_path",
            th.StringType,
            default="/customers",
            description="Path of the customers list endpoint, relative to api_url.",
        ),
        th.Property(
            "products_path",
            th.StringType,
            default="/products",
            description="Path of the products list endpoint, relative to api_url.",
        ),
        th.Property(
            "orders_path",
            th.StringType,
            default="/orders",
            description="Path of the orders list endpoint, relative to api_url.",
        ),
        th.Property(
            "request_timeout",
            th.IntegerType(minimum=1),
            default=60,
            description="Seconds to wait for a response before the request is retried.",
        ),
        RETRY_DEAD_LETTERS,
        TAP_LINK_STORE_URL,
        CHARGEBEE_SITE,
        CHARGEBEE_API_URL,
    ).to_dict()

    @cached_property
    def dead_letter_ids(self) -> dict[str, list[str]]:
        """Per stream, the webshop records with an open dead letter (sync_common.retry)."""
        return records_to_retry(self.config, "webshop", self.logger)

    # private SDK hook (@final): the SDK's sorts by name; no public hook keeps discovery order
    def load_streams(self) -> list[Stream]:  # type: ignore[misc]
        """Discovery order, not the SDK's sort by name: customers and products come before
        the orders that refer to them. (No stream has a parent, so nothing else is lost.)"""
        return list(self.discover_streams())

    def discover_streams(self) -> list[streams.CustomwebshopStream]:
        return [
            streams.CustomersStream(self),
            streams.ProductsStream(self),
            streams.OrdersStream(self),
        ]


if __name__ == "__main__":
    TapCustomwebshop.cli()
