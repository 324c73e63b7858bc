"""Keep-alive end to end: both sandboxes serve HTTP/1.1 persistent connections and count the
TCP connections they accept (`connections` in `GET /_sandbox/stats`), and each plugin sends
its requests over a few of them, about one per request in flight, not one per request."""

from __future__ import annotations

import pytest
import requests

from sync_sandbox.process import RunningSandbox
from tests.harness import CHARGEBEE_KEY, WEBSHOP_KEY, TwoWaySync
from tests.plugin_forks import start_sandbox

#: target-chargebee's max_concurrency in the harness (TARGET_CHARGEBEE_MAX_CONCURRENCY), also
#: tap-chargebee's fixed concurrency (its Throttle).
MAX_CONCURRENCY = 4
#: Beyond one connection per request in flight: the stats request's own, and one spare (a
#: connection the server closed when idle, or a retry's).
SLACK = 2
#: A webshop large enough for several pages in each direction.
SHOP = ("--generate", "customers=250,products=15,orders=30", "--seed", "5")
PAGE_SIZE = 10  # tap-customwebshop's page_size: many pages, so many requests to reuse for


@pytest.mark.parametrize(
    ("kind", "path", "auth"),
    [
        ("chargebee", "/api/v2/customers", (CHARGEBEE_KEY, "")),
        ("customwebshop", "/api/v1/customers", None),
    ],
)
def test_a_sandbox_keeps_a_connection_alive_and_counts_it_once(tmp_path, kind, path, auth):
    key = CHARGEBEE_KEY if kind == "chargebee" else WEBSHOP_KEY
    sandbox = start_sandbox(kind, str(tmp_path / f"{kind}.db"), key)
    try:
        sandbox.reset_stats()
        with requests.Session() as session:
            session.headers["X-API-Key"] = WEBSHOP_KEY
            answers = [session.get(sandbox.url + path, auth=auth, timeout=10) for _ in range(10)]
        assert [answer.status_code for answer in answers] == [200] * 10
        assert all("close" not in answer.headers.get("Connection", "") for answer in answers)
        stats = sandbox.stats()
        assert stats["total"] == 10
        assert stats["connections"] == 2  # the session's one, and this stats request's own
    finally:
        sandbox.stop()


def test_faults_on_a_kept_alive_connection_break_only_that_connection(chargebee):
    """A reset (RST) and a dropped answer end the client's persistent connection; the server
    goes on serving the same session on a new one."""
    with requests.Session() as session:
        session.auth = (CHARGEBEE_KEY, "")
        assert session.get(chargebee.url + "/api/v2/customers", timeout=10).status_code == 200
        chargebee.set_knobs(reset_rate=1.0)
        with pytest.raises(requests.ConnectionError, match="reset by peer"):
            session.post(chargebee.url + "/api/v2/customers", data={"id": "c1"}, timeout=10)
        chargebee.set_knobs(reset_rate=0.0, drop_response_rate=1.0)
        with pytest.raises(requests.ConnectionError):
            session.post(chargebee.url + "/api/v2/customers", data={"id": "c2"}, timeout=10)
        chargebee.set_knobs(drop_response_rate=0.0)
        listed = session.get(chargebee.url + "/api/v2/customers", timeout=10).json()["list"]
    assert [entry["customer"]["id"] for entry in listed] == ["c2"]  # committed, answer lost
    assert chargebee.stats()["faults"] == {"reset": 1, "dropped_response": 1}


def _connections_and_requests(sandbox: RunningSandbox) -> tuple[int, int]:
    stats = sandbox.stats()
    return stats["connections"], stats["total"]


def test_each_plugin_reuses_its_connections(tmp_path):
    """One direction at a time, so each sandbox hears one plugin: the webshop tap and
    target-chargebee, then tap-chargebee and target-customwebshop (after a Chargebee-side edit
    of every customer, so that it writes one record per customer)."""
    shop = start_sandbox("customwebshop", str(tmp_path / "shop.db"), WEBSHOP_KEY, *SHOP)
    chargebee = start_sandbox("chargebee", str(tmp_path / "cb.db"), CHARGEBEE_KEY)
    try:
        sync = TwoWaySync(tmp_path, shop, chargebee)
        sync.env["TAP_CUSTOMWEBSHOP_PAGE_SIZE"] = str(PAGE_SIZE)
        measured: dict[str, tuple[int, int]] = {}

        sync.reset_counts()
        sync.run(blocks=("tap-customwebshop", "target-chargebee"))
        measured["tap-customwebshop"] = _connections_and_requests(shop)
        measured["target-chargebee"] = _connections_and_requests(chargebee)

        client = requests.Session()
        client.auth = (CHARGEBEE_KEY, "")
        customers = client.get(chargebee.url + "/api/v2/customers?limit=100", timeout=10).json()
        for entry in customers["list"]:
            customer = entry["customer"]
            edited = {"phone": "+49 30 5550" + customer["id"][-3:].rjust(3, "0")}
            client.post(f"{chargebee.url}/api/v2/customers/{customer['id']}", data=edited)
        sync.reset_counts()
        sync.run(blocks=("tap-chargebee", "target-customwebshop"))
        measured["tap-chargebee"] = _connections_and_requests(chargebee)
        measured["target-customwebshop"] = _connections_and_requests(shop)
    finally:
        shop.stop()
        chargebee.stop()

    print("TCP connections / requests per plugin:", measured)
    for plugin, (connections, total) in measured.items():
        # A connection per request would make `connections` total + 1 (the stats request's).
        assert connections < total, (plugin, connections, total)
        assert connections <= MAX_CONCURRENCY + SLACK, (plugin, connections, total)
