"""tap-customwebshop against the real webshop sandbox: singer-sdk's standard tap tests,
incremental runs through the CLI, Retry-After on 429, retries on 5xx, and clear failures
(wrong key, wrong path, truncated page)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from sync_common.links import LinkedSystems, LinkStore
from sync_sandbox.process import RunningSandbox
from tap_customwebshop.tap import TapCustomwebshop
from tests.harness import SharedSandbox
from tests.plugin_forks import start_sandbox

KEY = "tap_test_webshop_key_0123456789"
STREAMS = ("customers", "products", "orders")
TAP = str(Path(sys.executable).parent / "tap-customwebshop")


GENERATED = ("--generate", "customers=30,products=20,orders=40", "--seed", "1")


def start_generated(directory: str | Path) -> RunningSandbox:
    """A webshop sandbox with the same generated data every time."""
    return start_sandbox("customwebshop", str(Path(directory) / "webshop.db"), KEY, *GENERATED)


def config_for(sandbox: RunningSandbox, **extra) -> dict:
    return {"api_url": sandbox.url + "/api/v1", "api_key": KEY, **extra}


# The standard tests need their config when the class is built, at import: so this module's
# one sandbox has its address from then, and starts with the module's first test.
SHARED = SharedSandbox("customwebshop", KEY, *GENERATED)
shared_sandbox = SHARED.started()

TestTapCustomwebshop = get_tap_test_class(
    TapCustomwebshop,
    config=config_for(SHARED, page_size=7),  # several pages per stream
    suite_config=SuiteConfig(max_records_limit=None),
)


@pytest.fixture
def generated(tmp_path) -> RunningSandbox:
    sandbox = start_generated(tmp_path)
    yield sandbox
    sandbox.stop()


def run_tap(config: dict, tmp_path: Path, *args: str) -> tuple[list[dict], str, int]:
    """Run the tap's CLI; return its Singer messages, its stderr and its exit code."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    done = subprocess.run(
        [TAP, "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return messages, done.stderr, done.returncode


def records(messages: list[dict], stream: str) -> list[dict]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def final_state(messages: list[dict]) -> dict:
    return [m["value"] for m in messages if m["type"] == "STATE"][-1]


def api_ids(sandbox: RunningSandbox, stream: str) -> list[int]:
    """Every id of one resource, read straight from the API."""
    ids, cursor = [], None
    while True:
        page = requests.get(
            f"{sandbox.url}/api/v1/{stream}",
            params={"limit": 500, "cursor": cursor},
            headers={"X-API-Key": KEY},
            timeout=10,
        ).json()
        ids += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def test_records_with_open_dead_letters_come_first_and_leave_the_bookmark(tmp_path):
    """Retried records (sync_common.retry): read by id before each stream's own, once per
    record, only this tap's side; one gone from the source is logged, not emitted; the
    bookmark stays; retry_dead_letters: false reads only what changed."""
    first, stderr, code = run_tap(config_for(SHARED), tmp_path)
    assert code == 0, stderr
    state = final_state(first)
    oldest, product = records(first, "customers")[0], records(first, "products")[0]
    chargebee_url = "http://127.0.0.1:9/api/v2"  # never called: it names the pair only
    url = f"sqlite:///{tmp_path / 'links.db'}"
    store = LinkStore(url, systems=LinkedSystems.of(SHARED.url + "/api/v1", chargebee_url))
    for stream, key, tap_stream in (
        ("customers", str(oldest["id"]), "customers"),
        ("customers", "99999", "customers"),  # gone from the webshop
        ("items", str(product["id"]), "products"),
        ("item_prices", str(product["id"]), "products"),
    ):
        store.add_dead_letter(
            stream, key, "refused", {}, source="webshop", source_stream=tap_stream
        )
    store.add_dead_letter("customers", str(oldest["id"] + 1), "x", {}, source="chargebee")
    store.close()
    (tmp_path / "state.json").write_text(json.dumps(state))
    config = config_for(SHARED, link_store_url=url, chargebee_api_url=chargebee_url)

    second, stderr, code = run_tap(config, tmp_path, "--state", str(tmp_path / "state.json"))
    assert code == 0, stderr
    customers = [row["id"] for row in records(second, "customers")]
    assert customers[0] == oldest["id"] and oldest["id"] + 1 not in customers
    assert [row["id"] for row in records(second, "products")].count(product["id"]) == 1
    assert "customers 99999 has an open dead letter but is gone from the source" in stderr
    assert final_state(second)["bookmarks"] == state["bookmarks"]

    off, stderr, code = run_tap(
        {**config, "retry_dead_letters": False}, tmp_path, "--state", str(tmp_path / "state.json")
    )
    assert code == 0, stderr
    assert oldest["id"] not in [row["id"] for row in records(off, "customers")]


def status_count(sandbox: RunningSandbox, status: int) -> int:
    operations = sandbox.stats()["operations"].values()
    return sum(by_status.get(str(status), 0) for by_status in operations)


def test_incremental_run_emits_only_what_changed(generated, tmp_path):
    first, stderr, code = run_tap(config_for(generated, page_size=10), tmp_path)
    assert code == 0, stderr
    state = final_state(first)
    for stream in STREAMS:
        rows = records(first, stream)
        assert sorted(row["id"] for row in rows) == sorted(api_ids(generated, stream))
        bookmark = state["bookmarks"][stream]
        assert bookmark["replication_key"] == "updated_at"
        assert bookmark["replication_key_value"] == rows[-1]["updated_at"]
    boundary = {stream: records(first, stream)[-1]["id"] for stream in STREAMS}

    edited = next(row for row in records(first, "customers") if row["deleted_at"] is None)
    response = requests.patch(
        f"{generated.url}/api/v1/customers/{edited['id']}",
        json={"company": "Edited Between Runs GmbH"},
        headers={"X-API-Key": KEY},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    (tmp_path / "state.json").write_text(json.dumps(state))
    second, stderr, code = run_tap(
        config_for(generated, page_size=10), tmp_path, "--state", str(tmp_path / "state.json")
    )
    assert code == 0, stderr
    customers = {row["id"]: row for row in records(second, "customers")}
    # updated_since is inclusive, so the last record of run 1 may come back once more
    assert {edited["id"]} <= customers.keys() <= {edited["id"], boundary["customers"]}
    assert customers[edited["id"]]["company"] == "Edited Between Runs GmbH"
    assert customers[edited["id"]]["version"] > edited["version"]
    for stream in ("products", "orders"):
        assert {row["id"] for row in records(second, stream)} <= {boundary[stream]}
    new_bookmark = final_state(second)["bookmarks"]["customers"]["replication_key_value"]
    assert new_bookmark == customers[edited["id"]]["updated_at"]


def test_waits_as_long_as_retry_after_says_and_emits_every_record_once(generated, tmp_path):
    # page_size 25: 2 + 1 + 2 requests; a limit of 3 per 5 s window makes the 4th wait.
    # Retrying earlier than Retry-After says would be refused again and show up as more 429s.
    generated.set_knobs(requests_per_minute=3, rate_window_seconds=5)
    messages, stderr, code = run_tap(config_for(generated, page_size=25), tmp_path)
    assert code == 0, stderr
    refused = status_count(generated, 429)
    generated.set_knobs(requests_per_minute=0)
    assert 1 <= refused <= 2, f"{refused} requests were refused with 429"
    for stream in STREAMS:
        ids = [row["id"] for row in records(messages, stream)]
        assert len(ids) == len(set(ids)), f"{stream}: a record was emitted twice"
        assert sorted(ids) == sorted(api_ids(generated, stream))


def test_retries_server_errors_and_emits_every_record_once(generated, tmp_path):
    generated.set_knobs(error_rate=0.3, seed=10)  # 5 faults, never two in a row
    messages, stderr, code = run_tap(config_for(generated, page_size=25), tmp_path)
    generated.set_knobs(error_rate=0.0)
    assert code == 0, stderr
    assert sum(status_count(generated, status) for status in (500, 502, 503)) > 0
    for stream in STREAMS:
        ids = [row["id"] for row in records(messages, stream)]
        assert sorted(ids) == sorted(set(api_ids(generated, stream)))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"api_key": "wrong_key_must_not_be_logged_42"}, "401"),
        ({"customers_path": "/no-such-resource"}, "404"),
    ],
)
def test_client_errors_fail_clearly_without_the_key(generated, tmp_path, change, expected):
    config = {"api_url": generated.url + "/api/v1", "api_key": KEY, **change}
    messages, stderr, code = run_tap(config, tmp_path)
    assert code != 0
    assert not [m for m in messages if m["type"] == "RECORD"]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("singer_sdk.exceptions.FatalAPIError: " + expected), error
    assert "for GET /api/v1/" in error
    output = stderr + json.dumps(messages)
    assert config["api_key"] not in output
    assert "X-API-Key" not in output


class TruncatingProxy(ThreadingHTTPServer):
    """Passes requests to the sandbox, but cuts the body of the `cut`-th answer in half
    (with a matching Content-Length, as a broken upstream would)."""

    def __init__(self, upstream: str, cut: int):
        self.upstream, self.cut, self.seen = upstream, cut, 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: TruncatingProxy

    def do_GET(self):
        upstream = requests.get(
            self.server.upstream + self.path,
            headers={"X-API-Key": self.headers["X-API-Key"]},
            timeout=10,
        )
        self.server.seen += 1
        body = upstream.content
        if self.server.seen == self.server.cut:
            body = body[: len(body) // 2]
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_truncated_page_fails_and_state_does_not_pass_it(generated, tmp_path):
    proxy = TruncatingProxy(generated.url, cut=2)  # the second page of customers
    try:
        messages, stderr, code = run_tap(
            {"api_url": proxy.url + "/api/v1", "api_key": KEY, "page_size": 10}, tmp_path
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert code != 0
    assert "GET /api/v1/customers returned a malformed or truncated page" in stderr
    first_page = api_ids(generated, "customers")[:10]
    assert [row["id"] for row in records(messages, "customers")] == first_page
    assert not [m for m in messages if m["type"] == "STATE"], "no bookmark may be written"
