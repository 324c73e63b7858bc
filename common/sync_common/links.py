"""The link store: which webshop record is which Chargebee record, what the sync last wrote
to or saw on each side, and the records the far side refused (dead letters).

SQLAlchemy Core over SQLite (the default, inside the Meltano project) or PostgreSQL (when
several runners share it). Thread-safe: every call runs in its own short transaction.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import fcntl
import functools
import hashlib
import json
import math
import os
import threading
import typing as t
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from sync_common.chargebee import chargebee_base_url
from sync_common.report import current_run_id
from sync_common.run_lock import RunLock

Side = Literal["webshop", "chargebee"]

#: A version as the API gives it: webshop `version` / `updated_at`, Chargebee
#: `resource_version`. Stored as JSON so it reads back with its type and compares equal.
Version = int | str | None


def superseded(version: Version, accounted: Version) -> bool:
    """A record read at an older version than the one its link accounts for: another run
    wrote (or saw) a newer one after this was read, so nothing in it is news. Both APIs'
    versions grow with every write (webshop `version`, Chargebee `resource_version`)."""
    both_numbers = isinstance(version, int) and isinstance(accounted, int)
    return both_numbers and t.cast(int, version) < t.cast(int, accounted)


def content_hash(mapping: Any) -> str:
    """sha256 of the canonical JSON of `mapping`: the same for values equal in content."""
    canonical = json.dumps(
        _plain(mapping), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class LinkedSystems:
    """The pair of systems a link store links, by API base URL (a Chargebee site's own URL
    when only `site` is set): links made for one pair mean nothing for another."""

    webshop: str
    chargebee: str

    @classmethod
    def of(cls, webshop_api_url: str, chargebee_api_url: str) -> LinkedSystems:
        return cls(_canonical_url(webshop_api_url), _canonical_url(chargebee_api_url))

    @classmethod
    def from_settings(
        cls, webshop_api_url: str | None, chargebee_site: str | None, chargebee_api_url: str | None
    ) -> LinkedSystems | None:
        """The pair these settings name; None while a side is missing."""
        if not webshop_api_url or not (chargebee_site or chargebee_api_url):
            return None
        return cls.of(webshop_api_url, chargebee_base_url(chargebee_site, chargebee_api_url))

    @classmethod
    def from_config(cls, config: t.Mapping[str, Any], side: Side) -> LinkedSystems | None:
        """The pair a plugin's config names, by the settings of a plugin of `side`
        (PAIR_SETTINGS); None while a side is missing."""
        webshop, site, chargebee = (config.get(name) for name in PAIR_SETTINGS[side])
        return cls.from_settings(webshop, site, chargebee)

    def __str__(self) -> str:
        return f"webshop {self.webshop} with Chargebee {self.chargebee}"

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.webshop}\n{self.chargebee}".encode()).hexdigest()[:12]


#: The settings that name the pair in the config of a plugin of each side (its own API's
#: `api_url`, the far side's by the names below): webshop API URL, Chargebee site, Chargebee
#: API URL. Both plugins of a side (its tap and its target) use the same names.
PAIR_SETTINGS: dict[Side, tuple[str, str, str]] = {
    "webshop": ("api_url", "chargebee_site", "chargebee_api_url"),
    "chargebee": ("webshop_api_url", "site", "api_url"),
}

#: The settings that name the far side, so that each plugin knows the whole pair (the
#: targets bind the link store to it; the taps find the store's dead letters by it).
WEBSHOP_API_URL = th.Property(
    "webshop_api_url",
    th.StringType,
    description="Base URL of the webshop API of the pair of systems synced (the webshop "
    "plugins' api_url). The link store is bound to this webshop and this Chargebee site: a "
    "run against another pair is refused before it writes.",
)
CHARGEBEE_SITE = th.Property(
    "chargebee_site",
    th.StringType,
    description="The Chargebee site of the pair of systems synced (the Chargebee plugins' "
    "site). The link store is bound to this site and this webshop: a run against another "
    "pair is refused before it writes.",
)
CHARGEBEE_API_URL = th.Property(
    "chargebee_api_url",
    th.StringType,
    description="Instead of chargebee_site: the Chargebee API URL of the pair (the Chargebee "
    "plugins' api_url, e.g. the emulator).",
)


def open_store(url: str | None, systems: LinkedSystems | None, *, side: Side) -> LinkStore:
    """The link store of a run of a target writing `side`, bound to its pair; a failure stops
    the run at start with a message naming link_store_url."""
    try:
        return LinkStore(url, systems=systems, merges_on=side)
    except (LinkStoreUnavailable, LinkStoreBoundElsewhere) as exc:
        raise ConfigValidationError(
            "Config validation failed", errors=[f"link_store_url: {exc}"]
        ) from None


def _canonical_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    return urllib.parse.urlunsplit(
        (parsed.scheme.lower(), parsed.netloc.lower(), parsed.path.rstrip("/"), "", "")
    )


def default_link_store_url(systems: LinkedSystems | None = None) -> str:
    """A SQLite file in the Meltano project's `.meltano/sync/` (`$MELTANO_PROJECT_ROOT`, or
    the working directory outside Meltano), one per pair of systems: `links-<key>.db`, so
    environments pointed at other systems get a store of their own. A `links.db` made by an
    earlier version is kept by the pair it is bound to (the first to open it). Meltano's
    system directory is `$MELTANO_SYS_DIR_ROOT` when that is set."""
    root = Path(os.environ.get("MELTANO_PROJECT_ROOT") or ".")
    system = Path(os.environ.get("MELTANO_SYS_DIR_ROOT") or root / ".meltano")
    directory = (system / "sync").resolve()  # made when a store is created, not here
    legacy = directory / "links.db"
    if systems is None:
        return f"sqlite:///{legacy}"
    own = directory / f"links-{systems.key}.db"
    if (
        not own.exists()
        and legacy.exists()
        and _bound_to(f"sqlite:///{legacy}")
        in (
            None,
            systems,
        )
    ):
        return f"sqlite:///{legacy}"
    return f"sqlite:///{own}"


def _bound_to(url: str) -> LinkedSystems | None:
    """The pair an existing SQLite store is bound to (None: not bound yet)."""
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table("bound_to"):
            return None
        with engine.connect() as db:
            row = db.execute(sa.select(_bound.c.webshop, _bound.c.chargebee)).first()
        return LinkedSystems(row.webshop, row.chargebee) if row else None
    finally:
        engine.dispose()


class LinkStoreUnavailable(Exception):  # noqa: N818  (reads better than ...Error at call sites)
    """The database cannot be opened or reached."""


class NoLinkStore(LinkStoreUnavailable):
    """There is no store at the URL, and the caller only looks (it must not create one)."""


class LinkStoreBoundElsewhere(Exception):  # noqa: N818
    """The store links another pair of systems than this run's."""


class LinkConflict(Exception):  # noqa: N818
    """The Chargebee id is already linked to another webshop record of the same resource."""


@dataclass(frozen=True)
class Link:
    resource: str  # customer, item, item_price, invoice, order, ...
    webshop_id: str
    chargebee_id: str
    webshop_version: Version = None
    webshop_hash: str | None = None
    webshop_synced_at: datetime.datetime | None = None
    chargebee_version: Version = None
    chargebee_hash: str | None = None
    chargebee_synced_at: datetime.datetime | None = None
    #: The Chargebee id the sync derives from the webshop id; differs from `chargebee_id`
    #: when the link was made by matching an existing record.
    deterministic_id: str | None = None
    #: Per mapped field, the value both sides held at the last sync (the merge's base), in
    #: each target's shape: target-customwebshop's webshop fields, target-chargebee's params.
    webshop_base: dict[str, Any] | None = None
    chargebee_base: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A record the far side refused (or the target could not write), one entry per record
    while it is open: a later failure updates it, a later success resolves it."""

    run_id: str  # the run of the latest failure
    stream: str  # the target's stream
    record_key: str  # the record's id at its source: webshop id, or Chargebee id
    reason: str  # the far side's message (of the latest failure)
    record: Any
    details: dict[str, Any] | None
    created_at: datetime.datetime  # the first failure
    source: Side  # the side the record came from
    source_stream: str  # the tap's stream that emits it (re-read by id)
    attempts: int
    first_run_id: str
    last_failed_at: datetime.datetime
    resolved_at: datetime.datetime | None = None  # None: open
    resolved_run_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class _UtcDateTime(sa.TypeDecorator):
    """Aware UTC datetimes on both databases (SQLite alone would hand back naive ones)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value and value.astimezone(datetime.UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return value and value.replace(tzinfo=datetime.UTC)


_metadata = sa.MetaData()

_links = sa.Table(
    "links",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("resource", sa.String(50), nullable=False),
    sa.Column("webshop_id", sa.String(255), nullable=False),
    sa.Column("chargebee_id", sa.String(255), nullable=False),
    sa.Column("webshop_version", sa.JSON(none_as_null=True)),
    sa.Column("webshop_hash", sa.Text),
    sa.Column("webshop_synced_at", _UtcDateTime),
    sa.Column("chargebee_version", sa.JSON(none_as_null=True)),
    sa.Column("chargebee_hash", sa.Text),
    sa.Column("chargebee_synced_at", _UtcDateTime),
    sa.Column("deterministic_id", sa.String(255)),
    sa.Column("webshop_base", sa.JSON(none_as_null=True)),
    sa.Column("chargebee_base", sa.JSON(none_as_null=True)),
    sa.UniqueConstraint("resource", "webshop_id", name="links_webshop_key"),
    sa.UniqueConstraint("resource", "chargebee_id", name="links_chargebee_key"),
)
#: Parents are looked up by derived id (`get_by_deterministic`); without it, a table scan.
_by_deterministic_id = sa.Index(
    "links_deterministic_id", _links.c.resource, _links.c.deterministic_id
)

_dead_letters = sa.Table(
    "dead_letters",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("stream", sa.String(100), nullable=False),
    sa.Column("record_key", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("record", sa.JSON),
    sa.Column("details", sa.JSON(none_as_null=True)),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("source_stream", sa.String(100), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("first_run_id", sa.String(64), nullable=False),
    sa.Column("last_failed_at", _UtcDateTime, nullable=False),
    sa.Column("resolved_at", _UtcDateTime),
    sa.Column("resolved_run_id", sa.String(64)),
)
_OPEN = _dead_letters.c.resolved_at.is_(None)
#: One open entry per record: a later failure is an upsert on this index.
_open_dead_letter_key = sa.Index(
    "dead_letters_open_key",
    _dead_letters.c.source,
    _dead_letters.c.stream,
    _dead_letters.c.record_key,
    unique=True,
    sqlite_where=_OPEN,
    postgresql_where=_OPEN,
)
_DEAD_LETTER_COLUMNS = [column for column in _dead_letters.c if column.name != "id"]

#: The pair of systems the store links, recorded by the first run that opens it (one row).
_bound = sa.Table(
    "bound_to",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("webshop", sa.Text, nullable=False),
    sa.Column("chargebee", sa.Text, nullable=False),
    sa.Column("bound_at", _UtcDateTime, nullable=False),
)

_LINK_COLUMNS = [column for column in _links.c if column.name != "id"]


@dataclass(frozen=True)
class _LinkQueries:
    """The queries of a store that reads the links' columns `columns`, each built once:
    SQLAlchemy built a select and its cache key anew at every lookup, for every record."""

    columns: tuple[sa.Column, ...]
    names: tuple[str, ...]  # the columns' names: Link's fields
    #: a link by its resource and one of its ids
    by: dict[str, sa.Select]
    #: the links of one resource whose column is one of a list of values (read-ahead)
    among: dict[str, sa.Select]

    def link(self, row: t.Sequence[Any]) -> Link:
        """A row of these columns as a Link (by position: a row's mapping costs more, and a
        target makes one per record)."""
        return Link(**dict(zip(self.names, row, strict=True)))


@functools.cache
def _link_queries(columns: tuple[sa.Column, ...]) -> _LinkQueries:
    resource = _links.c.resource == sa.bindparam("resource")
    return _LinkQueries(
        columns,
        names=tuple(column.name for column in columns),
        by={
            column: sa.select(*columns)
            .where(resource, _links.c[column] == sa.bindparam("value"))
            .limit(1)
            for column in ("webshop_id", "chargebee_id", "deterministic_id")
        },
        among={
            column: sa.select(*columns).where(
                resource, _links.c[column].in_(sa.bindparam("values", expanding=True))
            )
            for column in ("webshop_id", "chargebee_id")
        },
    )


#: A link read ahead: (resource, column, value), the column `webshop_id` or `chargebee_id`.
ReadAheadKey = tuple[str, str, str]
#: Ids per query of a read-ahead (SQLite allows 32,766 bound values since 3.32; PostgreSQL more).
_READ_AHEAD_CHUNK = 500


class _ReadAhead:
    """The links of the records a target is about to handle, read in one query per resource
    (`LinkStore.read_ahead`) and answered from memory by `get_by_webshop`/`get_by_chargebee`:
    a query per record was the largest part of a target's own CPU per record (bench/README.md).

    What is kept stays true: a save or forget of a link drops what is kept of it (its ids on
    both sides, and the key it was kept under), after the write commits; a read that was under
    way meanwhile keeps nothing of it (it may have read the row before the write). Only this
    process writes the store during a run (the run lock); a look at another store is not kept.
    Each read-ahead replaces the last, so memory is bounded by one batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[ReadAheadKey, Link | None] = {}
        self._keys_of: dict[tuple[str, str], set[ReadAheadKey]] = {}  # by (resource, webshop id)
        self._written_while_reading: set[ReadAheadKey] | None = None

    def start(self) -> None:
        with self._lock:
            self._kept.clear()
            self._keys_of.clear()
            self._written_while_reading = set()

    def keep(self, wanted: set[ReadAheadKey], found: dict[ReadAheadKey, Link]) -> None:
        """The read's answer: a link, or none, for each key wanted."""
        with self._lock:
            written = self._written_while_reading or set()
            self._written_while_reading = None
            for key in wanted:
                link = found.get(key)
                if key in written or (
                    link is not None and (key[0], "webshop_id", link.webshop_id) in written
                ):
                    continue
                self._kept[key] = link
                if link is not None:
                    self._keys_of.setdefault((key[0], link.webshop_id), set()).add(key)

    def get(self, key: ReadAheadKey) -> tuple[bool, Link | None]:
        """(True, the link or None) when the key was read ahead; (False, None) otherwise."""
        with self._lock:
            if key in self._kept:
                return True, self._kept[key]
        return False, None

    def written(self, resource: str, webshop_id: str, chargebee_id: str | None) -> None:
        """A link of these ids was saved or deleted (called once the write committed)."""
        keys = {(resource, "webshop_id", webshop_id)}
        if chargebee_id is not None:
            keys.add((resource, "chargebee_id", chargebee_id))
        with self._lock:
            keys |= self._keys_of.pop((resource, webshop_id), set())
            for key in keys:
                self._kept.pop(key, None)
            if self._written_while_reading is not None:
                self._written_while_reading |= keys


class LinkStore:
    """Links and dead letters in one database; tables are created (or upgraded) when it is
    opened.

    `systems`: the pair this run syncs; a store bound to another pair is refused
    (LinkStoreBoundElsewhere), an unbound one is bound to it. Without it (a look at a store)
    nothing is checked. `run_id` labels this run's dead letters: by default Meltano's run id
    (`MELTANO_RUN_ID`) when it gives one, else a fresh one. `look_only`: a store some run
    made, at the current schema, opened without creating, upgrading or binding anything
    (NoLinkStore otherwise): what sync-links and the taps read. `merges_on`: the side a
    target writes, whose merge base is the only one it uses (target-customwebshop's
    `webshop_base`, target-chargebee's `chargebee_base`); the other base, a whole record of
    the far side, is then neither read nor decoded, nor are the times each side was synced
    (None in the links it gets)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        systems: LinkedSystems | None = None,
        run_id: str | None = None,
        look_only: bool = False,
        merges_on: Side | None = None,
    ) -> None:
        self.run_id = run_id or current_run_id()
        # a target uses its own side's base, and never when a link was synced (sync-links does)
        unread = set() if merges_on is None else {
            "chargebee_base" if merges_on == "webshop" else "webshop_base",
            "webshop_synced_at", "chargebee_synced_at",
        }  # fmt: skip
        self._queries = _link_queries(tuple(c for c in _LINK_COLUMNS if c.name not in unread))
        self._open_lock = threading.Lock()
        self._read_ahead = _ReadAhead()
        #: the open dead letters' attempts by (source, stream, record key), read once
        self._open_keys: dict[tuple[str, str, str], int] | None = None
        parsed = _store_url(url or default_link_store_url(systems))
        #: Where the store is, password masked: for messages.
        self.location = parsed.render_as_string(hide_password=True)
        self._url = parsed
        self._run_lock: RunLock | None = None
        self._insert = (
            postgresql.insert if parsed.get_backend_name() == "postgresql" else sqlite.insert
        )
        try:
            # a pooled PostgreSQL connection may have been dropped; a SQLite one cannot
            pre_ping = parsed.get_backend_name() != "sqlite"
            self._engine = sa.create_engine(parsed, pool_pre_ping=pre_ping)
            if parsed.get_backend_name() == "sqlite":
                sa.event.listen(self._engine, "connect", _sqlite_pragmas)
            if look_only:
                self._check_current(parsed)
                self.systems = None
            else:
                _make_private(parsed)
                _migrate(self._engine, parsed)
                self.systems = self._bind(systems) if systems is not None else None
        except sa.exc.SQLAlchemyError as exc:
            raise LinkStoreUnavailable(
                f"cannot open {self.location}: {getattr(exc, 'orig', None) or exc}"
            ) from None

    def _check_current(self, url: sa.URL) -> None:
        """A store a run made, at the schema this version writes (a look changes nothing)."""
        file = _sqlite_file(url)
        if url.get_backend_name() == "sqlite" and (file is None or not file.is_file()):
            raise NoLinkStore(f"there is no link store at {self.location}")  # nor makes one
        with _schema_lock(url, shared=True):
            version = _schema_version(self._engine)
        if version is None:
            raise NoLinkStore(f"there is no link store at {self.location}")
        if version != SCHEMA_HEAD:
            raise NoLinkStore(
                f"the link store {self.location} is at schema {version}: the next run of a "
                "target upgrades it"
            )

    def _bind(self, systems: LinkedSystems) -> LinkedSystems:
        row = {"id": 1, "webshop": systems.webshop, "chargebee": systems.chargebee,
               "bound_at": datetime.datetime.now(datetime.UTC)}  # fmt: skip
        with self._engine.begin() as db:  # the first run to get here binds it
            db.execute(self._insert(_bound).values(**row).on_conflict_do_nothing())
            bound = db.execute(sa.select(_bound.c.webshop, _bound.c.chargebee)).one()
        if (bound.webshop, bound.chargebee) != (systems.webshop, systems.chargebee):
            raise LinkStoreBoundElsewhere(
                f"the link store {self.location} links {LinkedSystems(*bound)}, but this run "
                f"syncs {systems}: its links would pair records of other systems. Leave "
                "link_store_url unset (each pair of systems gets its own store) or point it "
                "at this pair's store."
            )
        return systems

    def bound_to(self) -> tuple[LinkedSystems, datetime.datetime] | None:
        """The pair the store is bound to, and since when (None: no run has bound it)."""
        with self._engine.connect() as db:
            row = db.execute(sa.select(_bound.c.webshop, _bound.c.chargebee,
                                       _bound.c.bound_at)).first()  # fmt: skip
        return (LinkedSystems(row.webshop, row.chargebee), row.bound_at) if row else None

    def rebind(self, systems: LinkedSystems) -> None:
        """Bind the store to another pair: for systems that moved to another address with
        their data (a new domain), never for other systems."""
        with self._engine.begin() as db:
            db.execute(_bound.delete())
        self.systems = self._bind(systems)

    def run_lock(self) -> RunLock:
        """The lock a run of this store's pair holds while it writes (sync_common.run_lock);
        closing the store lets go of it."""
        if self._run_lock is None:
            pair = self.systems.key if self.systems is not None else "unbound"
            self._run_lock = RunLock(self._engine, self._url, pair)
        return self._run_lock

    def __repr__(self) -> str:
        return f"LinkStore({self.location!r})"

    def close(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
        self._engine.dispose()

    # ---------------------------------------------------------------- links

    def count(self, resource: str) -> int:
        """How many records of `resource` are linked."""
        query = sa.select(sa.func.count()).where(_links.c.resource == resource)
        with self._engine.connect() as db:
            return db.execute(query).scalar_one()

    def counts(self) -> dict[str, int]:
        """How many records are linked, by resource."""
        query = sa.select(_links.c.resource, sa.func.count()).group_by(_links.c.resource)
        with self._engine.connect() as db:
            return dict(sorted(db.execute(query).tuples()))

    def links(self, resource: str | None = None) -> list[Link]:
        """The links of `resource` (of every resource when None), oldest first."""
        query = sa.select(*_LINK_COLUMNS).order_by(_links.c.resource, _links.c.id)
        if resource is not None:
            query = query.where(_links.c.resource == resource)
        with self._engine.connect() as db:
            return [Link(**row._mapping) for row in db.execute(query)]

    def find(
        self,
        *,
        webshop_id: str | None = None,
        chargebee_id: str | None = None,
        resource: str | None = None,
    ) -> list[Link]:
        """The links of the record with that id on either side, in every resource (or one):
        a webshop product's id is its item's and its prices' too."""
        query = sa.select(*_LINK_COLUMNS).where(_side_is(webshop_id, chargebee_id))
        if resource is not None:
            query = query.where(_links.c.resource == resource)
        with self._engine.connect() as db:
            return [Link(**row._mapping) for row in db.execute(query.order_by(_links.c.id))]

    def forget(
        self, resource: str, *, webshop_id: str | None = None, chargebee_id: str | None = None
    ) -> Link | None:
        """Delete one link, so that the next run meets the record as unlinked and matches it
        again (first contact); the link deleted, or None when there was none."""
        delete = _links.delete().where(
            _links.c.resource == resource, _side_is(webshop_id, chargebee_id)
        )
        with self._engine.begin() as db:
            row = db.execute(delete.returning(*self._queries.columns)).first()
        if row is None:
            return None
        link = self._queries.link(row)
        self._read_ahead.written(resource, link.webshop_id, link.chargebee_id)
        return link

    def read_ahead(self, keys: t.Iterable[ReadAheadKey]) -> None:
        """Read the links of the records about to be handled, (resource, column, id) each
        with column `webshop_id` or `chargebee_id`, in one query per resource and column (per
        500 ids): `get_by_webshop`/`get_by_chargebee` then answer them from memory, until
        the next read-ahead. A link written meanwhile is read again (`_ReadAhead`)."""
        wanted = {(resource, column, str(value)) for resource, column, value in keys}
        groups: dict[tuple[str, str], list[str]] = {}
        for resource, column, value in sorted(wanted):
            groups.setdefault((resource, column), []).append(value)
        self._read_ahead.start()
        found: dict[ReadAheadKey, Link] = {}
        with self._engine.connect() as db:
            for (resource, column), values in groups.items():
                for start in range(0, len(values), _READ_AHEAD_CHUNK):
                    chunk = values[start : start + _READ_AHEAD_CHUNK]
                    query = self._queries.among[column]
                    rows = db.execute(query, {"resource": resource, "values": chunk})
                    for row in rows:
                        link = self._queries.link(row)
                        found[(resource, column, getattr(link, column))] = link
        self._read_ahead.keep(wanted, found)

    def get_by_webshop(self, resource: str, webshop_id: str) -> Link | None:
        return self._one(resource, "webshop_id", webshop_id)

    def get_by_chargebee(self, resource: str, chargebee_id: str) -> Link | None:
        return self._one(resource, "chargebee_id", chargebee_id)

    def get_by_deterministic(self, resource: str, deterministic_id: str) -> Link | None:
        """The link of the record whose derived Chargebee id is `deterministic_id` (it may
        live under another id in Chargebee, when it was matched)."""
        # two indexed lookups: SQLite answers the OR of both with a scan of the resource
        return self._one(resource, "deterministic_id", deterministic_id) or (
            self._one(resource, "chargebee_id", deterministic_id)
        )

    def save(
        self,
        resource: str,
        webshop_id: str,
        chargebee_id: str,
        *,
        webshop_version: Version = None,
        webshop_hash: str | None = None,
        chargebee_version: Version = None,
        chargebee_hash: str | None = None,
        deterministic_id: str | None = None,
        webshop_base: dict[str, Any] | None = None,
        chargebee_base: dict[str, Any] | None = None,
    ) -> Link:
        """Create or update the link of webshop record `webshop_id` (it may move to another
        Chargebee id) and record what the sync wrote to or saw on each side. A side's state
        left out (None) keeps its stored value; a side given is stamped with the time now.

        A version means "that side at this version is accounted for on the other side"
        (written there, equal, or overruled): the merge then takes it as the base."""
        now = datetime.datetime.now(datetime.UTC)
        given: dict[str, Any] = {"chargebee_id": str(chargebee_id)}
        if deterministic_id is not None:
            given["deterministic_id"] = str(deterministic_id)
        for name, base in (("webshop_base", webshop_base), ("chargebee_base", chargebee_base)):
            if base is not None:
                given[name] = _plain(base)
        for side, version, hash_ in (
            ("webshop", webshop_version, webshop_hash),
            ("chargebee", chargebee_version, chargebee_hash),
        ):
            state = {f"{side}_version": _plain(version), f"{side}_hash": hash_}
            given.update({name: value for name, value in state.items() if value is not None})
            if version is not None or hash_ is not None:
                given[f"{side}_synced_at"] = now
        params = {"resource": resource, "webshop_id": str(webshop_id), **given}
        upsert = _link_upsert(tuple(given), self._queries.columns)
        try:
            return self._write_link(upsert, params)
        except sa.exc.IntegrityError:
            taken = self.get_by_chargebee(resource, chargebee_id)
            if taken is None or taken.webshop_id != str(webshop_id):
                other = taken.webshop_id if taken else "another record"
                raise LinkConflict(
                    f"{resource} {chargebee_id} in Chargebee is already linked to webshop "
                    f"{resource} {other}, not {webshop_id}"
                ) from None
        # PostgreSQL: a concurrent insert of this very link can trip the Chargebee-id index
        # (ON CONFLICT guards only the webshop-id one); the row exists now, so this updates it.
        return self._write_link(upsert, params)

    def _write_link(self, upsert: sa.TextualSelect, params: dict[str, Any]) -> Link:
        with self._engine.begin() as db:
            row = db.execute(upsert, params).one()
        link = self._queries.link(row)
        self._read_ahead.written(link.resource, link.webshop_id, link.chargebee_id)
        return link

    def _one(self, resource: str, column: str, value: Any) -> Link | None:
        """The link whose `column` (`webshop_id`, `chargebee_id` or `deterministic_id`) is
        `value`."""
        read, link = self._read_ahead.get((resource, column, str(value)))
        if read:
            return link
        with self._engine.connect() as db:
            query = self._queries.by[column]
            row = db.execute(query, {"resource": resource, "value": str(value)}).first()
        return self._queries.link(row) if row else None

    # ---------------------------------------------------------------- dead letters

    def add_dead_letter(
        self,
        stream: str,
        record_key: str,
        reason: str,
        record: Any,
        *,
        source: Side,
        source_stream: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> DeadLetter:
        """Keep a record the far side refused, with its reason, under this store's run id:
        the record's open entry counts one attempt more (the latest reason and record
        replace the earlier ones), or a new entry is opened. `record_key` is the record's id
        at its `source`; `source_stream` the tap stream it came on (default: `stream`)."""
        now = datetime.datetime.now(datetime.UTC)
        latest = {
            "run_id": self.run_id,
            "reason": reason,
            "record": _plain(record),
            "details": _plain(details),
            "source_stream": source_stream or stream,
            "last_failed_at": now,
        }
        key = {"source": source, "stream": stream, "record_key": str(record_key)}
        upsert = self._insert(_dead_letters).values(
            **key, **latest, attempts=1, first_run_id=self.run_id, created_at=now
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=list(key),
            index_where=_OPEN,
            set_={**latest, "attempts": _dead_letters.c.attempts + 1},
        )
        with self._engine.begin() as db:
            row = db.execute(upsert.returning(*_DEAD_LETTER_COLUMNS)).one()
        letter = DeadLetter(**row._mapping)
        with self._open_lock:
            if self._open_keys is not None:
                self._open_keys[(source, stream, str(record_key))] = letter.attempts
        return letter

    def failed_attempts(self, source: Side, stream: str, record_key: str) -> int:
        """How often the record failed since it last went through (0: it has no open dead
        letter); no query after the first (the open keys are read once per store)."""
        with self._open_lock:
            return self._open_attempts().get((source, stream, str(record_key)), 0)

    def resolve_dead_letter(self, source: Side, stream: str, record_key: str) -> bool:
        """The record went through: close its open entry (True), if it has one. Called for
        every record a target writes or finds in sync: a record without one costs no query."""
        key = (source, stream, str(record_key))
        with self._open_lock:
            if self._open_attempts().pop(key, None) is None:
                return False
        closing = (
            _dead_letters.update()
            .where(_OPEN, _dead_letters.c.source == source, _dead_letters.c.stream == stream,
                   _dead_letters.c.record_key == str(record_key))
            .values(resolved_at=datetime.datetime.now(datetime.UTC), resolved_run_id=self.run_id)
        )  # fmt: skip
        with self._engine.begin() as db:
            return db.execute(closing).rowcount > 0

    def _open_attempts(self) -> dict[tuple[str, str, str], int]:
        if self._open_keys is None:
            c = _dead_letters.c
            query = sa.select(c.source, c.stream, c.record_key, c.attempts).where(_OPEN)
            with self._engine.connect() as db:
                self._open_keys = {(s, t, k): n for s, t, k, n in db.execute(query)}
        return self._open_keys

    def open_dead_letters(
        self, stream: str | None = None, *, source: Side | None = None
    ) -> list[DeadLetter]:
        """The open dead letters (of one target stream, of records from one side), oldest
        first."""
        return self._dead_letters(_OPEN, stream=stream, source=source)

    def dead_letters(
        self, run_id: str | None = None, *, stream: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters whose latest failure was in one run (all entries, open and resolved,
        when None; of one target stream), oldest first."""
        in_run = None if run_id is None else _dead_letters.c.run_id == run_id
        return self._dead_letters(in_run, stream=stream)

    def _dead_letters(
        self,
        condition: sa.ColumnElement[bool] | None,
        *,
        stream: str | None = None,
        source: Side | None = None,
    ) -> list[DeadLetter]:
        query = sa.select(*_DEAD_LETTER_COLUMNS).order_by(_dead_letters.c.id)
        for where in (
            condition,
            None if stream is None else _dead_letters.c.stream == stream,
            None if source is None else _dead_letters.c.source == source,
        ):
            if where is not None:
                query = query.where(where)
        with self._engine.connect() as db:
            return [DeadLetter(**row._mapping) for row in db.execute(query)]


def _side_is(webshop_id: str | None, chargebee_id: str | None) -> sa.ColumnElement[bool]:
    """The record with that id on one side (exactly one of the two is given)."""
    if (webshop_id is None) == (chargebee_id is None):
        raise ValueError("give either webshop_id or chargebee_id")
    if webshop_id is not None:
        return _links.c.webshop_id == str(webshop_id)
    return _links.c.chargebee_id == str(chargebee_id)


def _store_url(url: str) -> sa.URL:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # psycopg 3 is the driver this project installs
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise LinkStoreUnavailable(f"unsupported link store database: {parsed.drivername}")
    return parsed


@functools.cache
def _link_upsert(columns: tuple[str, ...], returned: tuple[sa.Column, ...]) -> sa.TextualSelect:
    """Insert a link, or update these columns of it, and return it (the `returned` columns):
    as text, which reads the same on SQLite and PostgreSQL and which SQLAlchemy compiles once
    (it cannot cache SQLite's on_conflict_do_update, and compiling that at each save was most
    of a save's CPU)."""
    names = ("resource", "webshop_id", *columns)
    sql = (
        f"INSERT INTO {_links.name} ({', '.join(names)}) "
        f"VALUES ({', '.join(f':{name}' for name in names)}) "
        "ON CONFLICT (resource, webshop_id) DO UPDATE SET "
        f"{', '.join(f'{name} = excluded.{name}' for name in columns)} "
        f"RETURNING {', '.join(column.name for column in returned)}"
    )
    typed = [sa.bindparam(name, type_=_links.c[name].type) for name in names]
    return sa.text(sql).bindparams(*typed).columns(*returned)


def _schema_version(engine: sa.Engine) -> str | None:
    """The migration a store is at (None: no store there yet)."""
    if not sa.inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as db:
        return db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _sqlite_file(url: sa.URL) -> Path | None:
    """The file a SQLite store is in (None: another database, or SQLite in memory)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _make_private(url: sa.URL) -> None:
    """A SQLite store holds personal data (the bases are field values): readable by its owner
    only. SQLite gives its -wal and -shm files the same mode."""
    path = _sqlite_file(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


#: The schema's versions, oldest first (Alembic): `_metadata` above is their sum.
MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest of them (tests/test_link_store.py checks it is Alembic's head): a run that finds
#: its store there needs no Alembic, whose import is 0.3-0.4 s of a plugin's 1.3-1.5 s start.
SCHEMA_HEAD = "0003"
#: Serialises migrations of one PostgreSQL database (pg_advisory_xact_lock's key).
_MIGRATION_LOCK = 0x5C_11_4B_00


@contextlib.contextmanager
def _schema_lock(url: sa.URL, *, shared: bool) -> Iterator[None]:
    """For a SQLite file, the lock file beside it: a run making or upgrading the store holds
    it alone; a look holds it shared, so that it never meets a half-made store (`meltano run`
    starts a tap and its target at once, and the new file's switch to WAL or the migration's
    write lock answered the tap's look with "database is locked")."""
    path = _sqlite_file(url)
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def _migrate(engine: sa.Engine, url: sa.URL) -> None:
    """Create the store, or upgrade one made by an earlier version, in place. Several
    processes may open a new store at once: PostgreSQL serialises them with an advisory
    lock, SQLite with a lock file beside the database; the later ones find it current."""
    file = _sqlite_file(url)
    if file is None or file.stat().st_size > 0:  # a new file is made alone (see _schema_lock)
        with _schema_lock(url, shared=True):
            if _schema_version(engine) == SCHEMA_HEAD:
                return
    import alembic.command  # noqa: PLC0415 (only to make or upgrade a store: see SCHEMA_HEAD)
    import alembic.config  # noqa: PLC0415

    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _schema_lock(url, shared=False), engine.begin() as connection:
        if url.get_backend_name() == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _MIGRATION_LOCK})  # fmt: skip
        config.attributes["connection"] = connection
        tables = set(sa.inspect(connection).get_table_names())
        if "links" in tables and "alembic_version" not in tables:
            alembic.command.stamp(config, "0001")  # made before migrations were kept
        alembic.command.upgrade(config, "head")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL without a sync per commit: a link is saved after every write, and an fsync each
    time made the disk, not the API, the limit. A crash may lose the last links; the
    deterministic ids find those records again."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _plain(value: Any) -> Any:
    """JSON-ready and canonical: numbers equal in value look alike (1 == 1.0 ==
    Decimal("1.00")), datetimes are UTC ISO 8601, tuples are lists, keys are strings."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float | decimal.Decimal) and math.isfinite(value):
        return int(value) if value == int(value) else float(value)
    if isinstance(value, datetime.datetime):
        return (value.astimezone(datetime.UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value
