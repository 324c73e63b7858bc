"""`meltano run` for this project's pairs without Meltano: the real plugins (their executables'
entry points, forked from a process that imported them: tests/plugin_forks.py), piped
tap | target, with the config and catalog Meltano would give them and the state it would keep.

Meltano's own start-up, discovery and bookkeeping cost about 7 s of every run; a test that is
not about Meltano gets the same plugins with the same inputs this way. What Meltano resolves
(meltano.yml, the `dev` environment, `.env`) is asked of Meltano once per test session
(`meltano invoke --dump=config|catalog`, cached); a test's own `TAP_…`/`TARGET_…` variables are
laid over that the way Meltano reads them (by each setting's `kind` in meltano.yml).
tests/test_direct_run.py holds this equal to `meltano invoke --dump=config`."""

from __future__ import annotations

import atexit
import copy
import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from tests import plugin_forks

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: `meltano run` options the runner understands: `--force` only clears Meltano's "still
#: running" marker of a killed run, which the runner does not keep.
OPTIONS = ("--force", "--full-refresh")


@functools.cache
def project() -> dict:
    return yaml.safe_load((REPO / "meltano.yml").read_text())


def definition(plugin: str) -> dict:
    plugins = project()["plugins"]
    return next(p for kind in plugins.values() for p in kind if p["name"] == plugin)


def is_extractor(plugin: str) -> bool:
    return any(p["name"] == plugin for p in project()["plugins"]["extractors"])


def env_prefix(plugin: str) -> str:
    """Meltano's name for a plugin's setting variables: TARGET_CHARGEBEE_<SETTING>."""
    return plugin.upper().replace("-", "_") + "_"


def cast(kind: str, value: str) -> Any:
    """An environment value as Meltano reads it for a setting of `kind`
    (meltano.core.setting_definition.SettingDefinition.cast_value)."""
    if kind == "boolean":
        return value.lower() in ("true", "1", "yes", "on")
    if kind == "integer":
        return int(value)
    if kind in ("object", "array"):
        return json.loads(value)
    return value  # string, options, date_iso8601


#: What a test's Meltano process keeps of the test's environment: what a scheduler gives a
#: job, and the variables of Meltano, the plugins and the tests. Meltano resolves every
#: setting against every variable: the 33 others on this machine cost it 0.6 s of CPU a run.
PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
PASSED_ON_PREFIXES = ("MELTANO_", "TAP_", "TARGET_", "SYNC_", "DEMO_")


def scheduler_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in PASSED_ON or k.startswith(PASSED_ON_PREFIXES)}


def isolated_meltano_env(tmp: Path) -> dict[str, str]:
    """A Meltano process that keeps its system database and `.meltano` in `tmp`, finds the
    venv's plugins on PATH and sends no tracking."""
    return {
        **scheduler_env(os.environ),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp / 'meltano.db'}",
        "MELTANO_SYS_DIR_ROOT": str(tmp / ".meltano"),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_DISABLE_TRACKING": "true",
    }


def meltano_dump(what: str, plugin: str, env: Mapping[str, str]) -> dict:
    """`meltano invoke --dump=<what> <plugin>`: what Meltano hands the plugin in `env`, with a
    system database of its own (Meltano processes that create one at once collide)."""
    with tempfile.TemporaryDirectory(prefix="meltano-dump-") as tmp:
        own = {
            k: v
            for k, v in isolated_meltano_env(Path(tmp)).items()
            if k.startswith(("MELTANO_", "PATH"))
        }
        done = subprocess.run(
            [str(BIN / "meltano"), "invoke", f"--dump={what}", plugin],
            cwd=REPO, env=scheduler_env({**env, **own}), capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"meltano invoke --dump={what} {plugin}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


#: A file the processes of one xdist run share the dumps in (set by tests/conftest.py, in the
#: run's own temporary directory); None: this process asks Meltano itself.
SHARED_DUMPS: Path | None = None


@functools.cache
def base_dumps() -> dict[str, dict]:
    """Every plugin's config and every tap's catalog (by "config <plugin>", "catalog <tap>")
    as Meltano resolves them in `dev` with no test's variables: asked once per test run."""
    if SHARED_DUMPS is None:
        return ask_meltano()
    with open(SHARED_DUMPS.with_name(SHARED_DUMPS.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker asks, the others wait and read
        if SHARED_DUMPS.exists():
            return json.loads(SHARED_DUMPS.read_text())
        dumps = ask_meltano()
        SHARED_DUMPS.touch(mode=0o600)  # a key from .env may be in a config
        SHARED_DUMPS.write_text(json.dumps(dumps))
        return dumps


def ask_meltano() -> dict[str, dict]:
    own = tuple(env_prefix(p["name"]) for kind in project()["plugins"].values() for p in kind)
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env["MELTANO_ENVIRONMENT"] = "dev"
    wanted = [("config", p["name"]) for kind in project()["plugins"].values() for p in kind]
    wanted += [("catalog", p["name"]) for p in project()["plugins"]["extractors"]]
    with ThreadPoolExecutor(len(wanted)) as pool:  # Meltano starts slowly: all at once
        dumps = pool.map(lambda w: meltano_dump(*w, env), wanted)
        return {f"{w} {p}": dump for (w, p), dump in zip(wanted, dumps, strict=True)}


def plugin_config(plugin: str, env: Mapping[str, str]) -> dict:
    """The config Meltano would write for `plugin` in `env`: the session's base config with
    each declared setting that `env` sets laid over it."""
    config = copy.deepcopy(base_dumps()[f"config {plugin}"])
    for setting in definition(plugin)["settings"]:
        value = env.get(env_prefix(plugin) + setting["name"].upper())
        if value is None:
            continue
        kind, name = setting.get("kind", "string"), setting["name"]
        if kind == "object":  # Meltano lays an object over the lower levels' one, at depth
            config[name] = merge(cast(kind, value), config.get(name) or {})
        else:
            config[name] = cast(kind, value)
    return config


def catalog(tap: str) -> dict:
    return base_dumps()[f"catalog {tap}"]


@functools.cache
def catalog_file(tap: str) -> Path:
    """`catalog(tap)` in a file of this process's, for `meltano run` as its `catalog` extra."""
    directory = tempfile.mkdtemp(prefix="catalog-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = Path(directory) / f"{tap}.json"
    path.write_text(json.dumps(catalog(tap)))
    return path


def known_catalogs() -> dict[str, str]:
    """Meltano variables that give each tap the catalog Meltano made for this session (as
    the direct runner does), instead of a discovery at every `meltano run`: two plugin starts,
    2.6 s of CPU a run. Meltano applies no select or metadata rule to a catalog given so, and
    needs none: this one has them applied. tests/test_direct_run.py holds it to what Meltano
    makes, and the README commands' tests let Meltano discover."""
    taps = [p["name"] for p in project()["plugins"]["extractors"]]
    return {env_prefix(tap) + "_CATALOG": str(catalog_file(tap)) for tap in taps}


# ---------------------------------------------------------------------------- state


class StateStore:
    """Meltano's state, kept in a JSON file beside the system database `env` names (so a test
    that points MELTANO_DATABASE_URI elsewhere starts without state, as with Meltano): per
    state id `<environment>:<tap>-to-<target>`, what `meltano state get` prints."""

    def __init__(self, env: Mapping[str, str]):
        database = Path(env["MELTANO_DATABASE_URI"].removeprefix("sqlite:///"))
        self.path = database.with_name(database.stem + "-state.json")

    def all(self) -> dict[str, dict]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, state_id: str) -> dict:
        return self.all().get(state_id, {})

    def set(self, state_id: str, state: dict) -> None:
        states = {**self.all(), state_id: state}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(states))
        os.replace(temporary, self.path)  # a killed run leaves the last whole state


def merge(source: dict, into: dict) -> dict:
    """meltano.core.utils.merge: `source` laid over `into` at depth."""
    for key, value in source.items():
        if isinstance(value, dict):
            merge(value, into.setdefault(key, {}))
        else:
            into[key] = value
    return into


# ---------------------------------------------------------------------------- runs


def pairs(words: list[str]) -> list[tuple[str, str]]:
    """`meltano run` blocks (job names expanded into their tasks) as (tap, target) pairs."""
    jobs = {job["name"]: job["tasks"] for job in project().get("jobs", [])}
    plugins = [p for word in words for task in jobs.get(word, [word]) for p in task.split()]
    found = list(zip(plugins[::2], plugins[1::2], strict=True))
    assert all(is_extractor(tap) and not is_extractor(target) for tap, target in found), words
    return found


def run(args: list[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`meltano run <args>` done directly: each pair in order, stopping at the first that
    fails; stderr has both plugins' lines, stdout stays empty (Meltano prints nothing there)."""
    options = [a for a in args if a.startswith("-")]
    unknown = set(options) - set(OPTIONS)
    assert not unknown, f"the direct runner does not do {sorted(unknown)}: mark the test meltano"
    deadline = time.monotonic() + timeout
    log: list[str] = []
    code = 0
    for tap, target in pairs([a for a in args if not a.startswith("-")]):
        code = run_pair(tap, target, env, "--full-refresh" in options, log, deadline)
        if code:
            break
    return subprocess.CompletedProcess(["meltano", "run", *args], code, "", "".join(log))


def run_pair(
    tap: str,
    target: str,
    env: Mapping[str, str],
    full_refresh: bool,
    log: list[str],
    deadline: float,
) -> int:
    """tap | target as Meltano runs them: the tap gets the last state the target emitted
    (none on a full refresh), each state line is kept as it arrives (a failed run's too; on a
    full refresh merged over the old one, as Meltano merges it), the tap is killed when the
    target ends first, and the target finishes its input when the tap fails."""
    store = StateStore(env)
    state_id = f"{env['MELTANO_ENVIRONMENT']}:{tap}-to-{target}"
    before = store.get(state_id).get("singer_state")
    plugin_env = {**env, "MELTANO_PROJECT_ROOT": str(REPO)}
    # the config files hold API keys: a directory of the run's own, gone after it (as Meltano)
    with tempfile.TemporaryDirectory(prefix="direct-run-") as tmp:
        files = {
            "tap.json": plugin_config(tap, env),
            "target.json": plugin_config(target, env),
            "catalog.json": catalog(tap),
        }
        if before and not full_refresh:
            files["state.json"] = before
        for name, content in files.items():
            (Path(tmp) / name).write_text(json.dumps(content))
        tap_args = ["--config", f"{tmp}/tap.json", "--catalog", f"{tmp}/catalog.json"]
        if "state.json" in files:
            tap_args += ["--state", f"{tmp}/state.json"]
        producer = plugin_forks.start(tap, tap_args, REPO, plugin_env)
        target_args = ["--config", f"{tmp}/target.json"]
        consumer = plugin_forks.start(target, target_args, REPO, plugin_env, producer.stdout)
        assert producer.stdout and consumer.stdout
        producer.stdout.close()  # the target's end now; the tap gets EPIPE if it stops
        readers = [
            threading.Thread(target=collect, args=(p.stderr, log), daemon=True)
            for p in (producer, consumer)
        ]
        for reader in readers:
            reader.start()
        timed_out = threading.Event()
        watchdog = threading.Timer(
            max(deadline - time.monotonic(), 0), lambda: (timed_out.set(), kill(producer, consumer))
        )
        watchdog.start()
        partial: dict = {}  # a full refresh's states so far (Meltano's "incomplete" state)
        completed = (before or {}) if full_refresh else None
        try:
            for line in consumer.stdout:
                partial = keep_state(store, state_id, line, partial, completed)
            consumer.wait()
            target_first = producer.poll() is None
            if target_first:  # nothing reads the tap any more; its code does not count
                producer.kill()
            producer.wait()
            for reader in readers:
                reader.join()
        finally:
            watchdog.cancel()
            kill(producer, consumer)
    if timed_out.is_set():
        raise subprocess.TimeoutExpired([tap, target], 0, stderr="".join(log))
    return consumer.returncode if target_first else producer.returncode or consumer.returncode


def keep_state(
    store: StateStore, state_id: str, line: str, partial: dict, completed: dict | None
) -> dict:
    """One line of the target's stdout, kept as Meltano's BookmarkWriter keeps it (invalid or
    empty states skipped). On a full refresh (`completed`: the state before the run) Meltano
    keeps the lines as partial state, merged into each other and laid over the completed one;
    returns the partial state so far."""
    try:
        state = json.loads(line)
    except ValueError:
        return partial
    if not state:
        return partial
    if completed is not None:
        partial = merge(state, partial)
        state = merge(copy.deepcopy(partial), copy.deepcopy(completed))
    store.set(state_id, {"singer_state": state})
    return partial


def collect(stream, log: list[str]) -> None:
    for line in stream:
        log.append(line)  # list.append is atomic: both plugins' lines, in arrival order


def kill(*processes: plugin_forks.Plugin) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()


def invoke(
    plugin: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """`meltano invoke <plugin>` done directly, with nothing on its input: the plugin with the
    config Meltano would write (a tap also its catalog; no state: `invoke` runs outside a
    job); the result is returned, not checked."""
    with tempfile.TemporaryDirectory(prefix="direct-invoke-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(plugin_config(plugin, env)))
        args = ["--config", f"{tmp}/config.json"]
        if is_extractor(plugin):
            (Path(tmp) / "catalog.json").write_text(json.dumps(catalog(plugin)))
            args += ["--catalog", f"{tmp}/catalog.json"]
        process = plugin_forks.start(plugin, args, REPO, {**env, "MELTANO_PROJECT_ROOT": str(REPO)})
        errors: list[str] = []
        reader = threading.Thread(target=collect, args=(process.stderr, errors), daemon=True)
        reader.start()
        watchdog = threading.Timer(timeout, kill, args=(process,))
        watchdog.start()
        try:
            assert process.stdout is not None
            output = process.stdout.read()
            process.wait()
            reader.join()
        finally:
            watchdog.cancel()
            kill(process)
    return subprocess.CompletedProcess([plugin], process.returncode, output, "".join(errors))
