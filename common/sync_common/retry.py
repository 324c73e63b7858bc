"""Retrying dead letters without a full refresh: at the start of each stream, a tap emits the
records of its side that have an open dead letter, read by id from the source, so that a fix
in the source data or in the stream maps heals them on the next run; the target resolves
each one that goes through (sync_common.links). And, for the targets, which tap stream a
target stream comes from (the maps may feed `items` from `products`)."""

from __future__ import annotations

import logging
import typing as t

import sqlalchemy as sa
from singer_sdk import typing as th

from sync_common.links import (
    PAIR_SETTINGS,
    LinkedSystems,
    LinkStore,
    LinkStoreUnavailable,
    NoLinkStore,
    Side,
    default_link_store_url,
)

if t.TYPE_CHECKING:
    from singer_sdk import RESTStream

    _Stream = RESTStream[t.Any]  # what the mixin is put before, for the type checker
else:
    _Stream = object

RETRY_DEAD_LETTERS = th.Property(
    "retry_dead_letters",
    th.BooleanType,
    default=True,
    description="At the start of each stream, also emit the records with an open dead letter "
    "in the link store (read by id), so a fix in the source data or in the stream maps heals "
    "them without a full refresh. Needs the link store the target uses: link_store_url, or "
    "the far side's setting that locates its default store.",
)
TAP_LINK_STORE_URL = th.Property(
    "link_store_url",
    th.StringType,
    description="The link store the target of this tap uses (its link_store_url), read for "
    "the dead letters to retry; never written. Default: the target's default store for this "
    "pair of systems.",
)


def records_to_retry(
    config: t.Mapping[str, t.Any], source: Side, logger: logging.Logger
) -> dict[str, list[str]]:
    """For the tap of `source`'s side, with its config: the ids of the records from `source`
    with an open dead letter, by the tap stream that emits them, each once (a product's item
    and price may both have failed); empty, with a log line saying why, when the setting is
    off or there is nothing to read. The store is only looked at. An unreachable store stops
    the tap (its target would fail on it anyway)."""
    if not config.get("retry_dead_letters", True):
        return {}
    systems = LinkedSystems.from_config(config, source)
    if systems is None:
        names = PAIR_SETTINGS[source]  # webshop URL, Chargebee site, Chargebee URL
        far = names[1:] if source == "webshop" else names[:1]  # the far side's settings
        logger.warning(
            "Dead letters are not retried: set %s (the far side of the link store's pair of "
            "systems), or retry_dead_letters: false",
            " (or ".join(far) + ")" * (len(far) - 1),
        )
        return {}
    url = config.get("link_store_url") or default_link_store_url(systems)
    try:
        store = LinkStore(url, look_only=True)
    except NoLinkStore as reason:  # before the first run, or before it upgraded the store
        logger.info("No dead letters to retry: %s", reason)
        return {}
    except LinkStoreUnavailable as exc:
        raise LinkStoreUnavailable(f"link_store_url: {exc}") from None
    try:
        bound = store.bound_to()
        if bound is None or bound[0] != systems:  # another pair's store holds none of ours
            pair = bound[0] if bound else "no pair yet"
            logger.info("No dead letters to retry: the link store %s links %s, not %s",
                        store.location, pair, systems)  # fmt: skip
            return {}
        letters = store.open_dead_letters(source=source)
    except sa.exc.SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        message = f"link_store_url: cannot read {store.location}: {cause}"
        raise LinkStoreUnavailable(message) from None
    finally:
        store.close()
    ids: dict[str, list[str]] = {}
    for letter in letters:
        stream = ids.setdefault(letter.source_stream, [])
        if letter.record_key not in stream:
            stream.append(letter.record_key)
    if ids:
        counts = ", ".join(f"{stream} {len(keys)}" for stream, keys in ids.items())
        logger.info("Retrying records with open dead letters: %s", counts)
    return ids


def source_stream_of(mapper: t.Any, stream: str) -> str:
    """The tap stream whose stream maps make `stream` (the SDK's PluginMapper); `stream`
    itself when no map renames it."""
    for source, maps in mapper.stream_maps.items():
        if any(stream_map.stream_alias == stream for stream_map in maps):
            return source
    return stream


class RetriesDeadLetters(_Stream):
    """For a tap's incremental RESTStream (put before it in the bases): before the stream's
    own records, the records of its tap's `dead_letter_ids` for this stream, read by id
    (`record_path`, `record_from`). They are written as RECORD messages, not yielded, so they
    leave the bookmark alone: they are older than it, and the SDK's sorted-state check would
    refuse them. One newer than the bookmark is left to the incremental read, which has it."""

    def get_records(self, context: t.Any) -> t.Iterable[dict]:
        start = self.get_starting_replication_key_value(context)
        tap: t.Any = self._tap  # private SDK member: no public link to the tap; its dead_letter_ids
        ids = tap.dead_letter_ids.get(self.name, []) if self.selected else []
        if start is not None and ids:  # without a bookmark the read has every record
            emitted = 0
            for record_id in ids:
                record = self.fetch_record(record_id)
                if record is None:
                    self.logger.warning(
                        "%s %s has an open dead letter but is gone from the source: not "
                        "retried (its dead letter stays open)", self.name, record_id,
                    )  # fmt: skip
                    continue
                if not self.older_than_bookmark(record, start):
                    continue
                record = self.post_process(record, context)
                if record is not None:
                    self._write_record_message(record)  # private; tests/test_sdk_hooks.py
                    emitted += 1
            self.logger.info("%s: %d records with open dead letters emitted", self.name, emitted)
        yield from super().get_records(context)

    def fetch_record(self, record_id: str) -> dict | None:
        """GET one record by id with the stream's session, auth and retries; None: 404."""

        def get() -> t.Any:
            request = self.build_prepared_request(
                method="GET", url=self.url_base + self.record_path(record_id),
                headers=self.http_headers,
            )  # fmt: skip
            response = self.requests_session.send(request, timeout=self.timeout)
            if response.status_code == 404:
                return None
            self.validate_response(response)
            return response

        # the SDK types its decorator by its own request function's signature; it wraps any
        response = self.request_decorator(get)()  # type: ignore[arg-type, call-arg]
        return None if response is None else self.record_from(response)

    def older_than_bookmark(self, record: dict, start: t.Any) -> bool:
        raise NotImplementedError

    def record_path(self, record_id: str) -> str:
        raise NotImplementedError

    def record_from(self, response: t.Any) -> dict:
        raise NotImplementedError
