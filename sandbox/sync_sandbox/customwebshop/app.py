"""The Customwebshop reference API over HTTP: `/api/v1/{customers,products,orders}` with
API-key auth, cursor pages in (updated_at, id) order, Idempotency-Key, If-Match/ETag and the
JSON error format of docs/customwebshop-api.md."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import secrets
from typing import Any

from flask import Flask, Response, request

from sync_sandbox.customwebshop.shop import Shop, ShopError
from sync_sandbox.customwebshop.store import RESOURCES, format_timestamp, parse_timestamp
from sync_sandbox.server import Knobs, Refusal, Sandbox

API = "/api/v1"
FILTERS: dict[str, dict[str, type]] = {"customers": {"email": str}, "products": {"sku": str},
           "orders": {"number": str, "customer_id": int}}  # fmt: skip
STATUS_CODES = {401: "unauthorized", 429: "rate_limited"}


def create_app(shop: Shop, api_key: str, knobs: Knobs) -> Flask:
    app = Flask("customwebshop-sandbox")
    Sandbox(app, knobs, functools.partial(_authenticated, api_key), _refusal)
    app.register_error_handler(ShopError, _error_response)
    app.register_error_handler(404, lambda _e: _error_response(
        ShopError(404, "not_found", f"no such path: {request.path}")))  # fmt: skip
    app.register_error_handler(405, lambda _e: _error_response(
        ShopError(405, "bad_request", f"{request.method} is not allowed here")))  # fmt: skip
    app.register_error_handler(500, lambda _e: _error_response(
        ShopError(500, "internal_error", "unexpected server error")))  # fmt: skip

    def resource_of() -> str:
        return request.path.removeprefix(API + "/").split("/")[0]

    def list_records():
        resource = resource_of()
        args = request.args
        limit = _integer(args.get("limit", "100"), "limit")
        if not 1 <= limit <= 500:
            raise ShopError(400, "bad_request", "limit must be 1 to 500", "limit")
        since = None
        if args.get("updated_since"):
            try:
                since = format_timestamp(parse_timestamp(args["updated_since"]))
            except ValueError:
                raise ShopError(
                    400, "bad_request", "not an RFC 3339 date-time", "updated_since"
                ) from None
        filters: dict[str, object] = {}
        for name, kind in FILTERS[resource].items():
            if name in args:
                filters[name] = _integer(args[name], name) if kind is int else args[name]
        after = _decode_cursor(args["cursor"]) if args.get("cursor") else None
        with shop.store.lock:
            rows, more = shop.store.page(resource, since, after, limit, filters)
        cursor = _encode_cursor(rows[-1]) if more else None
        return {"data": rows, "next_cursor": cursor}

    def create():
        resource = resource_of()
        body = _json_body()
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return _record_response(shop.create(resource, body), 201)
        if not 0 < len(key) <= 255:
            raise ShopError(400, "bad_request", "Idempotency-Key must be 1 to 255 characters")
        fingerprint = hashlib.sha256(
            json.dumps([request.path, body], sort_keys=True).encode()
        ).hexdigest()
        with shop.store.lock:
            stored = shop.store.idempotency.replay(key)
            if stored is not None:
                if stored[0] != fingerprint:
                    raise ShopError(409, "conflict", "Idempotency-Key was used with another body")
                response = Response(stored[2], stored[1], mimetype="application/json")
                response.headers["Idempotent-Replayed"] = "true"
                if stored[1] < 300:  # a replayed record answer carries its ETag too
                    response.headers["ETag"] = f'"{json.loads(stored[2])["version"]}"'
                return response
            try:
                response = _record_response(shop.create(resource, body), 201)
            except ShopError as error:
                response = _error_response(error)
            if response.status_code < 500:
                shop.store.idempotency.remember(
                    key, fingerprint, response.status_code, response.get_data(as_text=True)
                )
            return response

    def get(id_: int):
        return _record_response(shop.get(resource_of(), id_))

    def patch(id_: int):
        return _record_response(shop.change(resource_of(), id_, _json_body(), _if_match()))

    def delete(id_: int):
        return _record_response(shop.delete(resource_of(), id_, _if_match()))

    for resource in RESOURCES:
        app.add_url_rule(f"{API}/{resource}", f"{resource}.list", list_records, methods=["GET"])
        app.add_url_rule(f"{API}/{resource}", f"{resource}.create", create, methods=["POST"])
        for view, method in ((get, "GET"), (patch, "PATCH"), (delete, "DELETE")):
            app.add_url_rule(
                f"{API}/{resource}/<int:id_>",
                f"{resource}.{method.lower()}",
                view,
                methods=[method],
            )
    return app


def _authenticated(api_key: str) -> bool:
    given = request.headers.get("X-API-Key")
    if given is None and request.headers.get("Authorization", "").startswith("Bearer "):
        given = request.headers["Authorization"][7:]
    return given is not None and secrets.compare_digest(given, api_key)


def _error_response(error: ShopError) -> Response:
    body = {"error": {"code": error.code, "message": error.message, "field": error.field}}
    return Response(json.dumps(body), error.status, mimetype="application/json")


def _refusal(refusal: Refusal) -> Response:
    code = STATUS_CODES.get(refusal.status, "internal_error")
    response = _error_response(ShopError(refusal.status, code, refusal.message))
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(refusal.retry_after)))
    return response


def _record_response(record: dict, status: int = 200) -> Response:
    response = Response(json.dumps(record), status, mimetype="application/json")
    response.headers["ETag"] = f'"{record["version"]}"'
    return response


def _json_body() -> Any:
    """Any JSON but null: the shop answers 400 to one that is not an object."""
    body = request.get_json(silent=True)
    if body is None:
        raise ShopError(
            400, "bad_request", "the body must be JSON (Content-Type: application/json)"
        )
    return body


def _if_match() -> int | None:
    value = request.headers.get("If-Match")
    if value is None:
        return None
    try:
        return int(value.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise ShopError(400, "bad_request", 'If-Match must be a version, e.g. "3"') from None


def _integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ShopError(400, "bad_request", f"{name} must be an integer", name) from None


def _encode_cursor(record: dict) -> str:
    return base64.urlsafe_b64encode(
        json.dumps([record["updated_at"], record["id"]]).encode()
    ).decode()


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        updated_at, id_ = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return str(updated_at), int(id_)
    except (ValueError, TypeError):
        raise ShopError(400, "bad_request", "not a cursor this API returned", "cursor") from None
