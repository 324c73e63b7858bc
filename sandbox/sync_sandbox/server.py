"""What both sandboxes share: API-key check, rate limits, injected faults, latency, request
counts, and serving a Flask app on loopback with HTTP/1.1 keep-alive, as Chargebee does.

Each sandbox builds its Flask app, then calls `install(app, ...)` once. The hooks run before
every API request (auth, limits, faults) and after it (counts, "commit then drop the response").
Paths under `/_sandbox/` are the inspection and control endpoints; they skip all of that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from cheroot import wsgi
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected

CONTROL_PREFIX = "/_sandbox/"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SOCKET_KEY = "sync_sandbox.socket"  # the WSGI environ entry with the connection's socket
#: Requests served at once. Cheroot's pool is fixed (idle keep-alive connections hold no
#: thread): more than any test or bench has in flight, hung requests included.
THREADS = 64
#: Seconds an idle keep-alive connection is kept (and a request may take to arrive).
IDLE_SECONDS = 60


@dataclass
class Knobs:
    """Run-time behaviour of a sandbox; every field is a CLI flag and settable via
    `POST /_sandbox/knobs` with a JSON object of the fields to change."""

    requests_per_minute: int = 0  # per rolling window; 0 = unlimited
    rate_window_seconds: float = 60.0  # the window's length (shorter in tests)
    max_concurrency: int = 0  # requests in flight at once; 0 = unlimited
    latency_ms: float = 0.0  # added to every API request
    error_rate: float = 0.0  # share of requests answered with a 5xx before doing anything
    timeout_rate: float = 0.0  # share of requests that hang for `hang_seconds`, then drop
    drop_response_rate: float = 0.0  # share of writes committed, then the connection closed
    hang_seconds: float = 30.0
    rate_limited_rate: float = 0.0  # share of requests answered 429 (a storm), doing nothing
    retry_after: bool = True  # whether 429 answers carry Retry-After
    reset_rate: float = 0.0  # share of requests whose connection is reset before anything
    truncate_rate: float = 0.0  # share of successful GETs whose JSON body is cut in half
    seed: int | None = None  # makes the fault draws (and generated data) repeatable

    def update(self, changes: dict) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}; known: {sorted(known)}")
            if known[name] == "bool" and not isinstance(value, bool):  # "false" is truthy
                raise ValueError(f"knob {name!r} takes true or false, not {value!r}")
            setattr(self, name, value)


class RateWindow:
    """Rolling request counter: says whether one more request fits, and if not, in how many
    seconds the oldest one leaves the window."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self, limit: int, window: float) -> float:
        """Return 0 and count the request if it fits, else the seconds to wait (nothing counted)."""
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] >= window:
                self._times.popleft()
            if limit and len(self._times) >= limit:
                return window - (now - self._times[0])
            self._times.append(now)
            return 0.0


@dataclass
class Refusal:
    """How a sandbox words a refusal in its own API's error format."""

    status: int
    code: str
    message: str
    retry_after: float | None = None


ErrorRenderer = Callable[[Refusal], Response]
Authenticator = Callable[[], bool]


class Sandbox:
    """The shared behaviour installed on one Flask app. With `clear_state`, `POST
    /_sandbox/reset` empties the sandbox (that callable) and its counts and rate window."""

    def __init__(
        self,
        app: Flask,
        knobs: Knobs,
        authenticate: Authenticator,
        render: ErrorRenderer,
        clear_state: Callable[[], None] | None = None,
    ):
        self.app = app
        self.knobs = knobs
        self.authenticate = authenticate
        self.render = render
        self.window = RateWindow()
        self.counts: Counter[tuple[str, int]] = Counter()
        self.faults: Counter[str] = Counter()  # injected faults by kind
        self.in_flight = 0
        # TCP connections accepted, as the server counts them (`serve` sets it), and the count
        # at the last stats reset.
        self.connections_accepted: Callable[[], int] = lambda: 0
        self._connections_before = 0
        self._lock = threading.Lock()
        self._random = random.Random(knobs.seed)
        app.extensions["sync_sandbox"] = self
        app.before_request(self._before)
        app.after_request(self._after)
        app.teardown_request(self._teardown)
        app.add_url_rule(CONTROL_PREFIX + "stats", "_sandbox.stats", self._stats, methods=["GET"])
        app.add_url_rule(
            CONTROL_PREFIX + "stats/reset", "_sandbox.reset", self._reset, methods=["POST"]
        )
        app.add_url_rule(
            CONTROL_PREFIX + "knobs", "_sandbox.knobs", self._knobs, methods=["GET", "POST"]
        )
        if clear_state is not None:
            self.clear_state = clear_state
            app.add_url_rule(
                CONTROL_PREFIX + "reset", "_sandbox.reset_all", self._reset_all, methods=["POST"]
            )

    def _draw(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self._random.random() < share

    def _before(self) -> Response | None:
        if request.path.startswith(CONTROL_PREFIX):
            return None
        g.counted_in_flight = False
        if not _whole_body_arrived():
            _drop_connection()  # the client is gone: nobody reads an answer
            return Response(status=400)
        if not self.authenticate():
            return self.render(Refusal(401, "unauthorized", "missing or invalid API key"))
        if self._draw(self.knobs.reset_rate):
            self._fault("reset")
            _reset_connection()
            return Response(status=500)  # never reaches the client: the socket is gone
        wait = self.window.admit(self.knobs.requests_per_minute, self.knobs.rate_window_seconds)
        if not wait and self._draw(self.knobs.rate_limited_rate):
            wait = 1.0
        if wait:
            return self._rate_limited("request rate limit exceeded", wait)
        with self._lock:
            if self.knobs.max_concurrency and self.in_flight >= self.knobs.max_concurrency:
                busy = True
            else:
                busy = False
                self.in_flight += 1
                g.counted_in_flight = True
        if busy:
            return self._rate_limited("too many concurrent requests", 1)
        if self.knobs.latency_ms:
            time.sleep(self.knobs.latency_ms / 1000)
        if self._draw(self.knobs.timeout_rate):
            self._fault("timeout")
            time.sleep(self.knobs.hang_seconds)
            _drop_connection()
            return Response(status=500)  # never reaches the client: the socket is gone
        if self._draw(self.knobs.error_rate):
            status = self._random.choice([500, 502, 503])
            self._fault("server_error")
            return self.render(Refusal(status, "injected_fault", "injected server error"))
        return None

    def _fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def _rate_limited(self, message: str, wait: float) -> Response:
        self._fault("rate_limited")
        retry_after = wait if self.knobs.retry_after else None
        return self.render(Refusal(429, "rate_limited", message, retry_after=retry_after))

    def _after(self, response: Response) -> Response:
        if request.path.startswith(CONTROL_PREFIX):
            return response
        with self._lock:
            self.counts[(request.endpoint or "unknown", response.status_code)] += 1
        if (
            request.method in WRITE_METHODS
            and response.status_code < 300
            and self._draw(self.knobs.drop_response_rate)
        ):
            self._fault("dropped_response")
            _drop_connection()  # the write is committed; the client never hears of it
        elif (
            request.method == "GET"
            and response.status_code == 200
            and self._draw(self.knobs.truncate_rate)
        ):
            self._fault("truncated")
            data = response.get_data()
            response.set_data(data[: len(data) // 2])  # a complete answer with half a body
        return response

    def _teardown(self, _exc: BaseException | None) -> None:
        if g.get("counted_in_flight"):
            with self._lock:
                self.in_flight -= 1

    def _stats(self) -> Response:
        with self._lock:
            by_operation: dict[str, dict[str, int]] = {}
            for (operation, status), n in sorted(self.counts.items()):
                by_operation.setdefault(operation, {})[str(status)] = n
            total = sum(self.counts.values())
            faults = dict(sorted(self.faults.items()))
            connections = self.connections_accepted() - self._connections_before
        return jsonify(
            {
                "total": total,
                "operations": by_operation,
                "faults": faults,
                "connections": connections,
                "in_flight": self.in_flight,
            }
        )

    def _reset(self) -> Response:
        with self._lock:
            self.counts.clear()
            self.faults.clear()
            # The connection asking for the reset is already counted: it is not counted again.
            self._connections_before = self.connections_accepted()
        return self._stats()

    def _reset_all(self) -> Response:
        """Empty state, counts and rate window; the knobs stay as they are."""
        self.clear_state()
        self.window = RateWindow()
        return self._reset()

    def _knobs(self) -> Response | tuple[Response, int]:
        if request.method == "POST":
            try:
                self.knobs.update(request.get_json(force=True) or {})
            except (ValueError, TypeError) as exc:
                return jsonify({"error": str(exc)}), 400
            if "seed" in (request.get_json(silent=True) or {}):
                self._random.seed(self.knobs.seed)
        return jsonify(asdict(self.knobs))


def _whole_body_arrived() -> bool:
    """Whether the request's body came whole: a client killed while sending leaves a part,
    which an HTTP server does not act on (werkzeug would parse the part as the form, and a
    write with the rest missing would be answered, and kept for its idempotency key). The
    body stays cached for the form."""
    expected = request.content_length
    if not expected:
        return True
    try:
        return len(request.get_data(cache=True)) >= expected
    except ClientDisconnected:
        return False


def _drop_connection() -> None:
    """Close the client's socket without an answer, as a crashed proxy or lost packet would."""
    sock = request.environ.get(SOCKET_KEY)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _reset_connection() -> None:
    """Abort the client's connection with a TCP reset (RST), as a crashed peer would."""
    sock = request.environ.get(SOCKET_KEY)
    if sock is not None:
        request.get_data()  # the body is on the wire already: read, the server has none to drain
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Closing the connection's only descriptor with linger 0 sends the RST. An
            # unconnected socket takes over the descriptor number, so the server's handle stays
            # valid: its writes fail as on a lost connection and it closes it as usual.
            with socket.socket() as placeholder:
                os.dup2(placeholder.fileno(), sock.fileno())


def add_common_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """The flags every sandbox takes: where to listen, where to keep state, the key, the knobs."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    parser.add_argument("--db", required=True, help="SQLite file that keeps the state")
    parser.add_argument("--api-key", required=True, help="the only API key accepted")
    for f in fields(Knobs):
        flag = "--" + f.name.replace("_", "-")
        kinds: dict[str, Callable[[str], object]] = {
            "int": int, "float": float, "int | None": int, "bool": _boolean,
        }  # fmt: skip
        kind = kinds.get(str(f.type), float)
        parser.add_argument(flag, type=kind, default=f.default, help=f"knob (default {f.default})")


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")
    return value in ("1", "true", "yes", "on")


def knobs_from_arguments(args: argparse.Namespace) -> Knobs:
    return Knobs(**{f.name: getattr(args, f.name) for f in fields(Knobs)})


class _Gateway(wsgi.Gateway_10):
    """Cheroot's WSGI 1.0 gateway, with the connection's socket in the environ: the fault knobs
    drop or reset that connection."""

    def get_environ(self) -> dict:  # type: ignore[override]  # cheroot's stub says None
        environ = super().get_environ()
        environ[SOCKET_KEY] = self.req.conn.socket
        return environ


def serve(app: Flask, host: str, port: int, name: str) -> None:
    """Serve until SIGTERM/SIGINT, with HTTP/1.1 persistent connections (cheroot; werkzeug's
    server closes every one). Prints `READY <url>` once listening, so a parent process that
    passed port 0 can read the port chosen."""
    server = wsgi.Server(
        (host, port), app, numthreads=THREADS, timeout=IDLE_SECONDS, shutdown_timeout=1
    )
    server.gateway = _Gateway
    server.keep_alive_conn_limit = 1000  # idle connections kept (cheroot's 10 is below a pool)
    server.stats["Enabled"] = True  # its "Accepts" count is the TCP connections accepted
    sandbox: Sandbox = app.extensions["sync_sandbox"]
    sandbox.connections_accepted = lambda: server.stats["Accepts"]

    def stop(_signum, _frame):
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.prepare()  # binds: with port 0 the port is chosen here
    print(f"READY http://{host}:{server.bind_addr[1]} ({name})", flush=True)
    server.serve()
    sys.stdout.flush()
    # Cheroot's workers are not daemon threads: a request still hanging (the timeout knob)
    # would keep the process alive for its `hang_seconds`. Every write is committed already.
    os._exit(0)
