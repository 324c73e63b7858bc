"""Start a sandbox as a child process on a free loopback port (tests, demo, benchmarks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

import requests

COMMANDS = {"customwebshop": "customwebshop-sandbox", "chargebee": "chargebee-sandbox"}


class Process(Protocol):
    """What a sandbox's process is used for: a `subprocess.Popen`, or the tests' forked one."""

    @property
    def pid(self) -> int: ...
    @property
    def stdout(self) -> IO[str] | None: ...
    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class RunningSandbox:
    kind: str
    url: str  # http://127.0.0.1:PORT, without any API path
    process: Process

    def stats(self) -> dict:
        return requests.get(self.url + "/_sandbox/stats", timeout=10).json()

    def reset_stats(self) -> dict:
        return requests.post(self.url + "/_sandbox/stats/reset", timeout=10).json()

    def wait_until_idle(self, timeout: float = 30) -> None:
        """Until no request is being answered: a request of a finished run that still hangs
        (the timeout knob) would be counted in the next run's stats."""
        deadline = time.monotonic() + timeout
        while self.stats()["in_flight"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} sandbox: requests still in flight")
            time.sleep(0.1)

    def set_knobs(self, **changes) -> dict:
        return requests.post(self.url + "/_sandbox/knobs", json=changes, timeout=10).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sandbox(
    kind: str,
    db: str,
    api_key: str,
    *extra: str,
    port: int = 0,
    log: str | None = None,
    popen: Callable[..., Process] = subprocess.Popen,
) -> RunningSandbox:
    """Run `<kind>-sandbox --port 0 ...` and wait for its READY line. With `log`, the server's
    stderr goes to that file and it runs in its own session, so it outlives its parent (demo).
    `popen`: what starts the process, with `subprocess.Popen`'s arguments (the tests fork it
    from a process that imported the sandboxes)."""
    command = shutil.which(COMMANDS[kind]) or os.path.join(
        os.path.dirname(sys.executable), COMMANDS[kind]
    )
    process = popen(
        [command, "--port", str(port), "--db", db, "--api-key", api_key, *extra],
        stdout=subprocess.PIPE,
        stderr=open(log, "a") if log else None,  # noqa: SIM115 (the child owns it)
        start_new_session=log is not None,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("READY "):
            url = line.split()[1]
            return RunningSandbox(kind, url, process)
    process.wait()
    raise RuntimeError(f"{COMMANDS[kind]} exited with {process.returncode} before it was ready")
