"""`sync-docs`: the generated documents, made from what the code and meltano.yml say.

- `docs/dataflow.md`: the "Customwebshop to Chargebee Dataflow" checklist, filled in from the
  stream maps in meltano.yml. One section per link (Customer ↔ Business_entity/customer,
  Order ↔ Order, Product ↔ Item), each with a property table per direction. The webshop
  properties are read from the map expressions (parsed, not guessed); the Chargebee data
  types are the emulator's parameter specs (`sync_sandbox.chargebee.operations`), so they are
  written down once. (The official SDK's typed models, `chargebee.models.*`, would be the
  other source; they give str/int/bool and the enums, the same but for an imported invoice's
  payment method, where the SDK has every method and not the few import takes, and no
  lengths, bounds, e-mail format, or seconds versus milliseconds.)
- In each plugin's README, the part between the `sync-docs:about` markers: the plugin's
  `--about --format=markdown` output (headings two levels down, lines trimmed).
- `meltano-hub/{extractors,loaders}/<plugin>.yml`: each plugin's Meltano Hub-style
  definition, for `meltano add --from-ref` (`sync_docs.hub`).
- `tap-chargebee/tap_chargebee/schemas/<stream>.json`: tap-chargebee's stream schemas, from
  the official Chargebee SDK's response models (`sync_docs.chargebee_schemas`).

`sync-docs` writes them; `sync-docs --check` fails when a committed file differs. It works on
the source checkout it is run in (the nearest directory up from the current one that holds
`meltano.yml`, or `--root`). A development tool: it reads the plugins and the emulator, and
nothing the plugins run imports it.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from sync_docs import chargebee_schemas, hub
from sync_sandbox.chargebee import operations as cb
from sync_sandbox.chargebee.params import Field
from target_chargebee.params import CONTROL_FIELDS as FORWARD_CONTROL
from target_customwebshop.resources import CONTROL_FIELDS as BACK_CONTROL
from target_customwebshop.resources import RULES as BACK_SINKS

PLUGINS = ("tap-customwebshop", "target-chargebee", "tap-chargebee", "target-customwebshop")
ABOUT_START, ABOUT_END = "<!-- sync-docs:about -->", "<!-- /sync-docs:about -->"

#: The checklist's links, by webshop resource.
LINKS = {
    "customers": ("Customer ↔ Business_entity/customer", "Customer"),
    "orders": ("Order ↔ Order", "Order"),
    "products": ("Product ↔ Item", "Product"),
}
#: What Chargebee holds per stream of the target / tap: its object and the operations whose
#: parameters it takes (creates first; later operations add what only they accept).
CHARGEBEE = {
    "customers": ("customer", (cb.CUSTOMER_CREATE, cb.CUSTOMER_UPDATE)),
    "items": ("item", (cb.ITEM_CREATE, cb.ITEM_UPDATE)),
    "item_prices": ("item price", (cb.PRICE_CREATE, cb.PRICE_UPDATE)),
    "invoices": ("imported invoice", (cb.IMPORT_INVOICE,)),
    "orders": ("imported order", (cb.ORDER_IMPORT, cb.ORDER_UPDATE)),
}
#: Attributes Chargebee sets itself (no operation takes them), as tap-chargebee reads them.
READ_ONLY = {
    "id": Field("str"),
    "resource_version": Field("long"),
    "updated_at": Field("ts"),
    "deleted": Field("bool"),
}
#: Names a map expression may use that are not fields of the record.
NOT_FIELDS = frozenset({
    "config", "record", "self", "_", "datetime", "json", "str", "int", "float", "bool", "len",
    "md5", "sha256", "fake", "__stream_name__", "__original_stream_name__", "None",
})  # fmt: skip
MAP_KEYWORDS = ("__source__", "__filter__", "__alias__", "__key_properties__", "__else__")


# ---------------------------------------------------------------------------- expressions


def fields_used(expression: str) -> list[str]:
    """The record fields an expression reads, as paths: `billing_address.city`,
    `line_items[].product_id` (a field of each element of a list)."""
    found: list[str] = []
    _visit(ast.parse(str(expression).strip(), mode="eval").body, {}, found)
    unique = list(dict.fromkeys(found))
    # `a['b'] if a else None` reads a.b: testing `a` itself reads no further field
    return [p for p in unique if not any(q.startswith((f"{p}.", f"{p}[]")) for q in unique)]


def _visit(node: ast.AST, scope: dict[str, str | None], found: list[str]) -> None:
    path = _path(node, scope)
    if path:
        found.append(path)
        return
    if isinstance(node, ast.Name) and node.id in scope:
        return  # a comprehension variable that stands for no field
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        inner = dict(scope)
        for generator in node.generators:
            _visit(generator.iter, inner, found)
            iterated = _path(generator.iter, inner)
            for target in ast.walk(generator.target):
                if isinstance(target, ast.Name):
                    single = isinstance(generator.target, ast.Name) and iterated
                    inner[target.id] = f"{iterated}[]" if single else None
            for condition in generator.ifs:
                _visit(condition, inner, found)
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for part in parts:
            _visit(part, inner, found)
        return
    for child in ast.iter_child_nodes(node):
        _visit(child, scope, found)


def _path(node: ast.AST, scope: Mapping[str, str | None]) -> str | None:
    """`name`, `name['key']`, `record['name']`, `record.get('name')`, `(x or {}).get('key')`
    as a field path; None for anything else."""
    if isinstance(node, ast.Name):
        if node.id in scope:
            return scope[node.id]
        return None if node.id in NOT_FIELDS else node.id
    key, base = None, None
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key, base = node.slice.value, node.value
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        key, base = node.args[0].value, node.func.value
    if not isinstance(key, str) or base is None:
        return None
    if isinstance(base, ast.BoolOp) and isinstance(base.op, ast.Or):
        base = base.values[0]  # `(record.get('a') or {}).get('b')` reads a.b
    if isinstance(base, ast.Name) and base.id in ("record", "_"):
        return key
    parent = _path(base, scope)
    if parent is None:
        return None
    return f"{parent}.{key}"


# ---------------------------------------------------------------------------- Chargebee types


def chargebee_type(stream: str, path: str) -> str:
    """The data type of a Chargebee param or attribute: `billing_address[city]` (a form key),
    `billing_address.zip` (a JSON path), `payments[amount][0]`, `line_items`."""
    names = [name for name in re.split(r"[\[\].]+", path) if name and not name.isdigit()]
    field = _spec(stream, names[0])
    for name in names[1:]:
        field = field.sub.get(name) if field else None
    return describe(field) if field else "(not a Chargebee parameter)"


def _spec(stream: str, name: str) -> Field | None:
    for operation in CHARGEBEE[stream][1]:
        if name in operation:
            return operation[name]
    return READ_ONLY.get(name)


def read_type(stream: str, path: str) -> str:
    """The data type of an attribute as tap-chargebee emits it: the API's, but a timestamp is
    a date-time (tap_chargebee.timestamps)."""
    kind = chargebee_type(stream, path)
    return "date-time (Unix seconds in the API)" if kind == describe(Field("ts")) else kind


def describe(field: Field) -> str:
    if field.kind == "str":
        text = f"string (max {field.max_length})" if field.max_length else "string"
        if field.choices:
            text = "enum: " + ", ".join(field.choices)
        return text + (", e-mail" if field.email else "")
    if field.kind == "int":
        return "integer" if field.minimum is None else f"integer ≥ {field.minimum}"
    return {
        "ts": "timestamp (Unix seconds)",
        "bool": "boolean",
        "long": "long (millisecond timestamp)",
        "json": "JSON",
        "obj": "object",
        "objs": "array of objects",
        "strs": "array of strings",
    }[field.kind]


# ---------------------------------------------------------------------------- the document


def load_maps(meltano_yml: Path) -> tuple[dict, dict, dict]:
    """(forward maps, back maps, stream_map_config) from meltano.yml."""
    project = yaml.safe_load(meltano_yml.read_text())
    loaders = {p["name"]: p.get("config", {}) for p in project["plugins"]["loaders"]}
    forward = loaders["target-chargebee"]
    return (
        forward["stream_maps"],
        loaders["target-customwebshop"]["stream_maps"],
        forward.get("stream_map_config", {}),
    )


def render_dataflow(meltano_yml: Path) -> str:
    forward, back, map_config = load_maps(meltano_yml)
    out = [
        "# Customwebshop to Chargebee Dataflow",
        "",
        "<!-- Generated by `make docs` (`sync-docs`) from meltano.yml's stream maps. "
        "Do not edit: edit the maps and run `make docs`. -->",
        "",
        "The checklist of the Customwebshop ⇄ Chargebee dataflow, one section per link, filled "
        "in from the stream maps in [`meltano.yml`](../meltano.yml): `target-chargebee`'s maps "
        "(webshop → Chargebee) and `target-customwebshop`'s (Chargebee → webshop). Each row is "
        "one map entry; *webshop property* lists the fields its expression reads (`a.b`: member "
        "`b` of object `a`; `a[].b`: `b` of each element of list `a`); *Chargebee data type* is "
        "the parameter as the Chargebee API takes it (the emulator's specs in "
        "`sandbox/sync_sandbox/chargebee/operations.py`), where tap-chargebee's timestamps are "
        "date-times. Control fields say which record this "
        "is and are not written.",
        "",
        f"Chargebee ids are `{map_config.get('id_prefix', '')}` + the webshop id "
        "(`config['id_prefix']`).",
        "",
    ]
    for resource, (title, entity) in LINKS.items():
        out += [f"## {title}", ""]
        if resource == "customers":
            out += [
                "Chargebee's API cannot create, update or list business entities: a webshop "
                "Customer becomes a Chargebee customer placed in a business entity (the "
                "`business_entity_id` setting of target-chargebee, or a `business_entity_id` "
                "entry in this map); a change of entity is a transfer.",
                "",
            ]
        for stream, stream_map in forward.items():
            if not isinstance(stream_map, dict) or stream_map.get("__source__", stream) != resource:
                continue
            thing = CHARGEBEE[stream][0]
            out += [f"### Webshop {entity} → Chargebee {thing} (stream `{stream}`)", ""]
            if "__filter__" in stream_map:
                out += [f"Only records for which `{stream_map['__filter__']}`.", ""]
            out += _table(
                ("Webshop property", "Chargebee property", "Chargebee data type", "Expression"),
                _forward_rows(stream, stream_map),
            )
        for stream, stream_map in back.items():
            if BACK_SINKS[stream].webshop_resource != resource:
                continue
            thing = CHARGEBEE[stream][0].removeprefix("imported ")
            out += [f"### Chargebee {thing} → webshop {entity} (stream `{stream}`)", ""]
            out += _table(
                ("Webshop property", "Chargebee property", "Chargebee data type", "Expression"),
                _back_rows(stream, stream_map),
            )
    return "\n".join(out).rstrip() + "\n"


def _entries(stream_map: dict) -> Iterator[tuple[str, str]]:
    for key, expression in stream_map.items():
        if key not in MAP_KEYWORDS:
            yield key, " ".join(str(expression).split())


def _forward_rows(stream: str, stream_map: dict) -> Iterator[tuple[str, ...]]:
    for key, expression in _entries(stream_map):
        kind = "control field" if key in FORWARD_CONTROL else chargebee_type(stream, key)
        yield ", ".join(fields_used(expression)) or "—", key, kind, expression


def _back_rows(stream: str, stream_map: dict) -> Iterator[tuple[str, ...]]:
    for key, expression in _entries(stream_map):
        used = fields_used(expression)
        kinds = "; ".join(dict.fromkeys(read_type(stream, path) for path in used))
        kind = f"control field: {kinds}" if key in BACK_CONTROL else kinds
        yield key.replace("[", ".").rstrip("]"), ", ".join(used) or "—", kind, expression


def _table(header: tuple[str, ...], rows: Iterator[tuple[str, ...]]) -> list[str]:
    def code(text: str) -> str:
        return "—" if text == "—" else "`" + text.replace("|", "\\|") + "`"

    def names(text: str) -> str:
        return ", ".join(code(name) for name in text.split(", "))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for webshop, chargebee, kind, expression in rows:
        cells = (names(webshop), names(chargebee), kind, code(expression))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


# ---------------------------------------------------------------------------- READMEs


def about_markdown(plugin: str) -> str:
    """`<plugin> --about --format=markdown`, headings two levels down (below the README's)."""
    text = hub.plugin_about(plugin, "markdown")
    text = "\n".join(line.strip() for line in text.strip().splitlines())  # docstring indents
    return re.sub(r"^(#+) ", r"\1## ", text, flags=re.MULTILINE)


def with_about(readme: str, about: str) -> str:
    start, end = readme.index(ABOUT_START), readme.index(ABOUT_END)
    return f"{readme[: start + len(ABOUT_START)]}\n\n{about}\n\n{readme[end:]}"


def project_root(start: Path | None = None) -> Path:
    """The source checkout: the nearest directory from `start` (the current one) upwards that
    holds `meltano.yml`."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "meltano.yml").is_file():
            return directory
    raise SystemExit(f"sync-docs: no meltano.yml in {here} or above; run it in the checkout")


def documents(root: Path | None = None) -> dict[Path, str]:
    """Every generated file under `root` (the checkout) and its content as it should be now."""
    root = root or project_root()
    docs = {root / "docs" / "dataflow.md": render_dataflow(root / "meltano.yml")}
    for plugin in PLUGINS:
        readme = root / plugin / "README.md"
        docs[readme] = with_about(readme.read_text(), about_markdown(plugin))
        docs[hub.definition_path(root, plugin)] = hub.render(plugin, root)
    docs.update(chargebee_schemas.documents(root))
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sync-docs", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is not current")
    parser.add_argument("--root", type=Path, help="the checkout (default: found from here up)")
    args = parser.parse_args(argv)
    root = project_root(args.root)
    stale = []
    for path, text in documents(root).items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(root))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
