"""Every `meltano …` command the READMEs and docs/ show (in code spans and code blocks) is one
Meltano 4 accepts: run against this project in an isolated Meltano environment, with `--help`
appended where running it would change state or need the servers, for real where it only
reads (`meltano state list`). One Meltano process per command shape (subcommand and option
names; for `invoke`, the plugin and its command): under `--help` Meltano checks no more than
that. The arguments given to the targets' `links` command (`sync-links`) are parsed by its own
parser, in-process."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from meltano.core.plugin import PluginType

from sync_common import links_cli
from tests import direct_run
from tests.harness import BIN, REPO, isolated_meltano_env

DOCUMENTS = sorted(
    [REPO / "README.md", *REPO.glob("tap-*/README.md"), *REPO.glob("target-*/README.md")]
) + sorted(REPO.glob("docs/*.md"))

#: `meltano run` itself: the documented Meltano commands.
pytestmark = pytest.mark.meltano
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")  # a code span may wrap onto the next lines
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
MELTANO = re.compile(r"(?:^|\s)meltano(?:\s|$)")
#: meltano's own options that take a value (before the subcommand).
GLOBAL_VALUED = {"--environment", "--log-level", "--log-format", "--log-config", "--cwd"}
GLOBAL_VALUED |= {"--env-file"}
GROUPS = {"config", "state", "job", "environment", "schedule", "plugin", "logs", "hub"}
READ_ONLY = {("state", "list"), ("config", "list")}  # run for real: cheap, change nothing
#: A run that `--help` did not stop would find no server and keep its files in the tmp dir.
NOWHERE = "http://127.0.0.1:9/nowhere"
URL_SETTINGS = ("TAP_CUSTOMWEBSHOP", "TAP_CHARGEBEE", "TARGET_CHARGEBEE", "TARGET_CUSTOMWEBSHOP")


def documented_commands() -> dict[tuple[str, ...], str]:
    """Each `meltano …` command of the documents, as its words, and the document it is in."""
    found: dict[tuple[str, ...], str] = {}
    for path in DOCUMENTS:
        text = path.read_text()
        snippets = [line for block in FENCE.findall(text) for line in block.splitlines()]
        snippets += [span.replace("\n", " ") for span in SPAN.findall(FENCE.sub("", text))]
        for snippet in snippets:
            if not MELTANO.search(snippet):
                continue
            words = shlex.split(snippet, comments=True)
            while words and ASSIGNMENT.match(words[0]):  # VAR=value meltano …
                words.pop(0)
            if words[:1] == ["meltano"]:
                found.setdefault(tuple(words), str(path.relative_to(REPO)))
    return found


def subcommand(words: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """Where the subcommand starts, and its path: `("config", "set")`, `("run",)`,
    `("invoke", "target-chargebee:links")`."""
    at = 1
    while at < len(words) and words[at].startswith("-"):
        at += 2 if words[at] in GLOBAL_VALUED else 1
    rest = words[at:]
    if rest[:1] == ("invoke",):
        plugin = [w for w in rest[1:] if not w.startswith("-")][:1]
        return at, ("invoke", *plugin)
    if rest[:1] and rest[0] in GROUPS and len(rest) > 1 and not rest[1].startswith("-"):
        return at, rest[:2]
    return at, rest[:1]


def project_plugins() -> dict[str, dict]:
    plugins = direct_run.project()["plugins"]  # parsed once: this is asked per test collected
    return {plugin["name"]: plugin for kind in plugins.values() for plugin in kind}


def command_to_run(words: tuple[str, ...]) -> list[str]:
    """The command as the test runs it: for real when it only reads, else with `--help` where
    Meltano takes it (before the plugin of an `invoke`, when the plugin is one the documents
    add first, such as dagster)."""
    at, path = subcommand(words)
    if path in READ_ONLY:
        return list(words)
    if path[:1] == ("invoke",) and path[1:] and path[1].split(":")[0] not in project_plugins():
        return [*words[: at + 1], "--help", *words[at + 1 :]]
    return [*words, "--help"]


def shape(words: tuple[str, ...]) -> tuple:
    """What `--help` has Meltano check: the subcommand and the names of the options given."""
    _, path = subcommand(words)
    options = sorted({w.split("=")[0] for w in words if w.startswith("--")})
    return (path, tuple(options) if path[0] != "invoke" else ())  # the plugin's are its own


def distinct_commands() -> list[tuple[str, ...]]:
    by_shape: dict[tuple, tuple[str, ...]] = {}
    for words in documented_commands():
        by_shape.setdefault(shape(words), words)
    return list(by_shape.values())


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("readme-commands")
    env = isolated_meltano_env(tmp)
    for plugin in URL_SETTINGS:
        env[f"{plugin}_API_URL"] = NOWHERE
        env[f"{plugin}_LINK_STORE_URL"] = f"sqlite:///{tmp / 'links.db'}"
    env.update(TARGET_CHARGEBEE_REPORT_DIR=str(tmp), TARGET_CUSTOMWEBSHOP_REPORT_DIR=str(tmp))
    return env


def test_the_documents_show_meltano_commands():
    commands = documented_commands()
    assert len(commands) >= 15, commands
    assert {"README.md", "target-chargebee/README.md"} <= set(commands.values())


def run(words: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = command_to_run(words)
    return subprocess.run(
        [str(BIN / "meltano"), *command[1:]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("words", distinct_commands(), ids=shlex.join)
def test_meltano_accepts_the_command(words, env):
    result = run(words, env)
    output = result.stdout + result.stderr
    where = documented_commands()[words]
    assert "No such command" not in output and "No such option" not in output, (where, output)
    assert result.returncode == 0, (where, shlex.join(result.args), output[-3000:])
    if "--help" in result.args:  # the help, not a run: Meltano took the command up to there
        assert re.search(r"^usage:", result.stdout, re.I | re.M), (where, output[-3000:])


@pytest.mark.parametrize("words", list(documented_commands()), ids=shlex.join)
def test_no_plugin_type_as_an_argument(words):
    """Meltano 4 dropped the plugin type as a positional argument (`meltano add utility
    airflow` is Meltano 3's): it is `--plugin-type`. `--help` does not show this, as Meltano
    reads positional arguments only when it runs the command."""
    types = {str(kind) for kind in PluginType} | {kind.singular for kind in PluginType}
    misplaced = [
        word
        for before, word in zip(words, words[1:], strict=False)
        if word in types and before != "--plugin-type"
    ]
    assert not misplaced, (documented_commands()[words], misplaced)


def test_an_old_command_is_refused(env):
    """The check itself: Meltano 3's `meltano config <plugin> set …` fails it."""
    result = run(("meltano", "config", "target-chargebee", "set", "dry_run", "true"), env)
    assert result.returncode != 0 and "No such command" in result.stderr


def links_invocations() -> list[tuple[str, ...]]:
    """The documented `meltano invoke <plugin>:links …` commands."""
    found = []
    for words in documented_commands():
        _, path = subcommand(words)
        plugin, _, name = path[1].partition(":") if len(path) > 1 else ("", "", "")
        command = project_plugins().get(plugin, {}).get("commands", {}).get(name, {})
        if path[0] == "invoke" and command.get("executable") == "sync-links":
            found.append(words)
    return found


@pytest.mark.parametrize("words", links_invocations(), ids=shlex.join)
def test_sync_links_accepts_the_arguments(words):
    """What `meltano invoke` hands the `links` command, parsed by `sync-links` itself (a bad
    subcommand or option exits 2)."""
    at, path = subcommand(words)
    arguments = list(words[words.index(path[1], at) + 1 :])
    links_cli.parser().parse_args(arguments)
