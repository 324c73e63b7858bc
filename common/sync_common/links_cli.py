"""`sync-links`: look at the link store of a pair of systems, and forget a link.

Subcommands: `bound` (the pair the store is bound to, links per resource), `find` (the links
of a record by either side's id), `list` (the links of a resource, as a table, CSV or JSON),
`dead-letters` (the records the far side refused, with the reasons), `forget` (delete one
link, so the next run matches the record again).

The store is the one the targets open: `--link-store-url`, else the default SQLite store of
the pair named by `--webshop-api-url` and `--chargebee-site`/`--chargebee-api-url`. Run as a
Meltano plugin command (`meltano invoke target-chargebee:links ...`), the target's own
settings fill in what the options leave out: Meltano gives the command the plugin's name
(`MELTANO_LOADER_NAME`) and its settings (`MELTANO_LOAD_<SETTING>`). It reads no API key and
shows a database password masked. It never creates or binds a store.

Exit status: 0 done, 1 no such link (or nothing forgotten), 2 bad usage, 3 no store there,
the store cannot be opened, or it is bound to another pair than the settings name.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import io
import json
import os
import sys
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

from sync_common.links import (
    PAIR_SETTINGS,
    LinkedSystems,
    LinkStore,
    LinkStoreUnavailable,
    default_link_store_url,
)

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_STORE = 3

#: Each target's settings that name the pair (the names its side uses), in the order of ROLES.
TARGET_PAIR_SETTINGS = {
    "target-chargebee": PAIR_SETTINGS["chargebee"],
    "target-customwebshop": PAIR_SETTINGS["webshop"],
}
ROLES = ("webshop", "chargebee_site", "chargebee_api_url")

#: What a table shows of a link: ids, versions and when each side was synced. The hashes
#: and the bases (field values: personal data) go to CSV and JSON, the bases on request.
LINK_TABLE = (
    "resource", "webshop_id", "chargebee_id", "webshop_version", "chargebee_version",
    "webshop_synced_at", "chargebee_synced_at",
)  # fmt: skip
BASES = ("webshop_base", "chargebee_base")


class Failure(Exception):  # noqa: N818  (an outcome to report, with its exit status)
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------- the store


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    link_store_url: str | None
    systems: LinkedSystems | None  # None: the settings name no complete pair

    @classmethod
    def of(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> StoreSettings:
        """The options, filled in from the Meltano plugin's settings when run as its command.
        A side given as an option is taken whole from the options."""
        plugin = _plugin_settings(environ)
        webshop = args.webshop_api_url or plugin.get("webshop")
        if args.chargebee_site or args.chargebee_api_url:
            site, chargebee_url = args.chargebee_site, args.chargebee_api_url
        else:
            site, chargebee_url = plugin.get("chargebee_site"), plugin.get("chargebee_api_url")
        systems = LinkedSystems.from_settings(webshop, site, chargebee_url)
        return cls(args.link_store_url or plugin.get("link_store_url"), systems)

    def open(self) -> LinkStore:
        """The store as the targets open it (the same default per pair), only if it exists,
        and only if it links the pair the settings name."""
        url = self.link_store_url or default_link_store_url(self.systems)
        try:
            store = LinkStore(url, look_only=True)
        except LinkStoreUnavailable as exc:
            raise Failure(f"{exc}{self._hint()}", EXIT_STORE) from None
        bound = store.bound_to()
        if self.systems is not None and bound is not None and bound[0] != self.systems:
            store.close()
            raise Failure(
                f"the link store {store.location} is bound to {_shown(bound[0])}, not to the "
                f"pair these settings name ({_shown(self.systems)}): its links are another "
                "pair's. Name that pair, or this pair's store (link_store_url).",
                EXIT_STORE,
            )
        return store

    def _hint(self) -> str:
        if self.link_store_url:
            return " (link_store_url)"
        if self.systems is None:
            return (
                " (the default store of no particular pair: name the pair with "
                "--webshop-api-url and --chargebee-site or --chargebee-api-url, or the store "
                "with --link-store-url)"
            )
        return f" (the default store of {_shown(self.systems)}: has a run synced this pair?)"


def _plugin_settings(environ: Mapping[str, str]) -> dict[str, str | None]:
    """The Meltano plugin's settings by role (`webshop`, `chargebee_site`, ...); none
    outside Meltano."""
    names = TARGET_PAIR_SETTINGS.get(environ.get("MELTANO_LOADER_NAME", ""))
    if names is None:
        return {}
    roles = {**dict(zip(ROLES, names, strict=True)), "link_store_url": "link_store_url"}
    return {
        role: environ.get(f"MELTANO_LOAD_{name.upper()}") or None for role, name in roles.items()
    }


def _shown(systems: LinkedSystems) -> str:
    return f"webshop {_masked(systems.webshop)} with Chargebee {_masked(systems.chargebee)}"


def _masked(url: str) -> str:
    """A URL with any password in it masked (an API URL may carry credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------- subcommands


def cmd_bound(store: LinkStore, args: argparse.Namespace, out: TextIO) -> int:
    bound = store.bound_to()
    dead_letters = len(store.open_dead_letters())
    links = store.counts()
    facts = {
        "link_store": store.location,
        "webshop": _masked(bound[0].webshop) if bound else None,
        "chargebee": _masked(bound[0].chargebee) if bound else None,
        "bound_at": bound[1] if bound else None,
        "links": links,
        "dead_letters": dead_letters,
    }
    if args.format == "json":
        _write_json(facts, out)
        return 0
    print(f"link store:   {facts['link_store']}", file=out)
    if bound:
        print(f"bound to:     {_shown(bound[0])}, since {_text(bound[1])}", file=out)
    else:
        print("bound to:     no pair yet (the next run binds it to its pair)", file=out)
    counts = ", ".join(f"{name} {n}" for name, n in links.items()) or "none"
    print(f"links:        {counts}", file=out)
    print(f"dead letters: {dead_letters} open", file=out)
    return 0


def cmd_find(store: LinkStore, args: argparse.Namespace, out: TextIO) -> int:
    links = store.find(
        webshop_id=args.webshop_id, chargebee_id=args.chargebee_id, resource=args.resource
    )
    if not links:
        side, value = _side(args)
        where = f"of {args.resource}" if args.resource else "of any resource"
        raise Failure(
            f"no link {where} has {side} id {value!r} in {store.location}", EXIT_NOT_FOUND
        )
    _write_rows(_link_rows(links, args.with_bases), LINK_TABLE, args.format, out)
    return 0


def cmd_list(store: LinkStore, args: argparse.Namespace, out: TextIO) -> int:
    counts = store.counts()
    if args.resource is not None and args.resource not in counts:
        have = ", ".join(counts) or "none"
        raise Failure(
            f"no links of resource {args.resource!r} in {store.location} "
            f"(resources with links: {have})",
            EXIT_NOT_FOUND,
        )
    links = store.links(args.resource)
    with _output(args.output, out) as target:
        _write_rows(_link_rows(links, args.with_bases), LINK_TABLE, args.format, target)
    if args.output:
        print(f"wrote {len(links)} links to {args.output}", file=sys.stderr)
    return 0


def cmd_dead_letters(store: LinkStore, args: argparse.Namespace, out: TextIO) -> int:
    # every field of DeadLetter (attempts, the first and last failure, the resolution)
    if args.all or args.run_id:
        found = store.dead_letters(args.run_id, stream=args.stream)
    else:
        found = store.open_dead_letters(args.stream)
    letters = [dataclasses.asdict(letter) for letter in found]
    # a table shows the plain fields; the record and its details go to CSV and JSON
    plain = [
        name
        for name, value in (letters[0].items() if letters else ())
        if not isinstance(value, dict | list)
    ] or ["stream", "record_key", "reason"]
    with _output(args.output, out) as target:
        _write_rows(letters, plain, args.format, target)
    if args.output:
        print(f"wrote {len(letters)} dead letters to {args.output}", file=sys.stderr)
    return 0


def cmd_forget(store: LinkStore, args: argparse.Namespace, out: TextIO) -> int:
    side, value = _side(args)
    found = store.find(
        webshop_id=args.webshop_id, chargebee_id=args.chargebee_id, resource=args.resource
    )
    if not found:
        raise Failure(
            f"no link of {args.resource} has {side} id {value!r} in "
            f"{store.location}: nothing forgotten",
            EXIT_NOT_FOUND,
        )
    link = found[0]
    described = f"{link.resource} link: webshop {link.webshop_id} <-> Chargebee {link.chargebee_id}"
    if not args.yes:
        print(f"Forget the {described}? [y/N] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Failure("nothing forgotten", EXIT_NOT_FOUND)
    forgotten = store.forget(
        args.resource, webshop_id=args.webshop_id, chargebee_id=args.chargebee_id
    )
    if forgotten is None:  # another process forgot it meanwhile
        raise Failure(f"the {described} was gone already: nothing forgotten", EXIT_NOT_FOUND)
    print(
        f"forgot the {described}. The next run that reads the record matches it again "
        "(a record left unchanged is read again by `meltano run --full-refresh sync`).",
        file=out,
    )
    return 0


def _side(args: argparse.Namespace) -> tuple[str, str]:
    return (
        ("webshop", args.webshop_id)
        if args.webshop_id is not None
        else ("Chargebee", args.chargebee_id)
    )


def _link_rows(links: Sequence[Any], with_bases: bool) -> list[dict[str, Any]]:
    rows = [dataclasses.asdict(link) for link in links]
    if not with_bases:
        for row in rows:
            for name in BASES:
                row.pop(name)
    return rows


# ---------------------------------------------------------------------------- output


def _write_rows(rows: list[dict[str, Any]], table: Sequence[str], fmt: str, out: TextIO) -> None:
    """A table of the `table` columns, or every field as CSV or JSON."""
    if fmt == "json":
        _write_json(rows, out)
    elif fmt == "csv":
        fields = list(rows[0]) if rows else list(table)
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({name: _csv_value(row.get(name)) for name in fields} for row in rows)
    else:
        cells = [[_text(row.get(name)) for name in table] for row in rows]
        widths = [
            max([len(name)] + [len(line[i]) for line in cells]) for i, name in enumerate(table)
        ]
        for line in [list(table), *cells]:
            print(
                "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out
            )


def _write_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False, default=_json_value)
    out.write("\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@contextlib.contextmanager
def _output(path: str | None, out: TextIO) -> Iterator[TextIO]:
    """`path` (created readable by its owner only: links and records are personal data),
    or `out`."""
    if not path:
        yield out
        return
    buffer = io.StringIO()
    yield buffer
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8", newline="") as file:
        file.write(buffer.getvalue())


# ---------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sync-links",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 done, 1 no such link, 2 bad usage, 3 no store or a store "
        "bound to another pair.",
    )
    top.add_argument("--link-store-url", help="the store's SQLAlchemy URL (link_store_url)")
    top.add_argument("--webshop-api-url", help="the pair's webshop API URL")
    top.add_argument("--chargebee-site", help="the pair's Chargebee site")
    top.add_argument("--chargebee-api-url", help="instead of --chargebee-site: its API URL")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, formats: Sequence[str]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.add_argument("--format", choices=formats, default=formats[0])
        return sub

    def by_id(sub: argparse.ArgumentParser) -> None:
        side = sub.add_mutually_exclusive_group(required=True)
        side.add_argument("--webshop-id", help="the record's id in the webshop")
        side.add_argument("--chargebee-id", help="the record's id in Chargebee")

    def bases(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--with-bases",
            action="store_true",
            help="add what each field held at the last sync (personal data)",
        )

    sub = command("bound", "the pair the store is bound to, and what it holds", ("table", "json"))
    sub.set_defaults(run=cmd_bound)

    sub = command("find", "the links of a record, by either side's id", ("table", "csv", "json"))
    by_id(sub)
    sub.add_argument("--resource", help="one resource only (customers, items, ...)")
    bases(sub)
    sub.set_defaults(run=cmd_find)

    sub = command("list", "the links of a resource (of all)", ("table", "csv", "json"))
    sub.add_argument("resource", nargs="?", help="customers, items, item_prices, orders, ...")
    sub.add_argument("--output", metavar="FILE", help="write there instead of to the screen")
    bases(sub)
    sub.set_defaults(run=cmd_list)

    sub = command(
        "dead-letters",
        "the records the far side refused and that have not gone through since, with the "
        "reasons and attempts",
        ("table", "csv", "json"),
    )
    sub.add_argument("--stream", help="one stream only")
    sub.add_argument("--run-id", help="those whose latest failure was in this run (its run_id)")
    sub.add_argument("--all", action="store_true", help="resolved ones too (default: open only)")
    sub.add_argument("--output", metavar="FILE", help="write there instead of to the screen")
    sub.set_defaults(run=cmd_dead_letters)

    sub = commands.add_parser(
        "forget",
        help="delete a link: the next run matches the record again",
        description="Delete a link: the next run that reads the "
        "record matches it again (first contact).",
    )
    sub.add_argument("resource", help="customers, items, item_prices, orders, ...")
    by_id(sub)
    sub.add_argument("--yes", action="store_true", help="do not ask")
    sub.set_defaults(run=cmd_forget, format="table")
    return top


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    try:
        store = StoreSettings.of(args, os.environ if environ is None else environ).open()
        try:
            return args.run(store, args, out)
        finally:
            store.close()
    except Failure as failure:
        print(f"sync-links: {failure}", file=sys.stderr)
        return failure.status


if __name__ == "__main__":
    sys.exit(main())
