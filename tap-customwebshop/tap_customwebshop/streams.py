"""The webshop's streams; each schema is a component of the API contract (the OpenAPI file)."""

from __future__ import annotations

from tap_customwebshop.client import OPENAPI, ContractSchema, CustomwebshopStream


class CustomersStream(CustomwebshopStream):
    name = "customers"
    schema = ContractSchema(OPENAPI, key="Customer")


class ProductsStream(CustomwebshopStream):
    name = "products"
    schema = ContractSchema(OPENAPI, key="Product")


class OrdersStream(CustomwebshopStream):
    name = "orders"
    schema = ContractSchema(OPENAPI, key="Order")
