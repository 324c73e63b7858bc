"""What the end-to-end tests share: an isolated run against the sandboxes (`Sync`,
`TwoWaySync`: the direct runner of tests/direct_run.py, or `meltano run` itself for a test
marked `meltano`), the official chargebee SDK as the judge of what Chargebee holds, and the
webshop records passed through meltano.yml's maps as what it must hold."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chargebee
import psutil
import pytest
import requests
import yaml
from singer_sdk.mapper import PluginMapper

from sync_common.links import LinkedSystems
from sync_sandbox.process import RunningSandbox
from target_chargebee.params import CONTROL_FIELDS, remote_value, to_params, wire_value
from tests import direct_run
from tests.direct_run import BIN, REPO, isolated_meltano_env, known_catalogs
from tests.plugin_forks import start_sandbox

WEBSHOP_KEY = "test_webshop_key_0123456789"
CHARGEBEE_KEY = "test_cb_key_0123456789"
GENERATE = ("--generate", "customers=30,products=20,orders=40", "--seed", "1")
#: A smaller webshop for the two-way tests (and the fault suite's baseline).
SMALL = ("--generate", "customers=20,products=10,orders=20", "--seed", "3")
RESOURCES = ("customers", "items", "item_prices", "invoices", "orders")
SDK_MODEL = {
    "customers": ("Customer", "customer"),
    "items": ("Item", "item"),
    "item_prices": ("ItemPrice", "item_price"),
    "invoices": ("Invoice", "invoice"),
    "orders": ("Order", "order"),
}
#: Mapped keys the emulator answers under another name (Chargebee's documented shape).
NOT_ECHOED = ("payments[",)  # an imported payment comes back as linked_payments


#: Whether a Sync made now runs `meltano run` itself rather than the direct runner: the
#: current test's `meltano` marker (set by tests/conftest.py before its fixtures).
RUN_WITH_MELTANO = False


class Sync:
    """One isolated Meltano project state (system db or the direct runner's state, reports,
    link store) per test. `meltano` chooses the runner (default: the test's marker); one Sync
    keeps one, as its state lives with it."""

    def __init__(
        self,
        tmp: Path,
        shop,
        chargebee_sandbox,
        link_store_url: str | None = None,
        meltano: bool | None = None,
    ):
        self.meltano = RUN_WITH_MELTANO if meltano is None else meltano
        self.tmp = tmp
        self.shop = shop
        self.chargebee = chargebee_sandbox
        self.reports = tmp / "reports"
        self.link_store_url = link_store_url or f"sqlite:///{tmp / 'links.db'}"
        self.env = {
            **isolated_meltano_env(tmp),
            "MELTANO_ENVIRONMENT": "dev",
            "TAP_CUSTOMWEBSHOP_API_URL": shop.url + "/api/v1",
            "TAP_CUSTOMWEBSHOP_API_KEY": WEBSHOP_KEY,
            "TAP_CUSTOMWEBSHOP_LINK_STORE_URL": self.link_store_url,  # its dead letters
            "TAP_CUSTOMWEBSHOP_CHARGEBEE_API_URL": chargebee_sandbox.url + "/api/v2",
            "TARGET_CHARGEBEE_API_URL": chargebee_sandbox.url + "/api/v2",
            "TARGET_CHARGEBEE_API_KEY": CHARGEBEE_KEY,
            "TARGET_CHARGEBEE_LINK_STORE_URL": self.link_store_url,
            "TARGET_CHARGEBEE_WEBSHOP_API_URL": shop.url + "/api/v1",
            "TARGET_CHARGEBEE_REPORT_DIR": str(self.reports),
            "TARGET_CHARGEBEE_REQUESTS_PER_MINUTE": "100000",
            "TARGET_CHARGEBEE_MAX_CONCURRENCY": "4",
            "SYNC_TEST_MARKER": uuid.uuid4().hex,  # finds this test's processes
        }
        if self.meltano:
            self.env.update(known_catalogs())

    #: What `meltano run` runs: the forward pair here, the `sync` job in TwoWaySync.
    blocks: tuple[str, ...] = ("tap-customwebshop", "target-chargebee")

    def systems(self) -> LinkedSystems:
        """The pair the link store is bound to."""
        return LinkedSystems.of(self.shop.url + "/api/v1", self.chargebee.url + "/api/v2")

    def command(self, blocks: tuple[str, ...] | None = None) -> list[str]:
        """`meltano run` itself, for the tests that start it in the background."""
        assert self.meltano, "a test that runs `meltano` itself must be marked meltano"
        return [str(BIN / "meltano"), "run", *(blocks or self.blocks)]

    def execute(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        """`meltano run <args>`, by Meltano or by the direct runner; not checked."""
        if self.meltano:
            return subprocess.run(
                [str(BIN / "meltano"), "run", *args],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        return direct_run.run(args, env, timeout=300)

    def state(self, state_id: str) -> dict:
        """What `meltano state get <state_id>` prints ({} when there is none)."""
        if not self.meltano:
            return direct_run.StateStore(self.env).get(state_id)
        result = subprocess.run(
            [str(BIN / "meltano"), "state", "get", state_id],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(result.stdout or "{}")

    def run(
        self,
        check: bool = True,
        force: bool = False,
        blocks: tuple[str, ...] | None = None,
        **settings: Any,
    ) -> subprocess.CompletedProcess:
        """`meltano run`; `settings` are target-chargebee settings for this run only."""
        env = {**self.env, **{f"TARGET_CHARGEBEE_{k.upper()}": str(v) for k, v in settings.items()}}
        result = self.execute([*(blocks or self.blocks), *(["--force"] if force else [])], env)
        if check and result.returncode != 0:
            runner = "meltano" if self.meltano else "direct"
            pytest.fail(f"{runner} run failed ({result.returncode}):\n{result.stderr[-6000:]}")
        return result

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "killed-run.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )

    def target_processes(self, name: str = "target-chargebee") -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if name in cmdline and "meltano" not in cmdline.split()[0]:
                    marker = process.environ().get("SYNC_TEST_MARKER")
                    if marker == self.env["SYNC_TEST_MARKER"]:
                        found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def last_report(self) -> dict:
        reports = sorted(self.reports.glob("target-chargebee-*.json"), key=os.path.getmtime)
        return json.loads(reports[-1].read_text())

    def writes(self) -> Counter:
        """POSTs the emulator answered, by operation (all statuses)."""
        stats = self.chargebee.stats()["operations"]
        return Counter(
            {op: sum(by_status.values()) for op, by_status in stats.items() if is_write(op)}
        )


class SharedSandbox(RunningSandbox):
    """A sandbox that the SDK's standard test classes must be configured with at import: its
    address is fixed then, on a free port below the kernel's ephemeral range (no client
    connection takes it meanwhile), and the server starts only when a test of a module that
    uses it asks for it (`started`, an autouse module fixture in each such module), to run
    until the process exits; collecting the tests starts none. `prepare` fills it once."""

    def __init__(
        self,
        kind: str,
        api_key: str,
        *extra: str,
        prepare: Callable[[RunningSandbox], None] | None = None,
    ):
        super().__init__(kind, f"http://127.0.0.1:{free_port()}", None)  # type: ignore[arg-type]
        self.api_key, self.extra, self.prepare = api_key, extra, prepare

    def start(self) -> SharedSandbox:
        if self.process is None:
            home = tempfile.mkdtemp(prefix=f"shared-{self.kind}-")
            atexit.register(shutil.rmtree, home, ignore_errors=True)
            db, port = str(Path(home) / "sandbox.db"), int(self.url.rsplit(":", 1)[1])
            self.process = start_sandbox(
                self.kind, db, self.api_key, *self.extra, port=port
            ).process
            atexit.register(self.stop)  # runs before the rmtree
            if self.prepare is not None:
                self.prepare(self)
        return self

    def started(self) -> Any:
        """An autouse module fixture: the module's tests find it running."""

        @pytest.fixture(scope="module", autouse=True)
        def shared_sandbox() -> SharedSandbox:
            return self.start()

        return shared_sandbox


def free_port() -> int:
    """A loopback port that is free now, from below the ephemeral range."""
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range")  # Linux; elsewhere 49152 and up
    low = int(ports.read_text().split()[0]) if ports.exists() else 32768
    for port in random.sample(range(10_000, low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def is_write(operation: str) -> bool:
    """Operations of the emulator that are POSTs (everything but retrieve/list)."""
    name = operation.rsplit(".", 1)[-1].lower()
    return not (name.startswith("retrieve") or name.startswith("list") or name == "get")


def cb_client(sandbox) -> chargebee.Chargebee:
    port = sandbox.url.rsplit(":", 1)[1]
    chargebee.main.Chargebee.verify_ca_certs = False
    return chargebee.Chargebee(
        api_key=CHARGEBEE_KEY, site="127", chargebee_domain=f"0.0.1:{port}", protocol="http"
    )


def cb_all(client: chargebee.Chargebee, resource: str, **filters: Any) -> list[dict]:
    model, name = SDK_MODEL[resource]
    rows, offset = [], None
    while True:
        params = {"limit": 100, **filters}
        if offset:
            params["offset"] = offset
        page = getattr(client, model).list(params)
        rows.extend(getattr(entry, name).raw_data for entry in page.list)
        offset = page.next_offset
        if not offset:
            return rows


# ---------------------------------------------------------------------------- expectations


def webshop_records(sync: Sync) -> dict[str, list[dict]]:
    """What the tap reads from the webshop now (RECORD messages by stream), and schemas:
    `meltano invoke tap-customwebshop` by the direct runner, for every test (a judge, not
    what a test checks; its config is held equal to Meltano's by tests/test_direct_run.py)."""
    done = direct_run.invoke("tap-customwebshop", sync.env)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout
    records: dict[str, list[dict]] = {"__schemas__": {}}  # type: ignore[dict-item]
    for line in output.splitlines():
        message = json.loads(line)
        if message["type"] == "SCHEMA":
            records["__schemas__"][message["stream"]] = message  # type: ignore[index]
        elif message["type"] == "RECORD":
            records.setdefault(message["stream"], []).append(message["record"])
    return records


def expected_chargebee(sync: Sync) -> dict[str, dict[str, dict]]:
    """The webshop's records through meltano.yml's maps: what Chargebee must hold, by id."""
    config = yaml.safe_load((REPO / "meltano.yml").read_text())
    target = next(p for p in config["plugins"]["loaders"] if p["name"] == "target-chargebee")
    mapper = PluginMapper(plugin_config=target["config"], logger=__import__("logging").getLogger())
    source = webshop_records(sync)
    out: dict[str, dict[str, dict]] = {r: {} for r in RESOURCES}
    for stream, message in source["__schemas__"].items():  # type: ignore[union-attr]
        mapper.register_raw_stream_schema(stream, message["schema"], message["key_properties"])
    for stream, rows in source.items():
        if stream == "__schemas__":
            continue
        for row in rows:
            for stream_map in mapper.stream_maps[stream]:
                try:
                    mapped = stream_map.transform(dict(row))
                except (ValueError, TypeError, KeyError):  # bad data: the target dead-letters it
                    continue
                if mapped is not None and stream_map.stream_alias in out:
                    out[stream_map.stream_alias][mapped["id"]] = mapped
    return out


def assert_mirrors(sync: Sync, expected: dict[str, dict[str, dict]]) -> None:
    """Every mapped, non-deleted record exists in Chargebee with every mapped field equal."""
    client = cb_client(sync.chargebee)
    for resource in RESOURCES:
        actual = {row["id"]: row for row in cb_all(client, resource)}
        wanted = {i: r for i, r in expected[resource].items() if not r.get("deleted")}
        assert wanted, f"no {resource} generated"
        missing = sorted(set(wanted) - set(actual))
        assert not missing, f"{resource} missing in Chargebee: {missing[:5]}"
        for record_id, record in wanted.items():
            remote = actual[record_id]
            for key, value in to_params(record).items():
                if key.startswith(NOT_ECHOED):
                    continue
                theirs = wire_value(remote_value(remote, key))
                assert (value or None) == (theirs or None), (
                    f"{resource} {record_id} {key}: webshop {value!r}, Chargebee {theirs!r}"
                )
            assert set(CONTROL_FIELDS).isdisjoint(remote) or "deleted" in remote


# ---------------------------------------------------------------------------- webshop access


def webshop_get(sync: Sync, resource: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        answer = requests.get(
            f"{sync.shop.url}/api/v1/{resource}",
            params={"limit": 500, **({"cursor": cursor} if cursor else {})},
            headers={"X-API-Key": WEBSHOP_KEY},
            timeout=10,
        )
        answer.raise_for_status()
        page = answer.json()
        rows.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return rows


def webshop_patch(sync: Sync, resource: str, record_id: Any, changes: dict) -> dict:
    return webshop_send(sync, "PATCH", f"{resource}/{record_id}", changes)


def webshop_post(sync: Sync, resource: str, body: dict) -> dict:
    return webshop_send(sync, "POST", resource, body)


def webshop_send(sync: Sync, method: str, path: str, body: dict) -> dict:
    answer = requests.request(
        method,
        f"{sync.shop.url}/api/v1/{path}",
        json=body,
        headers={"X-API-Key": WEBSHOP_KEY},
        timeout=10,
    )
    assert answer.ok, answer.text
    return answer.json()


class TwoWaySync(Sync):
    def __init__(self, tmp: Path, shop, chargebee_sandbox, meltano: bool | None = None):
        super().__init__(tmp, shop, chargebee_sandbox, meltano=meltano)
        self.env.update(
            TAP_CHARGEBEE_API_URL=chargebee_sandbox.url + "/api/v2",
            TAP_CHARGEBEE_API_KEY=CHARGEBEE_KEY,
            TAP_CHARGEBEE_REQUESTS_PER_MINUTE="100000",
            TAP_CHARGEBEE_LINK_STORE_URL=self.link_store_url,
            TAP_CHARGEBEE_WEBSHOP_API_URL=shop.url + "/api/v1",
            TARGET_CUSTOMWEBSHOP_API_URL=shop.url + "/api/v1",
            TARGET_CUSTOMWEBSHOP_API_KEY=WEBSHOP_KEY,
            TARGET_CUSTOMWEBSHOP_LINK_STORE_URL=self.link_store_url,
            TARGET_CUSTOMWEBSHOP_CHARGEBEE_API_URL=chargebee_sandbox.url + "/api/v2",
            TARGET_CUSTOMWEBSHOP_REPORT_DIR=str(self.reports),
        )

    blocks = ("sync",)

    def run_with(self, **settings: Any) -> None:
        """A sync run with target-customwebshop settings."""
        saved = dict(self.env)
        self.env.update({f"TARGET_CUSTOMWEBSHOP_{k.upper()}": str(v) for k, v in settings.items()})
        try:
            self.run()
        finally:
            self.env = saved

    def reset_counts(self) -> None:
        self.shop.reset_stats()
        self.chargebee.reset_stats()

    def write_counts(self) -> tuple[Counter, Counter]:
        """Writes each server answered since the last reset: (webshop, Chargebee)."""
        shop = Counter({op: sum(s.values()) for op, s in self.shop.stats()["operations"].items()
                        if op.endswith((".create", ".patch", ".delete"))})  # fmt: skip
        return +shop, +self.writes()

    def reverse_report(self) -> dict:
        reports = sorted(self.reports.glob("target-customwebshop-*.json"), key=os.path.getmtime)
        return json.loads(reports[-1].read_text())
