"""The Chargebee API v2 emulator over HTTP: Chargebee's wire format (form-encoded bracket
params, Basic auth, `{"customer": {...}}` and `{"list": [...], "next_offset": ...}`
envelopes, its error JSON). Each view parses the request, calls the site's operation
(`models.ChargebeeBackend`, which holds the state and the rules) and renders its answer;
nothing here keeps state or decides what Chargebee would."""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import json
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from sync_sandbox.chargebee.errors import ChargebeeError
from sync_sandbox.chargebee.models import ENTITY_HEADER, IDEMPOTENCY_HEADER, ChargebeeBackend
from sync_sandbox.chargebee.params import parse_form
from sync_sandbox.chargebee.store import Store
from sync_sandbox.server import Knobs, Refusal, Sandbox

API = "/api/v2"


def create_app(
    store: Store,
    api_key: str,
    business_entities: list[str],
    knobs: Knobs,
    site: str = "sandbox-test",
) -> Flask:
    """`business_entities`: the ids configured on the emulated site; the first is the default
    one, where a customer created without any entity lands. `site`: the site's name, as
    `GET /configurations` gives it."""
    app = Flask("chargebee-sandbox")
    backend = ChargebeeBackend(store, business_entities, site)
    Sandbox(app, knobs, functools.partial(_authenticated, api_key), _refusal, store.clear)
    app.register_error_handler(ChargebeeError, _error_response)
    app.register_error_handler(404, lambda _e: _unknown_path())
    app.register_error_handler(
        405,
        lambda _e: _error_response(
            ChargebeeError(
                405, "http_method_not_supported", f"{request.method} is not supported here"
            )
        ),
    )

    def route(rule: str, operation: Callable[..., dict], method: str = "GET") -> None:
        """GET reads its params from the query string; POST is a write, from the form. A write
        whose operation takes no params (a delete by id) reads none, as Chargebee ignores them."""
        view: Callable[..., dict | Response]
        if method == "GET":
            view = functools.partial(_read, operation)
        else:
            view = functools.partial(_write, backend, operation, _takes_params(operation))
        app.add_url_rule(API + rule, operation.__name__, view, methods=[method])

    for plural, kind in (("customers", "customer"), ("item_families", "item_family"),
                         ("items", "item"), ("item_prices", "item_price"),
                         ("invoices", "invoice"), ("orders", "order")):  # fmt: skip
        app.add_url_rule(
            f"{API}/{plural}/<id_>",
            f"retrieve_{kind}",
            functools.partial(_retrieve, backend, kind),
        )
    route("/configurations", backend.list_configurations)
    route("/customers", backend.create_customer, "POST")
    route("/customers", backend.list_customers)
    route("/customers/<id_>", backend.update_customer, "POST")
    route("/customers/<id_>/update_billing_info", backend.update_billing_info, "POST")
    route("/customers/<id_>/delete", backend.delete_customer, "POST")
    route("/business_entities/transfers", backend.transfer, "POST")
    route("/business_entities/transfers", backend.list_transfers)
    route("/item_families", backend.create_family, "POST")
    route("/item_families", backend.list_families)
    route("/item_families/<id_>", backend.update_family, "POST")
    route("/item_families/<id_>/delete", backend.delete_family, "POST")
    route("/items", backend.create_item, "POST")
    route("/items", backend.list_items)
    route("/items/<id_>", backend.update_item, "POST")
    route("/items/<id_>/delete", backend.delete_item, "POST")
    route("/item_prices", backend.create_price, "POST")
    route("/item_prices", backend.list_prices)
    route("/item_prices/<id_>", backend.update_price, "POST")
    route("/item_prices/<id_>/delete", backend.delete_price, "POST")
    route("/invoices/import_invoice", backend.import_invoice, "POST")
    route("/invoices", backend.list_invoices)
    route("/invoices/<id_>/delete", backend.delete_invoice, "POST")
    route("/orders", backend.create_order, "POST")
    route("/orders/import_order", backend.import_order, "POST")
    route("/orders", backend.list_orders)
    route("/orders/<id_>", backend.update_order, "POST")
    route("/orders/<id_>/cancel", backend.cancel_order, "POST")
    route("/orders/<id_>/delete", backend.delete_order, "POST")
    return app


def _takes_params(operation: Callable[..., dict]) -> bool:
    return "params" in inspect.signature(operation).parameters


def _read(operation: Callable[..., dict], **path: str) -> dict:
    return operation(params=_query(), entity=request.headers.get(ENTITY_HEADER), **path)


def _retrieve(backend: ChargebeeBackend, kind: str, id_: str) -> dict:
    return backend.retrieve(kind, id_, request.headers.get(ENTITY_HEADER))


def _write(
    backend: ChargebeeBackend, operation: Callable[..., dict], takes_params: bool, **path: str
) -> Response:
    entity = request.headers.get(ENTITY_HEADER)

    def run() -> dict:  # the form is parsed inside: a malformed one is an answer replayed too
        params = {"params": _form()} if takes_params else {}
        return operation(entity=entity, **params, **path)

    answer = backend.write(request.headers.get(IDEMPOTENCY_HEADER), _fingerprint(), run)
    headers = {"chargebee-idempotency-replayed": "true"} if answer.replayed else None
    return Response(answer.body, answer.status, mimetype="application/json", headers=headers)


def _fingerprint() -> str:
    """What makes two writes "the same request" for an idempotency key."""
    request_identity = [
        request.path,
        sorted(request.form.items(multi=True)),
        request.headers.get(ENTITY_HEADER),
    ]
    return hashlib.sha256(json.dumps(request_identity).encode()).hexdigest()


def _authenticated(api_key: str) -> bool:
    """HTTP Basic with the API key as user name and an empty password."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return False
    try:
        user, _, _password = base64.b64decode(auth[6:]).decode().partition(":")
    except ValueError:
        return False
    return secrets.compare_digest(user, api_key)


def _error_response(error: ChargebeeError) -> Response:
    response = jsonify(error.body())
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after + 0.5)))
    return response


def _refusal(refusal: Refusal) -> Response:
    if refusal.status == 401:
        error = ChargebeeError(
            401,
            "api_authentication_failed",
            "Sorry, authentication failed. Invalid api key",
        )
    elif refusal.status == 429:
        error = ChargebeeError(
            429,
            "api_request_limit_exceeded",
            f"Sorry, access has been blocked temporarily: {refusal.message}",
            retry_after=refusal.retry_after,
        )
    else:
        code = "internal_temporary_error" if refusal.status == 503 else "internal_error"
        error = ChargebeeError(refusal.status, code, f"Sorry, {refusal.message}")
    return _error_response(error)


def _unknown_path() -> Response:
    return _error_response(
        ChargebeeError(404, "resource_not_found", f"Sorry, no such API path: {request.path}")
    )


def _form() -> dict[str, Any]:
    """POST params come form-encoded; a JSON body is not read (its fields count as missing)."""
    return parse_form(request.form.items(multi=True))


def _query() -> dict[str, Any]:
    return parse_form(request.args.items(multi=True))
