"""The direct runner (tests/direct_run.py) hands each plugin what Meltano would: in the
environments the tests make, its config equals `meltano invoke --dump=config` and its catalog
`meltano invoke --dump=catalog`, so a change to meltano.yml, a setting's kind or Meltano that
the runner does not follow fails here rather than making the other tests test something
else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from sync_docs import hub
from tests import direct_run, plugin_forks
from tests.fault_ledger import FAST_RETRIES
from tests.harness import TwoWaySync

PLUGINS = ("tap-customwebshop", "target-chargebee", "tap-chargebee", "target-customwebshop")
#: No server needs to run: the config only names their addresses.
SHOP = SimpleNamespace(url="http://127.0.0.1:18765")
CHARGEBEE = SimpleNamespace(url="http://127.0.0.1:18766")


def environment(tmp_path) -> dict[str, str]:
    """A TwoWaySync's (every variable a Sync sets), with a setting of each kind tests set."""
    env = TwoWaySync(tmp_path, SHOP, CHARGEBEE, meltano=False).env
    maps = {"customers": {"id": "str(id)", "email": "email", "__else__": "__NULL__"}}
    env.update(
        FAST_RETRIES,
        TARGET_CHARGEBEE_DRY_RUN="true",  # boolean
        TARGET_CUSTOMWEBSHOP_DRY_RUN="1",
        TAP_CHARGEBEE_RETRY_DEAD_LETTERS="false",
        TAP_CUSTOMWEBSHOP_PAGE_SIZE="2",  # integer
        TARGET_CHARGEBEE_CONFLICT_POLICY="webshop_wins",  # options
        TARGET_CHARGEBEE_STREAM_MAPS=json.dumps(maps),  # object: laid over meltano.yml's
        TAP_CHARGEBEE_START_DATE="2026-01-02T03:04:05Z",  # date_iso8601
    )
    return env


@pytest.mark.meltano
def test_each_plugins_config_and_catalog_are_what_meltano_gives_it(tmp_path):
    env = environment(tmp_path)
    cases = [("config", plugin) for plugin in PLUGINS]
    cases += [("catalog", tap) for tap in PLUGINS if tap.startswith("tap-")]

    def compare(case: tuple[str, str]) -> str | None:
        kind, plugin = case
        meltanos = direct_run.meltano_dump(kind, plugin, env)
        direct = (direct_run.plugin_config(plugin, env) if kind == "config"
                  else direct_run.catalog(plugin))  # fmt: skip
        if direct == meltanos:
            return None
        differ = sorted(k for k in {*direct, *meltanos} if direct.get(k) != meltanos.get(k))
        return f"{plugin} {kind}: differs in {differ}"

    with ThreadPoolExecutor(4) as pool:  # one Meltano start-up per case: several at once
        problems = [p for p in pool.map(compare, cases) if p]
    assert not problems, problems


def test_a_setting_the_environment_sets_is_read_by_its_kind():
    env = {
        "TARGET_CHARGEBEE_DRY_RUN": "yes",
        "TARGET_CHARGEBEE_MAX_CONCURRENCY": "7",
        "TARGET_CHARGEBEE_STREAM_MAPS": '{"orders": "__NULL__", "customers": {"id": "id"}}',
        "TARGET_CHARGEBEE_UNDECLARED": "ignored",
    }
    config = direct_run.plugin_config("target-chargebee", env)
    assert (config["dry_run"], config["max_concurrency"]) == (True, 7)
    maps = config["stream_maps"]
    assert (maps["orders"], maps["customers"]["id"]) == ("__NULL__", "id")
    # laid over meltano.yml's maps, as Meltano does: the rest of them stay
    assert (maps["products"], maps["customers"]["email"]) == ("__NULL__", "email")
    assert "undeclared" not in config


# ---------------------------------------------------------------- the forked plugins


def started(plugin: str, args: list[str], fork: bool, **kwargs) -> plugin_forks.Plugin:
    return plugin_forks.start(plugin, args, direct_run.REPO, os.environ, fork=fork, **kwargs)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_forked_plugin_answers_as_its_executable_does(plugin, tmp_path):
    """Same output, log lines (but their times) and exit status: its `--about` (also as
    sync-docs reads it in-process), and a config that fails validation."""
    config = tmp_path / "config.json"
    config.write_text("{}")
    for args in (["--about", "--format=json"], ["--config", str(config)]):
        forked, executable = (started(plugin, args, fork) for fork in (True, False))
        assert isinstance(forked, plugin_forks.ForkedPlugin)
        printed = executable.stdout.read()  # type: ignore[union-attr]
        assert forked.stdout.read() == printed, args  # type: ignore[union-attr]
        if args[0] == "--about":  # and what `make docs` takes for it, in its own process
            assert hub.plugin_about(plugin, "json") == printed
        logs = [
            [line.split(" | ", 1)[-1] for line in process.stderr]  # type: ignore[union-attr]
            for process in (forked, executable)
        ]
        assert logs[0] == logs[1], args
        assert forked.wait(timeout=60) == executable.wait(timeout=60), args


def test_a_forked_plugin_waits_on_its_input_and_is_killed_as_a_process_is(tmp_path):
    """A target with its input held open runs until killed; then its status is SIGKILL's,
    as `Popen.returncode` gives it."""
    config = tmp_path / "target.json"
    settings = {"api_key": "unused", "chargebee_api_key": "unused"}  # nothing is called
    config.write_text(json.dumps(direct_run.plugin_config("target-customwebshop", {}) | settings))
    read_end, write_end = os.pipe()
    with open(read_end) as given, open(write_end, "w"):
        target = started("target-customwebshop", ["--config", str(config)], True, stdin=given)
        with pytest.raises(subprocess.TimeoutExpired):
            target.wait(timeout=3)  # started, and waiting for a line
        assert target.poll() is None
        target.kill()
        assert target.wait(timeout=60) == -signal.SIGKILL
