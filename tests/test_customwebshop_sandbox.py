"""The Customwebshop reference API through real HTTP: the contract in
common/sync_common/customwebshop-openapi.yaml, and the generator."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sync_sandbox.process import RunningSandbox
from tests.harness import WEBSHOP_KEY
from tests.plugin_forks import start_sandbox

HEADERS = {"X-API-Key": WEBSHOP_KEY}
COMMAND = str(Path(sys.executable).parent / "customwebshop-sandbox")


def call(sandbox: RunningSandbox, method: str, path: str, **kwargs) -> requests.Response:
    headers = {**HEADERS, **kwargs.pop("headers", {})}
    return requests.request(
        method, f"{sandbox.url}/api/v1{path}", headers=headers, timeout=10, **kwargs
    )


def listing(sandbox: RunningSandbox, resource: str, **params) -> list[dict]:
    rows, cursor = [], params.pop("cursor", None)
    while True:
        page = call(sandbox, "GET", f"/{resource}", params={**params, "cursor": cursor}).json()
        rows += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> RunningSandbox:
    db = tmp_path_factory.mktemp("shop") / "shop.db"
    sandbox = start_sandbox(
        "customwebshop", str(db), WEBSHOP_KEY, "--generate", "customers=80,products=30,orders=120"
    )
    yield sandbox
    sandbox.stop()


def new_customer(sandbox: RunningSandbox, **fields) -> dict:
    body = {"email": "ana@example.com", "first_name": "Ana", **fields}
    response = call(sandbox, "POST", "/customers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_customer_lifecycle_with_versions_and_soft_delete(webshop):
    created = new_customer(
        webshop, billing_address={"line1": "Rue 1", "city": "Lyon", "country": "FR"}
    )
    assert (created["version"], created["deleted_at"], created["company"]) == (1, None, None)
    assert created["billing_address"]["postal_code"] is None
    assert created["updated_at"].endswith("Z") and len(created["updated_at"]) == 27

    path = f"/customers/{created['id']}"
    changed = call(
        webshop, "PATCH", path, json={"company": "Ana SARL"}, headers={"If-Match": '"1"'}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    assert changed.json()["company"] == "Ana SARL" and changed.json()["first_name"] == "Ana"
    assert changed.json()["updated_at"] > created["updated_at"]

    stale = call(webshop, "PATCH", path, json={"phone": "1"}, headers={"If-Match": "1"})
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "version_mismatch"

    deleted = call(webshop, "DELETE", path).json()
    assert deleted["deleted_at"] and deleted["version"] == 3
    assert call(webshop, "DELETE", path).json()["version"] == 3  # deleting twice: no change
    assert call(webshop, "GET", path).json()["deleted_at"] == deleted["deleted_at"]
    assert call(webshop, "PATCH", path, json={"phone": "1"}).status_code == 409
    listed = listing(webshop, "customers", updated_since=created["created_at"])
    assert [row["id"] for row in listed] == [created["id"]]  # deletions stay in the listing


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"first_name": "No e-mail"}, "email"),
        ({"email": "not-an-address", "first_name": "X"}, "email"),
        (
            {
                "email": "a@b.de",
                "first_name": "X",
                "billing_address": {"line1": "x", "city": "y", "country": "de"},
            },
            "billing_address.country",
        ),
        ({"email": "a@b.de", "first_name": "X", "version": 7}, "version"),
    ],
)
def test_invalid_customer_is_refused_naming_the_field(webshop, body, field):
    response = call(webshop, "POST", "/customers", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == field


def test_orders_reference_products_and_compute_totals(webshop):
    customer = new_customer(webshop)
    mug = {"sku": "MUG-1", "name": "Mug", "price": 1250, "currency": "EUR"}
    product = call(webshop, "POST", "/products", json=mug).json()
    copy = call(webshop, "POST", "/products", json={**mug, "name": "Copy"})
    assert (copy.status_code, copy.json()["error"]["field"]) == (409, "sku")
    order = call(webshop, "POST", "/orders", json={
        "customer_id": customer["id"], "currency": "EUR", "shipping_total": 490,
        "line_items": [{"product_id": product["id"], "quantity": 2}]}).json()  # fmt: skip
    assert order["number"] == f"WS-{order['id']:06d}" and order["status"] == "pending"
    assert order["line_items"] == [{"id": 1, "product_id": product["id"], "sku": "MUG-1",
                                    "name": "Mug", "quantity": 2, "unit_price": 1250,
                                    "amount": 2500}]  # fmt: skip
    assert (order["subtotal"], order["total"]) == (2500, 2990)
    bad = call(webshop, "POST", "/orders", json={
        "customer_id": customer["id"], "currency": "EUR",
        "line_items": [{"product_id": 999999, "quantity": 1}]})  # fmt: skip
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "line_items[0].product_id")
    zero = call(webshop, "POST", "/orders", json={
        "customer_id": customer["id"], "currency": "EUR",
        "line_items": [{"product_id": product["id"], "quantity": 0}]})  # fmt: skip
    assert zero.json()["error"]["field"] == "line_items[0].quantity"


def test_idempotency_key_replays_instead_of_creating_twice(webshop):
    key = {"Idempotency-Key": "create-ana-once"}
    body = {"email": "once@example.com", "first_name": "Once"}
    first = call(webshop, "POST", "/customers", json=body, headers=key)
    again = call(webshop, "POST", "/customers", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert again.headers["ETag"] == first.headers["ETag"] == '"1"'
    assert len(listing(webshop, "customers", email="once@example.com")) == 1
    other = call(webshop, "POST", "/customers", json={**body, "first_name": "Twice"}, headers=key)
    assert other.status_code == 409


def test_auth_errors_and_bad_parameters(webshop):
    response = requests.get(f"{webshop.url}/api/v1/customers", timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    bearer = {"Authorization": f"Bearer {WEBSHOP_KEY}"}
    assert requests.get(f"{webshop.url}/api/v1/customers", headers=bearer, timeout=10).ok
    for params in ({"limit": 0}, {"cursor": "garbage"}, {"updated_since": "yesterday"}):
        response = call(webshop, "GET", "/customers", params=params)
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert call(webshop, "GET", "/customers/424242").json()["error"]["code"] == "not_found"
    assert call(webshop, "GET", "/nothing-here").status_code == 404


def test_pages_are_stable_and_ordered_while_records_change(generated):
    first = call(generated, "GET", "/customers", params={"limit": 25}).json()
    # a record on a later page changes while the client pages: it moves to the end, and
    # no record is skipped or repeated before it
    moved = listing(generated, "customers")[40]
    call(generated, "PATCH", f"/customers/{moved['id']}", json={"phone": "+49 30 1234"})
    rows = first["data"] + listing(generated, "customers", cursor=first["next_cursor"])
    keys = [(row["updated_at"], row["id"]) for row in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert [row["id"] for row in rows].count(moved["id"]) == 1
    assert rows[-1]["id"] == moved["id"] and rows[-1]["version"] == moved["version"] + 1
    since = listing(generated, "customers", updated_since=rows[-1]["updated_at"])
    assert [row["id"] for row in since] == [moved["id"]]  # updated_since is inclusive


def test_generated_data_is_varied_and_repeatable(generated, tmp_path):
    customers = listing(generated, "customers", limit=500)
    products = listing(generated, "products", limit=500)
    orders = listing(generated, "orders", limit=500)
    assert (len(customers), len(products), len(orders)) == (80, 30, 120)
    names = " ".join(c["first_name"] + " " + (c["last_name"] or "") for c in customers)
    assert any(not ch.isascii() for ch in names)
    assert any(c["company"] is None for c in customers) and any(c["company"] for c in customers)
    assert any(c["billing_address"] is None for c in customers)
    assert any(c["phone"] is None for c in customers)
    assert any(p["description"] is None for p in products)
    assert any(c["deleted_at"] for c in customers)
    assert len({p["currency"] for p in products}) >= 3
    assert len({o["currency"] for o in orders}) >= 3
    assert {o["status"] for o in orders} >= {"pending", "paid", "shipped", "delivered"}
    by_id = {p["id"]: p for p in products}
    for order in orders:
        assert {by_id[line["product_id"]]["currency"] for line in order["line_items"]} == {
            order["currency"]
        }
        assert order["total"] == order["subtotal"] + order["shipping_total"] + order["tax_total"]
    keys = [(row["updated_at"], row["id"]) for row in customers]
    assert keys == sorted(keys)

    # the same seed gives the same data
    def snapshot(seed: str) -> list:
        db = tmp_path / f"seed{seed}.db"
        command = [COMMAND, "--db", str(db), "--api-key", "k", "--seed", seed, "--generate-only",
                   "--generate", "customers=10,products=5,orders=10"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        rows = sqlite3.connect(db).execute("SELECT resource, id, data FROM records ORDER BY 1, 2")
        return [(r, i, {k: v for k, v in json.loads(d).items() if not k.endswith("_at")})
                for r, i, d in rows]  # fmt: skip

    assert snapshot("5") == snapshot("5") != snapshot("6")


def test_rate_limit_answers_429_with_retry_after(webshop):
    webshop.set_knobs(requests_per_minute=2, rate_window_seconds=3)
    try:
        statuses = [call(webshop, "GET", "/customers").status_code for _ in range(3)]
        limited = call(webshop, "GET", "/customers")
        assert statuses[:2] == [200, 200] and limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 3
        time.sleep(int(limited.headers["Retry-After"]))
        assert call(webshop, "GET", "/customers").status_code == 200
    finally:
        webshop.set_knobs(requests_per_minute=0, rate_window_seconds=60)
