"""ApiClient against a real HTTP server on 127.0.0.1 that answers from a per-test script."""

from __future__ import annotations

import base64
import logging
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from sync_common.http import ApiClient, ApiError, chargebee_error, webshop_error
from sync_common.throttle import Throttle

API_KEY = "test_secret_key_5f1c9a7e"

Action = Callable[[], Response]


def reply(status: int = 200, body: object = None, headers: dict | None = None) -> Action:
    def action() -> Response:
        response = jsonify(body if body is not None else {"ok": True})
        response.status_code = status
        response.headers.update(headers or {})
        return response

    return action


def html(status: int, text: str) -> Action:
    return lambda: Response(text, status=status, mimetype="text/html")


def slow(seconds: float) -> Action:
    def action() -> Response:
        time.sleep(seconds)
        return reply()()

    return action


def reset() -> Action:
    """Drop the connection with a TCP reset instead of answering."""

    def action() -> Response:
        sock = request.environ["werkzeug.socket"]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)  # close() would not: werkzeug holds other references
        return Response("never sent")

    return action


class ScriptedServer:
    """Answers each path from its list of actions, in order (then 200 {"ok": true}), and
    records what it received."""

    def __init__(self) -> None:
        self.script: dict[str, list[Action]] = defaultdict(list)
        self.received: list[dict] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()
        app = Flask(__name__)
        app.add_url_rule(
            "/<path:path>", view_func=self._handle, methods=["GET", "POST", "PUT", "DELETE"]
        )
        self._http = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._http.server_port}/api"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def plan(self, path: str, *actions: Action) -> None:
        self.script[f"api/{path}"].extend(actions)

    def _handle(self, path: str) -> Response:
        with self._lock:
            self.received.append(
                {"method": request.method, "path": path, "headers": dict(request.headers)}
            )
            action = self.script[path].pop(0) if self.script[path] else reply()
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return action()
        finally:
            with self._lock:
                self.running -= 1

    def reset_script(self) -> None:
        deadline = time.monotonic() + 5
        while self.running and time.monotonic() < deadline:  # a slow answer of a past test
            time.sleep(0.05)
        self.script.clear()
        self.received.clear()
        self.most_running = 0

    def stop(self) -> None:
        self._http.shutdown()


@pytest.fixture(scope="module")
def running_server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ScriptedServer()
    yield server
    server.stop()


@pytest.fixture
def server(running_server):
    running_server.reset_script()
    return running_server


def make_client(server: ScriptedServer, **options) -> ApiClient:
    settings = dict(
        auth_headers={"X-API-Key": API_KEY},
        parse_error=webshop_error,
        read_timeout=0.3,
        max_tries=4,
        backoff_base=0.01,
    )
    return ApiClient(server.url, **{**settings, **options})


def test_get_returns_json_sends_the_key_and_counts_calls_per_operation(server):
    server.plan("customers", reply(body={"data": [{"id": 1}], "next_cursor": None}))
    with make_client(server) as client:
        page = client.get("/customers", {"limit": 100})
        client.get("/customers/1")
        client.get("/customers/1", operation="customers.retrieve")
        client.post("/orders", json={"id": 5})

    assert page == {"data": [{"id": 1}], "next_cursor": None}
    assert server.received[0]["headers"]["X-Api-Key"] == API_KEY
    assert client.calls() == {
        "GET customers": 2,
        "GET customers.retrieve": 1,
        "POST orders": 1,
    }


def test_429_with_retry_after_waits_as_told_and_pauses_the_throttle(server):
    server.plan(
        "customers",
        reply(429, {"error": {"code": "rate_limited", "message": "slow"}}, {"Retry-After": "0.3"}),
    )
    throttle = Throttle(0, 0)
    # backoff_base is large, so a wait near 0.3 s can only come from Retry-After.
    client = make_client(server, throttle=throttle, backoff_base=20.0)

    started = time.monotonic()
    assert client.get("/customers") == {"ok": True}
    elapsed = time.monotonic() - started

    assert 0.3 <= elapsed < 2.0
    assert len(server.received) == 2
    # every caller of the shared throttle was held back until Retry-After had passed
    assert started + 0.3 <= throttle._paused_until <= started + 0.5
    assert client.retries == 1


def test_429_without_retry_after_backs_off_and_succeeds(server):
    server.plan("customers", reply(429, {}), reply(429, {}))
    client = make_client(server)

    assert client.get("/customers") == {"ok": True}
    assert len(server.received) == 3
    assert client.calls() == {"GET customers": 3}
    assert client.retries == 2


def test_5xx_burst_then_success(server):
    server.plan("items", reply(500), html(502, "<h1>Bad gateway</h1>"), reply(503))
    assert make_client(server).get("/items") == {"ok": True}
    assert len(server.received) == 4


def test_5xx_gives_up_after_max_tries_with_the_last_error(server):
    body = {"error": {"code": "internal", "message": "database down"}}
    server.plan("items", *[reply(500, body)] * 4)

    with pytest.raises(ApiError) as caught:
        make_client(server, max_tries=4).get("/items")

    assert (caught.value.status, caught.value.code) == (500, "internal")
    assert caught.value.message == "database down"
    assert not caught.value.is_refusal
    assert len(server.received) == 4


def test_retries_stop_at_max_time_even_when_retry_after_is_longer(server):
    server.plan("items", *[reply(429, {}, {"Retry-After": "30"})] * 5)
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        make_client(server, max_time=0.5).get("/items")
    assert caught.value.status == 429
    assert time.monotonic() - started < 3.0


def test_read_timeout_is_retried_for_a_get(server):
    server.plan("orders", slow(1.0))
    assert make_client(server).get("/orders") == {"ok": True}
    assert len(server.received) == 2


def test_connection_reset_is_retried_for_a_get(server):
    server.plan("orders", reset())
    assert make_client(server).get("/orders") == {"ok": True}
    assert len(server.received) == 2


def test_unsafe_write_is_not_retried_after_5xx_timeout_or_reset(server):
    server.plan("customers", reply(500), slow(1.0), reset())
    client = make_client(server)
    failures = []
    for _ in range(3):
        with pytest.raises(ApiError) as caught:
            client.post("/customers", data={"email": "a@example.com"})
        failures.append((caught.value.status, caught.value.code))

    assert failures == [(500, "http_500"), (None, "timeout"), (None, "connection_error")]
    assert len(server.received) == 3
    assert client.retries == 0


def test_idempotent_write_is_retried(server):
    server.plan("customers", reply(500), reset())
    client = make_client(server)
    key = {"chargebee-idempotency-key": "customer-cws_42-create"}

    assert client.post("/customers", {"id": "cws_42"}, headers=key, idempotent=True) == {"ok": True}
    assert [r["headers"]["Chargebee-Idempotency-Key"] for r in server.received] == [
        "customer-cws_42-create"
    ] * 3


def test_429_is_retried_even_for_an_unsafe_write(server):
    """A 429 means the server did not act on the request."""
    server.plan("customers", reply(429, {}))
    assert make_client(server).post("/customers", {"id": "x"}) == {"ok": True}
    assert len(server.received) == 2


def test_other_4xx_raise_at_once_with_chargebee_fields(server):
    server.plan(
        "v2/customers",
        reply(
            400,
            {
                "message": "email : invalid email format",
                "type": "invalid_request",
                "api_error_code": "param_wrong_value",
                "param": "email",
                "error_code": "param_invalid",
                "http_status_code": 400,
            },
        ),
    )
    client = ApiClient(server.url + "/v2", auth=(API_KEY, ""), parse_error=chargebee_error)

    with pytest.raises(ApiError) as caught:
        client.post("/customers", {"email": "nope"}, idempotent=True)

    error = caught.value
    assert (error.status, error.code, error.param) == (400, "param_wrong_value", "email")
    assert error.message == "email : invalid email format"
    assert error.is_refusal
    assert str(error) == (
        "POST /customers: 400 param_wrong_value: email : invalid email format (param: email)"
    )
    assert len(server.received) == 1
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert server.received[0]["headers"]["Authorization"] == f"Basic {basic}"


def test_webshop_error_fields_and_a_body_that_is_not_json(server):
    server.plan(
        "orders",
        reply(422, {"error": {"code": "validation_failed", "message": "bad", "field": "email"}}),
        html(404, "<html>customer Jane Doe not here</html>"),
    )
    client = make_client(server)
    with pytest.raises(ApiError) as first:
        client.put("/orders", json={})
    with pytest.raises(ApiError) as second:
        client.delete("/orders")

    assert (first.value.code, first.value.message, first.value.param) == (
        "validation_failed",
        "bad",
        "email",
    )
    assert (second.value.status, second.value.code, second.value.message) == (
        404,
        "http_404",
        "NOT FOUND",
    )
    assert "Jane" not in str(second.value)  # bodies are not copied into errors


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "message": "id : cannot be blank",
                "api_error_code": "invalid_request",
                "error_param": "id",
            },
            ("invalid_request", "id : cannot be blank", "id"),
        ),
        ({"message": "x"}, None),
        ([1, 2], None),
    ],
)
def test_chargebee_error_parser(body, expected):
    assert chargebee_error(body) == (expected and tuple(expected))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"code": "not_found", "message": "no such order"}},
            ("not_found", "no such order", None),
        ),
        ({"error": "boom"}, None),
        ({"api_error_code": "x"}, None),
    ],
)
def test_webshop_error_parser(body, expected):
    assert webshop_error(body) == (expected and tuple(expected))


def test_the_api_key_never_reaches_errors_logs_or_repr(server, caplog):
    echo = {"message": f"key {API_KEY} is not valid", "api_error_code": "api_authentication_failed"}
    server.plan("customers", reply(500, echo), reply(401, {**echo, "param": API_KEY}))
    caplog.set_level(logging.DEBUG)
    client = make_client(server, auth=(API_KEY, ""), parse_error=chargebee_error)

    with pytest.raises(ApiError) as caught:
        client.get("/customers")

    error = caught.value
    assert (error.status, error.code) == (401, "api_authentication_failed")
    assert "***" in error.message
    assert "retry 1" in caplog.text  # the 500 was logged, scrubbed
    for text in (str(error), repr(error), error.message, error.param, caplog.text, repr(client)):
        assert API_KEY not in text


def test_connection_refused_gives_up_as_connection_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ApiClient(f"http://127.0.0.1:{port}", max_tries=3, backoff_base=0.01)

    with pytest.raises(ApiError) as caught:
        client.get("/customers")

    assert (caught.value.status, caught.value.code) == (None, "connection_error")
    assert client.calls() == {"GET customers": 3}


def test_every_request_goes_through_the_throttle(server):
    server.plan("items", *[slow(0.1)] * 6)
    throttle = Throttle(0, 2)
    client = make_client(server, throttle=throttle)

    threads = [threading.Thread(target=client.get, args=("/items",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert len(server.received) == 6
    assert server.most_running == 2
    assert throttle.requests_started == 6
