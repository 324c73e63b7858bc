"""`make demo`: start both sandboxes on loopback with generated data, run the two-way sync,
then edit a customer in Chargebee and a product in the webshop, show the dry run's plan, run
the sync and show the edits arriving.

The terminal shows the targets' run reports (the tables, the plan) and any error; the full
output of the three `meltano run sync` (Meltano's log, every plugin line, METRIC lines) goes to
`.demo/sync.log`, by the demo's own Meltano logging config (demo_logging.yaml).

State lives in `.demo/` (databases, logs, pids); the API keys go to `.env`, where Meltano reads
them, so they are never printed. `make stop` stops the servers; the data stays for the next run.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import requests

from sync_common.links import LinkedSystems, default_link_store_url
from sync_common.report import default_report_dir
from sync_sandbox.demo_logging import CONFIG as LOG_CONFIG
from sync_sandbox.process import start_sandbox

DEMO_DIR = Path(".demo")
ENV_FILE = Path(".env")
SYNC_LOG = DEMO_DIR / "sync.log"  # demo_logging.yaml's file handler writes there
PORTS = {"customwebshop": 8765, "chargebee": 8766}
KEY_VARIABLES = {"customwebshop": "DEMO_WEBSHOP_API_KEY", "chargebee": "DEMO_CHARGEBEE_API_KEY"}
GENERATE = ["--generate", "customers=200,products=60,orders=400", "--seed", "42"]


def read_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        return {}
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def demo_keys() -> dict[str, str]:
    """The sandboxes' keys, made once per checkout and kept in .env (gitignored)."""
    env = read_env()
    missing = [v for v in KEY_VARIABLES.values() if v not in env]
    if missing:
        with ENV_FILE.open("a") as out:
            for variable in missing:
                env[variable] = "demo_" + secrets.token_hex(12)
                out.write(f"{variable}={env[variable]}\n")
    return {kind: env[variable] for kind, variable in KEY_VARIABLES.items()}


def api_root(kind: str) -> str:
    path = "/api/v1" if kind == "customwebshop" else "/api/v2"
    return f"http://127.0.0.1:{PORTS[kind]}{path}"


def is_running(kind: str) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{PORTS[kind]}/_sandbox/stats", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def start() -> None:
    DEMO_DIR.mkdir(exist_ok=True)
    keys = demo_keys()
    if not any((DEMO_DIR / f"{kind}.db").exists() for kind in PORTS):
        forget_earlier_syncs()
    for kind, port in PORTS.items():
        if is_running(kind):
            print(f"{kind}: already running at {api_root(kind)}")
            continue
        db = DEMO_DIR / f"{kind}.db"
        extra = GENERATE if kind == "customwebshop" and not db.exists() else []
        sandbox = start_sandbox(
            kind, str(db), keys[kind], *extra, port=port, log=str(DEMO_DIR / f"{kind}.log")
        )
        (DEMO_DIR / f"{kind}.pid").write_text(str(sandbox.process.pid))
        print(f"{kind}: started at {api_root(kind)} (pid {sandbox.process.pid})")
    webshop_key = "$" + KEY_VARIABLES["customwebshop"]
    print(
        f"""
Both sandboxes run on loopback; their API keys are in .env (never printed).
  set -a; . ./.env; set +a
  curl -s -H "X-API-Key: {webshop_key}" '{api_root("customwebshop")}/customers?limit=2'
  curl -s -u "${KEY_VARIABLES["chargebee"]}:" '{api_root("chargebee")}/customers?limit=2'
Request counts: http://127.0.0.1:PORT/_sandbox/stats on either port.
Contracts: docs/customwebshop-api.md, docs/chargebee-emulator.md. Stop with `make stop`."""
    )


def forget_earlier_syncs() -> None:
    """New sandbox data: Meltano's bookmarks and the link store of an earlier demo describe
    records that are gone, so both start afresh: the demo pair's store (and one an earlier
    version made, `links.db`)."""
    pair = LinkedSystems.of(api_root("customwebshop"), api_root("chargebee"))
    for url in {default_link_store_url(), default_link_store_url(pair)}:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    meltano = os.path.join(os.path.dirname(sys.executable), "meltano")
    subprocess.run([meltano, "state", "clear", "--all", "--force"], capture_output=True)


def meltano_sync(*, dry_run: bool = False) -> None:
    """`meltano run sync` (both directions), with the venv's plugins on PATH."""
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    settings = {"TARGET_CHARGEBEE_DRY_RUN": "true", "TARGET_CUSTOMWEBSHOP_DRY_RUN": "true"}
    if dry_run:
        env.update(settings)
    prefix = "".join(f"{name}=true " for name in settings) if dry_run else ""
    print(f"\n$ {prefix}meltano run sync", flush=True)
    with SYNC_LOG.open("a") as log:
        log.write(f"\n$ {prefix}meltano run sync\n")
    meltano = [os.path.join(bin_dir, "meltano"), "--log-config", str(LOG_CONFIG)]
    done = subprocess.run([*meltano, "run", "sync"], env=env)
    if done.returncode:
        sys.exit(f"meltano run sync failed (exit {done.returncode}); its full log: {SYNC_LOG}")


def demo() -> None:
    """Start, sync both ways, edit on both sides, plan (dry run), sync, show the result."""
    start()
    SYNC_LOG.write_text("")  # this demo's runs only
    meltano_sync()
    keys = demo_keys()
    webshop = {"X-API-Key": keys["customwebshop"]}
    first = requests.get(f"{api_root('customwebshop')}/customers", params={"limit": 1},
                         headers=webshop, timeout=10).json()["data"][0]  # fmt: skip
    new_email = f"edited.in.chargebee.{secrets.token_hex(2)}@example.com"
    requests.post(f"{api_root('chargebee')}/customers/cws_{first['id']}", data={"email": new_email},
                  auth=(keys["chargebee"], ""), timeout=10).raise_for_status()  # fmt: skip
    print(
        f"\nEdited in Chargebee: customer cws_{first['id']} e-mail {first['email']} -> {new_email}"
    )
    product = requests.get(f"{api_root('customwebshop')}/products", params={"limit": 1},
                           headers=webshop, timeout=10).json()["data"][0]  # fmt: skip
    price = int(product["price"]) + 100
    requests.patch(f"{api_root('customwebshop')}/products/{product['id']}", json={"price": price},
                   headers=webshop, timeout=10).raise_for_status()  # fmt: skip
    print(f"Edited in the webshop: product {product['id']} price {product['price']} -> {price}")
    meltano_sync(dry_run=True)  # the plan: what the next run will write, nothing written yet
    meltano_sync()
    now = requests.get(f"{api_root('customwebshop')}/customers/{first['id']}", headers=webshop,
                       timeout=10).json()  # fmt: skip
    print(f"\nIn the webshop now: customer {first['id']} e-mail {now['email']}")
    print(
        f"""
Reports (JSON, one per target run): {default_report_dir()}
Full log of the three runs (Meltano's, every plugin line, the Singer metrics): {SYNC_LOG}
The sandboxes keep running; stop them with `make stop`."""
    )


def stop() -> None:
    for kind in PORTS:
        pid_file = DEMO_DIR / f"{kind}.pid"
        if not pid_file.exists():
            continue
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            print(f"{kind}: stopped")
        except ProcessLookupError:
            print(f"{kind}: was not running")
        pid_file.unlink()


if __name__ == "__main__":
    {"demo": demo, "start": start, "stop": stop}[sys.argv[1] if len(sys.argv) > 1 else "demo"]()
