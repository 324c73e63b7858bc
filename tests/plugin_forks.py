"""The project's executables for the tests (the plugins for the direct runner, the sandbox
servers), started by forking a process that has imported them once.

A plugin spends about 0.9 s of CPU importing singer-sdk, SQLAlchemy and its own code before it
reads a line, and the direct runner starts four per two-way sync: that start-up was over half of
`make test`'s CPU. A forked child runs the plugin's console-script entry point with the run's
arguments, environment, working directory and standard streams; only the imports are shared
(so a plugin must read the environment at run time, not at import, as the SDK does; the
one setting that did, SYNC_KNOWN_PARENTS, is held to it by
tests/test_target_chargebee_decisions.py). tests/test_direct_run.py holds a forked plugin's
output, logs and exit status equal to its executable's. A sandbox's start costs 0.3–0.5 s of
CPU (its imports), and the tests start some 170. `SYNC_TEST_FORK=0` starts the
executables instead.

The fork server (`python -m tests.plugin_forks`) takes one request per connection: a JSON line
(plugin, argv, env, cwd) with the child's stdin, stdout and stderr as passed descriptors. It
answers with the child's pid, and with its exit status (as `Popen.returncode` counts it) when
it ends. It leaves when its own stdin closes (the test process that started it is gone)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
import json
import os
import random
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any

from sync_sandbox import process
from sync_sandbox.process import COMMANDS, Process, RunningSandbox

PLUGINS = ("tap-customwebshop", "target-chargebee", "tap-chargebee", "target-customwebshop")
SANDBOXES = tuple(COMMANDS.values())
ENABLED = os.environ.get("SYNC_TEST_FORK", "1") != "0"


class ForkedPlugin:
    """The parts of `subprocess.Popen` the direct runner uses, for a plugin the fork server
    started: its pid, its stdout and stderr (text), poll, wait and kill."""

    def __init__(self, connection: socket.socket, stdout: IO[str], stderr: IO[str] | None):
        self.connection = connection
        self.received = b""
        self.pid: int = self.answer(None)["pid"]
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None

    def answer(self, timeout: float | None) -> dict:
        """The server's next JSON line; TimeoutError when none comes within `timeout`."""
        while b"\n" not in self.received:
            if not select.select([self.connection], [], [], timeout)[0]:
                raise TimeoutError
            more = self.connection.recv(4096)
            if not more:
                raise RuntimeError(f"the fork server left before plugin {self} ended")
            self.received += more
        line, self.received = self.received.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        return self.wait_at_most(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self.wait_at_most(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        return code

    def wait_at_most(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.answer(timeout)["exit"]
            except TimeoutError:
                return None
            self.connection.close()
        return self.returncode

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # ended, not reaped yet
                os.kill(self.pid, number)


STARTING = threading.Lock()


def server_socket() -> str:
    """The fork server of this test process, started on first use; gone with the process."""
    with STARTING:
        return started_server()


@functools.cache
def started_server() -> str:
    directory = tempfile.mkdtemp(prefix="plugin-forks-")
    path = os.path.join(directory, "socket")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.plugin_forks", path],
        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert server.stdout is not None
    if server.stdout.readline().strip() != "READY":
        raise RuntimeError("the plugin fork server did not start")
    atexit.register(server.wait)
    atexit.register(server.stdin.close)  # type: ignore[union-attr]  # its cue to leave
    return path


#: A started plugin, either way.
Plugin = ForkedPlugin | subprocess.Popen


def start(
    plugin: str,
    args: list[str],
    cwd: Path,
    env: Mapping[str, str],
    stdin: IO[Any] | None = None,
    *,
    fork: bool = ENABLED,
    stderr: int | None = None,
) -> Plugin:
    """`Popen([<bin>/plugin, *args], stdin=stdin, stdout=PIPE, stderr=PIPE, text=True)`, by
    the fork server unless `fork` is false (SYNC_TEST_FORK=0). `stderr`: a descriptor the
    child writes its stderr to instead of a pipe."""
    executable = str(Path(sys.executable).parent / plugin)
    if not fork:
        return subprocess.Popen(
            [executable, *args], cwd=cwd, env=dict(env), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr is None else stderr, text=True,
        )  # fmt: skip
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe() if stderr is None else (None, os.dup(stderr))
    null = os.open(os.devnull, os.O_RDONLY)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(server_socket())
        request = {"plugin": plugin, "argv": [executable, *args], "env": dict(env), "cwd": str(cwd)}
        descriptors = [stdin.fileno() if stdin else null, out_write, err_write]
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], descriptors)
    finally:
        for descriptor in (out_write, err_write, null):
            os.close(descriptor)  # the child holds its own copies
    errors = None if err_read is None else open(err_read)  # noqa: SIM115
    return ForkedPlugin(connection, open(out_read), errors)  # noqa: SIM115


def start_sandbox(kind: str, db: str, api_key: str, *extra: str, **options: Any) -> RunningSandbox:
    """sync_sandbox.process.start_sandbox, the server forked (its stderr the test's)."""
    return process.start_sandbox(kind, db, api_key, *extra, popen=sandbox_popen, **options)


def sandbox_popen(
    argv: list[str], *, stdout: int, stderr: IO[Any] | None, **options: Any
) -> Process:
    """`subprocess.Popen` as start_sandbox calls it; a sandbox kept past the test (its own
    session, a log file) is not forked."""
    if options.get("start_new_session") or not ENABLED:
        return subprocess.Popen(argv, stdout=stdout, stderr=stderr, **options)
    assert stdout == subprocess.PIPE and options.get("text"), "a sandbox's READY line is read"
    descriptor = stderr.fileno() if stderr else 2
    return start(Path(argv[0]).name, argv[1:], Path.cwd(), os.environ, stderr=descriptor)


# ---------------------------------------------------------------------------- the server


def serve(path: str) -> dict:
    """Fork a child per request; return only in a child, with its request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    print("READY", flush=True)
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in events.select(timeout=0.02):
            if key.fileobj is sys.stdin:
                leave_if_stdin_closed(children)
            connection, _ = listener.accept()
            message, descriptors, _, _ = socket.recv_fds(connection, 1 << 20, 3)
            while not message.endswith(b"\n"):  # a large environment may come in parts
                message += connection.recv(1 << 20)
            pid = os.fork()
            if pid == 0:
                events.close()
                listener.close()
                for other in children.values():
                    other.close()
                connection.close()
                for number, descriptor in enumerate(descriptors):
                    os.dup2(descriptor, number)
                    os.close(descriptor)
                return json.loads(message)
            for descriptor in descriptors:
                os.close(descriptor)
            connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            children[pid] = connection
        reap(children)


def reap(children: dict[int, socket.socket]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        connection = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):  # the test process stopped listening
            connection.sendall(json.dumps({"exit": code}).encode() + b"\n")
        connection.close()


def leave_if_stdin_closed(children: dict[int, socket.socket]) -> None:
    """The test process closed the server's stdin (it is gone): kill the children, exit."""
    if sys.stdin.readline():
        return
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sys.exit(0)


def main() -> None:
    forked = PLUGINS + SANDBOXES
    commands = {e.name: e for e in entry_points(group="console_scripts") if e.name in forked}
    for command in commands.values():
        importlib.import_module(command.module)  # the imports, done once
    gc.freeze()  # the children's collections leave the shared pages unwritten
    request = serve(sys.argv[1])
    # the child: the plugin's process as its executable would have started it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    # sys.stdin, stdout and stderr need no change: they wrap descriptors 0-2, which are now
    # the child's, and hold nothing buffered (the server printed READY, flushed)
    random.seed()  # not the fork server's sequence, shared by every child
    # the entry point itself only in the child: reaching a plugin's `cli` sets up its logging
    sys.exit(commands[request["plugin"]].load()())


if __name__ == "__main__":
    main()
