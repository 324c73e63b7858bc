"""The Chargebee API v2 client both Chargebee plugins use: Basic auth with the key, Chargebee's
error JSON, the site's rate limits, and an idempotency key on every write."""

from __future__ import annotations

from typing import Any

from sync_common.http import ApiClient, chargebee_error
from sync_common.throttle import Throttle

IDEMPOTENCY_HEADER = "chargebee-idempotency-key"


def chargebee_base_url(site: str | None, api_url: str | None) -> str:
    """`api_url` when given (the emulator, a proxy), else the site's own API."""
    if api_url:
        return api_url.rstrip("/")
    return f"https://{site}.chargebee.com/api/v2"


class ChargebeeClient(ApiClient):
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        requests_per_minute: int = 150,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_tries: int = 8,
    ) -> None:
        super().__init__(
            base_url,
            auth=(api_key, ""),  # the key is the Basic user name, the password is empty
            parse_error=chargebee_error,
            throttle=Throttle(requests_per_minute, max_concurrency),
            read_timeout=timeout,
            max_tries=max_tries,
        )

    # narrower than ApiClient.post on purpose: every Chargebee write names its key
    def post(  # type: ignore[override]
        self, path: str, data: Any = None, *, idempotency_key: str, **options: Any
    ) -> Any:
        """A write: the key makes a retry after a lost answer safe, so it is retried."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key}
        return super().post(path, data, headers=headers, idempotent=True, **options)
