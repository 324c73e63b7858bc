"""The HTTP client both APIs are spoken through: throttled, retried only when that is safe,
counted per operation, and with errors that never carry the API key."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

import backoff
import certifi
import requests
import simplejson  # type: ignore[import-untyped]  # it has no type stubs
import urllib3
from singer_sdk.exceptions import ConfigValidationError
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from sync_common.throttle import Throttle

log = logging.getLogger(__name__)

#: Methods the server never applies twice; other methods are retried only when the caller
#: says the write is idempotent (an idempotency key, a client-chosen id).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: No answer came back: a timeout, a refused, reset or dropped connection, a body cut off
#: mid-transfer (a ProtocolError, as a reset), a TLS or proxy failure. What requests called
#: Timeout and ConnectionError. urllib3's own retries are off, so it raises these as they are.
_LOST = (ConnectTimeoutError, ReadTimeoutError, ProtocolError, SSLError, ProxyError)

#: 4xx statuses about the key, its rights, time or rate, not about the record sent.
_NOT_REFUSALS = frozenset({401, 403, 408, 429})


class ErrorFields(NamedTuple):
    """What an API's error body says: a short machine code, a message, the param it names."""

    code: str
    message: str
    param: str | None = None


#: Turns one API's parsed error JSON into ErrorFields; None when the body is not in its format.
ErrorParser = Callable[[Any], ErrorFields | None]


def chargebee_error(body: Any) -> ErrorFields | None:
    """Chargebee: `{"message", "type", "api_error_code", "param", ...}`."""
    if not isinstance(body, dict) or not body.get("api_error_code"):
        return None
    message = body.get("message") or body.get("error_msg") or ""
    param = body.get("param") or body.get("error_param")
    return ErrorFields(str(body["api_error_code"]), str(message), param and str(param))


def webshop_error(body: Any) -> ErrorFields | None:
    """Customwebshop: `{"error": {"code", "message", "field"}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not error.get("code"):
        return None
    field = error.get("field")
    return ErrorFields(str(error["code"]), str(error.get("message") or ""), field and str(field))


class ApiError(Exception):
    """A request that failed for good. `status` is None when no response came back
    (code `timeout` or `connection_error`)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        param: str | None = None,
        *,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.method = method
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.method} {self.path}: {self.status or 'no response'} {self.code}: "
        text += self.message + (f" (param: {self.param})" if self.param else "")
        return text

    @property
    def reason(self) -> str:
        """The far side's own words, for a dead letter or a report."""
        return f"{self.code}: {self.message}" + (f" (param: {self.param})" if self.param else "")

    @property
    def is_refusal(self) -> bool:
        """The server refused this request for its content (a 4xx that is about the record,
        not about the key, its permissions or the rate limit): report it, do not retry it."""
        status = self.status or 0
        return 400 <= status < 500 and status not in _NOT_REFUSALS


class _Retry(Exception):  # noqa: N818  (a signal to backoff, never seen by callers)
    def __init__(self, error: ApiError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class ApiClient:
    """A pool of keep-alive urllib3 connections to `base_url`. Every attempt goes through the
    throttle. urllib3 directly, not requests: half the client's CPU per request.

    Retried: 429 always (the server did not act on it); 5xx, timeouts and dropped connections
    for GET, and for a write only when the caller passes `idempotent=True`, because a write
    that reached the server before the failure could otherwise be applied twice. Waits follow
    `Retry-After` (seconds) when the server sends it, else exponential with full jitter, within
    `max_tries` attempts and `max_time` seconds. Other 4xx raise at once, and so does a 3xx:
    redirects are not followed.

    `auth` (a `(user, password)` tuple, sent as Basic auth) and `auth_headers` are sent with
    every request; their values are scrubbed from every error message.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        auth_headers: Mapping[str, str] | None = None,
        parse_error: ErrorParser | None = None,
        throttle: Throttle | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_tries: int = 8,
        max_time: float = 300.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        user_agent: str = "webshop-chargebee-sync",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.throttle = throttle or Throttle(0, 0)
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._parse_error = parse_error or (lambda body: None)
        self._backoff_base = backoff_base
        self._max_time = max_time
        self._backoff_cap = backoff_cap
        self._secrets = _secret_values(auth, auth_headers)
        # what requests sent: compressed answers welcome, JSON, our name, then the auth
        # (header names are case-insensitive here, so a later one replaces an earlier one)
        self._headers = urllib3.HTTPHeaderDict(urllib3.make_headers(accept_encoding=True))
        self._headers.update({"Accept": "application/json", "User-Agent": user_agent})
        if auth is not None:
            user, password = auth
            self._headers.update(urllib3.make_headers(basic_auth=f"{user}:{password}"))
        self._headers.update(auth_headers or {})
        self._pool = _connection_pool(self.base_url, max(10, self.throttle.max_concurrency))
        self._counts_lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self.retries = 0
        self._send = backoff.on_exception(
            # backoff's stubs type the wait generator as sent None; it is sent each exception
            self._waits,  # type: ignore[arg-type]
            _Retry,
            max_tries=max_tries,
            max_time=max_time,
            jitter=None,  # applied in _waits, so that Retry-After is used as given
            on_backoff=self._log_retry,
            logger=None,  # backoff's own log lines would print the call's arguments
        )(self._attempt)

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r})"

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.clear()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        operation: str | None = None,
        idempotent: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request (with retries) and return the 2xx response (its body read), or
        raise ApiError. `params` go in the query string; the body is `data` form-encoded (a
        mapping: Chargebee's format) or as it is (str, bytes), else `json`. `operation` names
        the call in `calls()`; it defaults to the path's first segment."""
        method = method.upper()
        url = f"{self.base_url}/{path.lstrip('/')}"
        if query := _form(params or {}):
            url += ("&" if "?" in url else "?") + query
        label = f"{method} {operation or _first_segment(path)}"
        retry_any_failure = method in SAFE_METHODS or idempotent
        all_headers = self._headers.copy()
        all_headers.update(headers or {})  # replaces a default of the same name, in any case
        body, content_type = _encode_body(data, json)
        if content_type and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = content_type
        try:
            return self._send(method, url, path, label, retry_any_failure, body, all_headers)
        except _Retry as retry:  # tries or time used up
            log.warning("%s: giving up: %s", label, retry.error)
            raise retry.error from None

    def get(self, path: str, params: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return self._json("GET", path, params=params, **options)

    def post(self, path: str, data: Any = None, **options: Any) -> Any:
        return self._json("POST", path, data=data, **options)

    def put(self, path: str, **options: Any) -> Any:
        return self._json("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Any:
        return self._json("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Any:
        return self._json("DELETE", path, **options)

    def calls(self) -> dict[str, int]:
        """HTTP requests sent so far (retries included) per `METHOD operation`."""
        with self._counts_lock:
            return dict(sorted(self._calls.items()))

    def _json(self, method: str, path: str, **options: Any) -> Any:
        """The 2xx answer's JSON body; None for an empty one (204)."""
        response = self.request(method, path, **options)
        if not response.data:
            return None
        try:
            return json.loads(response.data)
        except ValueError:  # UnicodeDecodeError too
            raise ApiError(
                response.status,
                "invalid_response",
                "the response body is not JSON",
                method=method.upper(),
                path=path,
            ) from None

    # ---------------------------------------------------------------- one attempt

    def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        label: str,
        retry_any_failure: bool,
        body: bytes | str | None,
        headers: urllib3.HTTPHeaderDict,
    ) -> urllib3.BaseHTTPResponse:
        with self._counts_lock:
            self._calls[label] += 1
        try:
            with self.throttle.slot():
                # the body is read here (preloaded), so that its loss is a failed attempt too;
                # redirect=False: a 3xx comes back as it is, below (an error)
                response = self._pool.urlopen(
                    method, url, body=body, headers=headers, timeout=self.timeout,
                    redirect=False,
                )  # fmt: skip
        except _LOST as exc:
            error = self._transport_error(exc, method, path)
            # A connect timeout means the request never left: safe to repeat even for a write.
            if retry_any_failure or _connect_timed_out(exc):
                raise _Retry(error) from None
            raise error from None
        if 200 <= response.status < 300:
            return response
        error = self._http_error(response, method, path)
        retry_after = _retry_after(response)
        if response.status == 429:
            if retry_after is not None:
                self.throttle.pause(retry_after)  # everyone waits, not only this caller
                if retry_after > self._max_time:  # longer than we may wait: give up now
                    raise error
            raise _Retry(error, retry_after)
        if retry_any_failure and response.status >= 500:
            raise _Retry(error, retry_after)
        raise error

    def _http_error(self, response: urllib3.BaseHTTPResponse, method: str, path: str) -> ApiError:
        try:
            fields = self._parse_error(json.loads(response.data))
        except ValueError:  # not JSON: the body is not shown, it may hold anything
            fields = None
        if fields is None:
            fields = ErrorFields(f"http_{response.status}", response.reason or "")
        return ApiError(
            response.status,
            fields.code,
            self._scrub(fields.message),
            fields.param and self._scrub(fields.param),
            method=method,
            path=path,
        )

    def _transport_error(self, exc: Exception, method: str, path: str) -> ApiError:
        if _connect_timed_out(exc):
            code, message = "timeout", f"could not connect within {self.timeout.connect_timeout} s"
        elif isinstance(exc, ReadTimeoutError):
            code, message = "timeout", f"no answer within {self.timeout.read_timeout} s"
        else:
            code, message = "connection_error", f"connection failed ({_innermost(exc)})"
        return ApiError(None, code, message, method=method, path=path)

    # ---------------------------------------------------------------- retry policy

    def _waits(self) -> Generator[float | None, _Retry, None]:
        """backoff sends each failure in; Retry-After wins, else exponential with jitter."""
        exponential = backoff.expo(factor=self._backoff_base, max_value=self._backoff_cap)
        next(exponential)  # backoff's generators start with a priming step
        retry = yield None
        while True:
            step = next(exponential)
            wait = retry.retry_after
            retry = yield backoff.full_jitter(step) if wait is None else wait

    def _log_retry(self, details: Mapping[str, Any]) -> None:
        with self._counts_lock:
            self.retries += 1
        error = details["exception"].error
        log.warning("%s; retry %d in %.1f s", error, details["tries"], details["wait"])

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _connection_pool(base_url: str, maxsize: int) -> urllib3.PoolManager:
    """Keep-alive connections to `base_url`, up to `maxsize` per host, through the proxy the
    environment names for it (`HTTPS_PROXY`, `NO_PROXY`, ...), trusting the CA bundle it names
    (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`) else certifi's, as requests would; read once."""
    ca_bundle = _environment_ca_bundle() or certifi.where()
    # one TLS context for every connection (certificate and host name verified): loading the
    # bundle per new connection, as urllib3 does when given its path, costs ~10 ms each
    tls = urllib3.util.create_urllib3_context()
    if os.path.isdir(ca_bundle):
        tls.load_verify_locations(capath=ca_bundle)
    else:
        tls.load_verify_locations(cafile=ca_bundle)
    settings: dict[str, Any] = dict(
        maxsize=maxsize,
        block=False,  # as requests: past maxsize, a connection for this request only
        ssl_context=tls,
        retries=False,  # only ApiClient retries, and counts each attempt
    )
    proxies = requests.utils.get_environ_proxies(base_url)  # {} when NO_PROXY names it
    proxy = requests.utils.select_proxy(base_url, proxies)
    if not proxy:
        return urllib3.PoolManager(**settings)
    proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as requests does

        return SOCKSProxyManager(proxy, **settings)
    user, password = requests.utils.get_auth_from_url(proxy)
    auth = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
    return urllib3.ProxyManager(proxy, proxy_headers=auth, proxy_ssl_context=tls, **settings)


def environment_settings(session: requests.Session, base_url: str) -> None:
    """Proxy and CA settings from the environment (`HTTPS_PROXY`, `REQUESTS_CA_BUNDLE`, ...)
    put on a requests `session` (tap-chargebee's), read once: requests would read them again
    on every call (~15 % of the client's CPU per request, bench/README.md), and not at all for
    `session.send`."""
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    session.verify = _environment_ca_bundle() or True
    session.trust_env = False


def _environment_ca_bundle() -> str | None:
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def preflight(api: ApiClient, path: str, service: str, url_setting: str = "api_url") -> None:
    """One small read at start, so a wrong key or URL fails now, naming the setting, rather
    than mid-run. `service` names the far side in the message ("Chargebee", "the webshop")."""
    try:
        api.get(path, {"limit": 1})
    except ApiError as exc:
        problem = {
            None: f"{url_setting}: cannot reach {service} at {api.base_url} ({exc.message})",
            401: f"api_key: {service} refused the key ({exc.code})",
            403: f"api_key: the key may not use this API ({exc.code}: {exc.message})",
            404: f"{url_setting}: {api.base_url} is not the base URL of {service}'s API (404)",
        }.get(exc.status)
        if problem is None:
            raise
        raise ConfigValidationError("Config validation failed", errors=[problem]) from None


def _form(fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """`fields` URL-encoded as requests does it, for a query string or a form body: a list
    value as the key repeated (`a=1&a=2`), None values left out."""
    pairs: list[tuple[str, Any]] = []
    for key, values in fields.items() if isinstance(fields, Mapping) else fields:
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            values = [values]
        pairs.extend((key, value) for value in values if value is not None)
    return urlencode(pairs)


def _encode_body(data: Any, json_value: Any) -> tuple[bytes | str | None, str | None]:
    """The body and its content type, as requests makes them: `data` form-encoded (a mapping
    or pairs), or as it is (str, bytes: no content type), else `json_value` as JSON."""
    if data:
        if isinstance(data, str | bytes):
            return data, None
        return _form(data).encode(), "application/x-www-form-urlencoded"
    if json_value is not None:
        # simplejson, as requests used (it does when installed; singer-sdk installs it): it
        # writes the Decimal numbers the targets read from Singer messages as JSON numbers
        return simplejson.dumps(json_value, allow_nan=False).encode(), "application/json"
    return None, None


def _connect_timed_out(exc: Exception) -> bool:
    """A connect timeout (the request never left). urllib3 derives a refused connection
    (NewConnectionError) from ConnectTimeoutError, but that is a connection error."""
    return isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError)


def _secret_values(
    auth: tuple[str, str] | None, auth_headers: Mapping[str, str] | None
) -> list[str]:
    values: list[object] = [*(auth_headers or {}).values(), *(auth or ())]
    # Short strings (an empty Basic password) would scrub ordinary words.
    return sorted({str(v) for v in values if v and len(str(v)) >= 4}, key=len, reverse=True)


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    try:
        return max(float(response.headers["Retry-After"]), 0.0)
    except (KeyError, ValueError):  # absent, or an HTTP date: fall back to backoff
        return None


def _first_segment(path: str) -> str:
    return path.strip("/").split("/", 1)[0].split("?", 1)[0] or "/"


def _innermost(exc: BaseException) -> str:
    """The name of the root cause inside urllib3's wrappers, e.g. ConnectionResetError:
    short, and free of URLs and query strings."""
    for _ in range(10):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            last = exc.args[-1] if exc.args else None
            inner = last if isinstance(last, BaseException) else None
        if inner is None:
            break
        exc = inner
    return type(exc).__name__
