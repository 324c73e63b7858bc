"""Goal 1 of issue 15 (`make bench` runs it after sync.py): tap-chargebee beside singer-io's
tap-chargebee 1.7.1 on the same emulator data, at Chargebee's latency, with the same budget.
How it is measured: bench/README.md ("Reads beside the peer").

    .venv/bin/python bench/reads.py [--latency-ms 250] [--budget 3500] [--rounds 2] [--keep]

The peer hard-codes https://{site}.chargebee.com, so the emulator is served through a loopback
TLS front on 127.0.0.1:443 with a certificate made here, and a temporary /etc/hosts entry for
the site (removed afterwards, also one left by an earlier run). Needs root and the openssl
command; the peer is installed from PyPI into .bench/ once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import venv
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from measure import Run, run, status_count

from sync_sandbox.process import RunningSandbox, start_sandbox

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEER = "tap-chargebee==1.7.1"
PEER_HOME = REPO / ".bench" / "peer-tap-chargebee-1.7.1"
SITE = "bench-reads"
HOST = f"{SITE}.chargebee.com"
KEY = "bench_reads_chargebee_key"
HOSTS = Path("/etc/hosts")
HOSTS_MARK = "# bench/reads.py: removed after its run"
STREAMS = ("customers", "items", "item_prices", "orders")
#: 9,500 records, 95 pages: the peer's own limiter (100 requests per 60 s, singer-python's
#: ratelimit on every call) never waits, so it is measured at its best.
SIZE = {"customers": 3000, "items": 1000, "orders": 4500}
START, NO_RECORDS = "2020-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
#: Params an emulator list refuses as unknown but Chargebee takes: the peer sends
#: include_deleted on every list, item lists included (they have a status filter instead).
IGNORED_PARAMS = {"/api/v2/items": {"include_deleted"}, "/api/v2/item_prices": {"include_deleted"}}


# ---------------------------------------------------------------- the site's data


def populate(box: RunningSandbox) -> dict[str, int]:
    """Customers, items with one price each, and orders on a few imported invoices, written
    through the emulator's API (at zero latency)."""
    session = requests.Session()
    session.auth = (KEY, "")
    api = box.url + "/api/v2"

    def post(path_and_data: tuple[str, dict]) -> None:
        path, data = path_and_data
        session.post(f"{api}/{path}", data=data, timeout=30).raise_for_status()

    def write_all(calls: list[tuple[str, dict]]) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, calls))

    write_all(
        [
            ("customers", {"id": f"c{n}", "email": f"c{n}@example.com", "first_name": "Å"})
            for n in range(SIZE["customers"])
        ]
    )
    post(("item_families", {"id": "bench", "name": "bench"}))
    items = range(SIZE["items"])
    write_all(
        [
            (
                "items",
                {"id": f"i{n}", "name": f"Item {n}", "type": "charge", "item_family_id": "bench"},
            )
            for n in items
        ]
    )
    write_all(
        [
            (
                "item_prices",
                {
                    "id": f"i{n}-EUR",
                    "name": f"Item {n} EUR",
                    "item_id": f"i{n}",
                    "price": 100 + n,
                    "currency_code": "EUR",
                },
            )
            for n in items
        ]
    )
    invoices = [f"inv{n}" for n in range(50)]
    write_all(
        [
            (
                "invoices/import_invoice",
                {
                    "id": invoice,
                    "customer_id": f"c{n}",
                    "currency_code": "EUR",
                    "date": 1_700_000_000,
                    "total": 490,
                    "line_items[description][0]": "Shipping",
                    "line_items[amount][0]": 490,
                },
            )
            for n, invoice in enumerate(invoices)
        ]
    )
    write_all(
        [
            ("orders", {"id": f"o{n}", "invoice_id": invoices[n % len(invoices)]})
            for n in range(SIZE["orders"])
        ]
    )
    return {
        "customers": SIZE["customers"],
        "items": SIZE["items"],
        "item_prices": SIZE["items"],
        "orders": SIZE["orders"],
    }


# ---------------------------------------------------------------- https://{site}.chargebee.com


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the site's host name (it is its own CA)."""
    cert, key = directory / "front-cert.pem", directory / "front-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=DNS:{HOST}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def hosts_entry() -> Iterator[None]:
    """`127.0.0.1 {HOST}` in /etc/hosts while the block runs; always removed afterwards."""
    _drop_hosts_entries()  # one an interrupted run left
    with HOSTS.open("a") as hosts:  # in place: /etc/hosts may be a mount, not replaceable
        hosts.write(f"127.0.0.1 {HOST}  {HOSTS_MARK}\n")
    try:
        yield
    finally:
        _drop_hosts_entries()


def _drop_hosts_entries() -> None:
    lines = HOSTS.read_text().splitlines(keepends=True)
    kept = [line for line in lines if HOSTS_MARK not in line]
    if kept != lines:
        HOSTS.write_text("".join(kept))


class TlsFront:
    """https://127.0.0.1:443 in front of the emulator's plain HTTP: each request is sent to
    the emulator on a new connection; the client's connection is kept alive when it asks to
    be (Chargebee keeps connections alive; the emulator closes each). IGNORED_PARAMS are
    dropped on the way."""

    def __init__(self, backend_port: int, cert: Path, key: Path, port: int = 443) -> None:
        self.backend_port = backend_port
        self.port = port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> TlsFront:
        self.thread.start()
        start = asyncio.start_server(
            self._client, "127.0.0.1", self.port, ssl=self.context, reuse_address=True
        )
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
                headers = [h for h in header_lines if not h.lower().startswith("connection:")]
                length = _header(header_lines, "content-length")
                body = await reader.readexactly(int(length)) if length else b""
                method, target, version = request_line.split(" ", 2)
                keep = version == "HTTP/1.1" and _header(header_lines, "connection") != "close"
                request = "\r\n".join(
                    [
                        f"{method} {_without_ignored(target)} {version}",
                        *headers,
                        "Connection: close",
                        "",
                        "",
                    ]
                )
                response = await self._forward(request.encode("latin-1") + body)
                status_and_headers, _, content = response.partition(b"\r\n\r\n")
                status, *response_headers = status_and_headers.decode("latin-1").split("\r\n")
                keep = keep and _header(response_headers, "content-length") is not None
                response_headers = [
                    h for h in response_headers if not h.lower().startswith("connection:")
                ]
                response_headers.append("Connection: " + ("keep-alive" if keep else "close"))
                writer.write("\r\n".join([status, *response_headers, "", ""]).encode("latin-1"))
                writer.write(content)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the client closed its connection
        finally:
            writer.close()

    async def _forward(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        try:
            writer.write(request)
            await writer.drain()
            return await reader.read()  # to the end: the emulator was asked to close
        finally:
            writer.close()


def _header(lines: list[str], name: str) -> str | None:
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip().lower()
    return None


def _without_ignored(target: str) -> str:
    parts = urlsplit(target)
    ignored = IGNORED_PARAMS.get(parts.path)
    if not ignored or not parts.query:
        return target
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ignored]
    return parts.path + ("?" + urlencode(query) if query else "")


# ---------------------------------------------------------------- the two taps


def peer_tap() -> Path:
    """singer-io's tap in its own virtualenv under .bench/ (made once, then reused)."""
    executable = PEER_HOME / "bin" / "tap-chargebee"
    if not executable.exists():
        print(f"installing {PEER} into {PEER_HOME}", flush=True)
        shutil.rmtree(PEER_HOME, ignore_errors=True)
        venv.create(PEER_HOME, with_pip=True)
        subprocess.run([str(PEER_HOME / "bin" / "pip"), "install", "-q", PEER], check=True)
    return executable


def peer_catalog(peer: Path, config: Path, env: dict, tmp: Path) -> Path:
    """The peer's discovered catalog with our four streams and all their fields selected."""
    found = subprocess.run(
        [str(peer), "--config", str(config), "--discover"], env=env, capture_output=True, text=True
    )
    if found.returncode:
        raise RuntimeError(f"the peer's discovery failed:\n{found.stderr[-3000:]}")
    catalog = json.loads(found.stdout)
    catalog["streams"] = [s for s in catalog["streams"] if s["tap_stream_id"] in STREAMS]
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            item["metadata"]["selected"] = True
    path = tmp / "peer-catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def records_by_stream(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    with path.open("rb") as lines:
        for line in lines:
            if b'"RECORD"' in line:
                message = json.loads(line)
                if message.get("type") == "RECORD":
                    counts[message["stream"]] += 1
    return counts


def measure(name: str, command: list[str], env: dict, box: RunningSandbox, tmp: Path) -> dict:
    out = tmp / f"{name}.singer"
    box.reset_stats()
    done: Run = run(command, env=env, log=tmp / "reads.log", stdout=out)
    stats = box.stats()
    return {
        "run": done,
        "records": records_by_stream(out),
        "requests": stats["total"],
        "429s": status_count(stats, "429"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=int, default=250, help="added to every request")
    parser.add_argument("--budget", type=int, default=3500, help="requests/minute, both taps")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each tap")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/reads.py needs root: it serves 127.0.0.1:443 and edits /etc/hosts")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    print(
        f"reads: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; files in {tmp}", flush=True
    )
    db = str(tmp / "cb.db")
    box = start_sandbox("chargebee", db, KEY, "--site", SITE)
    try:
        peer = peer_tap()
        made = populate(box)
        # Started again on the same data: its rate window then holds none of the writes above.
        box.stop()
        box = start_sandbox(
            "chargebee",
            db,
            KEY,
            "--site",
            SITE,
            "--latency-ms",
            str(args.latency_ms),
            "--requests-per-minute",
            str(args.budget),
        )
        cert, key = certificate(tmp)
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(cert)}
        with hosts_entry(), TlsFront(int(box.url.rsplit(":", 1)[1]), cert, key):
            figures = compare(args, peer, env, box, tmp)
    finally:
        box.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, made, figures, time.monotonic() - started)


def compare(
    args: argparse.Namespace, peer: Path, env: dict, box: RunningSandbox, tmp: Path
) -> dict[str, dict]:
    def config(name: str, **settings: object) -> Path:
        path = tmp / f"{name}.json"
        path.write_text(json.dumps({"site": SITE, "api_key": KEY, **settings}))
        return path

    ours = {"requests_per_minute": args.budget, "retry_dead_letters": False}
    commands = {
        "tap-chargebee": lambda start: [
            str(BIN / "tap-chargebee"),
            "--config",
            str(config("ours", start_date=start, **ours)),
        ],
        "singer-io tap-chargebee 1.7.1": lambda start: [
            str(peer),
            "--config",
            str(config("peer", start_date=start)),
            "--catalog",
            str(catalog),
        ],
    }
    catalog = peer_catalog(peer, config("peer", start_date=START), env, tmp)
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for round_ in range(args.rounds):  # alternating: a change in the machine's load hits both
        for name, command in commands.items():
            print(f"reads: {name}, round {round_ + 1}", flush=True)
            runs[name].append(measure(name, command(START), env, box, tmp))
    figures = {}
    for name, command in commands.items():
        empty = measure(name + " (no records)", command(NO_RECORDS), env, box, tmp)
        best = min(runs[name], key=lambda r: r["run"].wall)
        records = sum(best["records"].values())
        figures[name] = {
            **best,
            "empty": empty,
            "total": records,
            "rec_s": records / best["run"].wall,
            "cpu_rec": best["run"].cpu / records,
            "net_cpu_rec": (best["run"].cpu - empty["run"].cpu) / records,
        }
    return figures


def report(args: argparse.Namespace, made: dict, figures: dict[str, dict], seconds: float) -> None:
    ours, peer = figures["tap-chargebee"], figures["singer-io tap-chargebee 1.7.1"]
    print()
    print(
        f"1. Reads beside singer-io's tap-chargebee 1.7.1: {args.latency_ms} ms per request, "
        f"{args.budget}/min budget, same emulator data behind one loopback TLS front"
    )
    print("   data: " + ", ".join(f"{k} {v}" for k, v in made.items()))
    print(
        f"   {'':31} {'records':>7} {'wall s':>7} {'rec/s':>6} {'requests':>8} {'429s':>5} "
        f"{'CPU s':>6} {'CPU µs/rec':>10} {'net µs/rec':>10} {'start CPU s':>11}"
    )
    for name, f in figures.items():
        print(
            f"   {name:31} {f['total']:>7} {f['run'].wall:>7.1f} {f['rec_s']:>6.0f} "
            f"{f['requests']:>8} {f['429s']:>5} {f['run'].cpu:>6.2f} "
            f"{f['cpu_rec'] * 1e6:>10.0f} {f['net_cpu_rec'] * 1e6:>10.0f} "
            f"{f['empty']['run'].cpu:>11.2f}"
        )
    same = ours["records"] == peer["records"]
    print(
        f"   records per stream alike: {'yes' if same else 'NO'} "
        f"(ours {dict(ours['records'])}, peer {dict(peer['records'])})"
    )
    speed = ours["rec_s"] / peer["rec_s"]
    cpu = ours["cpu_rec"] / peer["cpu_rec"]
    print(f"   goal: >= 3x the peer's records/s: {speed:.2f}x -> {'yes' if speed >= 3 else 'no'}")
    print(
        f"   goal: CPU per record <= the peer's: {cpu:.2f} of it -> "
        f"{'yes' if cpu <= 1 else 'no'} (net of start-up: "
        f"{ours['net_cpu_rec'] / peer['net_cpu_rec']:.2f})"
    )
    print(f"\nbench/reads.py took {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
