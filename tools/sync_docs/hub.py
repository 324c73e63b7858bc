"""The Meltano Hub-style definitions in `meltano-hub/`, one per plugin, made by `sync-docs`.

A user's project adds a plugin from one with `meltano add --from-ref FILE`, the plugin type
given as an option (with a positional `loader` before the name, Meltano 4.4 adds the
definition twice: as the loader and as a utility of the same name):

    meltano add --plugin-type loader target-chargebee \\
        --from-ref meltano-hub/loaders/target-chargebee.yml

Each definition is the plugin's `--about --format=json` (description, capabilities, and every
setting the plugin reads, the SDK's built-in ones included, with its kind, description,
default and whether it is sensitive) plus what only meltano.yml says (namespace, executable,
commands), and a `pip_url` that installs the plugin and its core from this repository.
Meltano ignores an environment variable for a setting its project does not declare, so
every setting is declared here: `TARGET_CHARGEBEE_DRY_RUN=true` works in a project made with
`--from-ref`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

#: The Hub's variant of these plugins: tap-chargebee is another plugin on the Hub and on PyPI.
VARIANT = "webshop-chargebee-sync"
HUB_DIR = "meltano-hub"
#: JSON-schema type -> Meltano setting kind.
KINDS = {
    "string": "string",
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}


def plugin_about(plugin: str, fmt: str) -> str:
    """What `<plugin> --about --format=<fmt>` prints: the SDK's `print_about` of the class its
    console script calls, in this process (a plugin's start-up costs about 0.9 s of CPU)."""
    script = entry_points(group="console_scripts", name=plugin)[plugin]
    plugin_class = getattr(importlib.import_module(script.module), script.attr.split(".")[0])
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        plugin_class.print_about(output_format=fmt)
    return printed.getvalue()


def plugin_type(plugin: str) -> str:
    return "extractors" if plugin.startswith("tap-") else "loaders"


def definition_path(root: Path, plugin: str) -> Path:
    return root / HUB_DIR / plugin_type(plugin) / f"{plugin}.yml"


def repository_url(root: Path) -> str:
    """The repository the definitions install from: the root pyproject's `Repository` URL."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return str(project["urls"]["Repository"]).removesuffix("/")


def label(name: str) -> str:
    """`api_url` -> `API URL`, `dry_run` -> `Dry Run`."""
    words = name.split("_")
    return " ".join(w.upper() if w in ("api", "url", "id") else w.capitalize() for w in words)


def setting(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One `settings` entry of a definition, from the setting's JSON schema."""
    types = schema.get("type", "string")
    type_ = next(t for t in ([types] if isinstance(types, str) else types) if t != "null")
    kind = KINDS[type_]
    if schema.get("format") == "date-time":
        kind = "date_iso8601"
    if "enum" in schema:
        kind = "options"
    entry: dict[str, Any] = {
        "name": name,
        "label": schema.get("title") or label(name),
        "kind": kind,
        "description": schema.get("description") or schema.get("title") or name,
        "sensitive": bool(schema.get("secret")),
    }
    if "default" in schema:
        entry["value"] = schema["default"]
    if kind == "options":
        entry["options"] = [
            {"label": str(value).replace("_", " "), "value": value} for value in schema["enum"]
        ]
    return entry


def definition(plugin: str, about: dict[str, Any], declared: dict[str, Any], repo: str) -> dict:
    """A Hub definition of `plugin` from its `--about` JSON and its meltano.yml entry."""
    settings = about["settings"]
    subdirectory = f"git+{repo}.git#subdirectory="
    out: dict[str, Any] = {
        "name": plugin,
        "namespace": declared["namespace"],
        "variant": VARIANT,
        "label": plugin,
        "description": " ".join(about["description"].split()),
        "repo": repo,
        # the core too: it is not on PyPI; this URL meets the plugin's dependency on it
        "pip_url": f"{subdirectory}common {subdirectory}{plugin}",
        "executable": declared.get("executable", plugin),
        "capabilities": sorted(about["capabilities"]),
    }
    if declared.get("commands"):
        out["commands"] = declared["commands"]
    if settings.get("required"):
        out["settings_group_validation"] = [sorted(settings["required"])]
    out["settings"] = [setting(name, schema) for name, schema in settings["properties"].items()]
    return out


def render(plugin: str, root: Path) -> str:
    project = yaml.safe_load((root / "meltano.yml").read_text())
    declared = next(p for p in project["plugins"][plugin_type(plugin)] if p["name"] == plugin)
    about = json.loads(plugin_about(plugin, "json"))
    header = (
        f"# Generated by `make docs` (sync-docs) from `{plugin} --about --format=json` and\n"
        f"# meltano.yml: do not edit. Add it to a Meltano project with\n"
        f"#   meltano add --plugin-type {plugin_type(plugin)[:-1]} {plugin} --from-ref "
        f"{definition_path(Path(), plugin)}\n"
    )
    body = definition(plugin, about, declared, repository_url(root))
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)
