"""The webshop's streams; each schema is a component of the API contract (the OpenAPI file)."""

from __future__ import annotations

from singer_sdk import StreamSchema

from tap_customwebshop.client import OPENAPI, CustomwebshopStream


class CustomersStream(CustomwebshopStream):
    name = "customers"
    schema = StreamSchema(OPENAPI, key="Customer")


class ProductsStream(CustomwebshopStream):
    name = "products"
    schema = StreamSchema(OPENAPI, key="Product")


class OrdersStream(CustomwebshopStream):
    name = "orders"
    schema = StreamSchema(OPENAPI, key="Order")
