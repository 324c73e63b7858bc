"""The link store's read-ahead (LinkStore.read_ahead): links read in one query per resource
and answered from memory must always be what the store holds, whatever was saved or
forgotten since, and a save that commits while the read is under way must not leave the
read's older row behind."""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sync_common.links import Link, LinkConflict, LinkStore, _ReadAhead

RESOURCES = ("customers", "orders")
IDS = {"webshop_id": ["1", "2"], "chargebee_id": ["cws_1", "cb_9"]}  # few: they meet often
EVERY_KEY = [
    (resource, column, value)
    for resource in RESOURCES
    for column, values in IDS.items()
    for value in values
]
webshop_ids = st.sampled_from(IDS["webshop_id"])
chargebee_ids = st.sampled_from(IDS["chargebee_id"])


class ReadAheadAgainstTheTable(RuleBasedStateMachine):
    """Saves, forgets and read-aheads in any order; after each step every answer of the
    store is the one another store on the same file (which never reads ahead) gives."""

    def __init__(self) -> None:
        super().__init__()
        self.store, self.truth = stores()
        for link in self.store.links():
            self.store.forget(link.resource, webshop_id=link.webshop_id)
        self.store.read_ahead([])  # nothing kept from the last example
        self.version = 0

    @rule(resource=st.sampled_from(RESOURCES), webshop_id=webshop_ids, chargebee_id=chargebee_ids)
    def save(self, resource: str, webshop_id: str, chargebee_id: str) -> None:
        self.version += 1
        with contextlib.suppress(LinkConflict):  # that Chargebee id is another record's
            self.store.save(resource, webshop_id, chargebee_id, webshop_version=self.version)

    @rule(resource=st.sampled_from(RESOURCES), webshop_id=webshop_ids)
    def forget(self, resource: str, webshop_id: str) -> None:
        self.store.forget(resource, webshop_id=webshop_id)

    @rule(wanted=st.lists(st.sampled_from(EVERY_KEY), min_size=1, max_size=6))
    def read_ahead(self, wanted: list) -> None:
        self.store.read_ahead(wanted)

    @invariant()
    def every_answer_is_the_tables(self) -> None:
        for key in EVERY_KEY:
            assert self.store._one(*key) == self.truth._one(*key), key


@functools.cache
def stores_directory() -> Path:
    return Path(tempfile.mkdtemp())


@functools.cache
def stores() -> tuple[LinkStore, LinkStore]:
    """A store, and another on the same file that never reads ahead (the truth); made once,
    emptied by each example (making a store runs its migrations: ~70 ms an example), closed
    and removed after this module's tests (teardown_module)."""
    url = f"sqlite:///{stores_directory() / 'links.db'}"
    return LinkStore(url), LinkStore(url, look_only=True)


def teardown_module() -> None:
    if stores.cache_info().currsize:
        for store in stores():
            store.close()
        shutil.rmtree(stores_directory(), ignore_errors=True)
        stores.cache_clear()


ReadAheadAgainstTheTable.TestCase.settings = settings(
    max_examples=300, stateful_step_count=12, deadline=None
)
test_what_is_read_ahead_is_always_what_the_store_holds = ReadAheadAgainstTheTable.TestCase


def test_a_link_saved_while_the_read_is_under_way_is_not_kept_from_the_read():
    """The read may have met the row before the save committed: what it found for any key
    the save touched (either id, or the link's webshop id under another key) is dropped."""
    ahead = _ReadAhead()
    old = Link("customers", "7", "cb_old")
    wanted = {
        ("customers", "webshop_id", "7"), ("customers", "chargebee_id", "cb_old"),
        ("customers", "chargebee_id", "cb_new"), ("customers", "webshop_id", "8"),
    }  # fmt: skip
    ahead.start()
    ahead.written("customers", "7", "cb_new")  # the link moved to cb_new and committed
    ahead.keep(wanted, {("customers", "webshop_id", "7"): old,
                        ("customers", "chargebee_id", "cb_old"): old})  # fmt: skip
    for key in sorted(wanted - {("customers", "webshop_id", "8")}):
        assert ahead.get(key) == (False, None), key  # read from the store again
    assert ahead.get(("customers", "webshop_id", "8")) == (True, None)  # untouched: no link


def test_a_save_after_the_read_drops_what_was_kept_of_the_link():
    ahead = _ReadAhead()
    link = Link("orders", "5", "cws_5")
    ahead.start()
    ahead.keep({("orders", "chargebee_id", "cws_5")}, {("orders", "chargebee_id", "cws_5"): link})
    assert ahead.get(("orders", "chargebee_id", "cws_5")) == (True, link)
    ahead.written("orders", "5", "cb_other")  # kept under its old Chargebee id: found by webshop id
    assert ahead.get(("orders", "chargebee_id", "cws_5")) == (False, None)


def test_a_target_reads_the_merge_base_of_its_own_side_only(tmp_path):
    """Each target merges on the base of the side it writes; the other base, a whole record
    of the far side, is not read (None), whichever way the link is read; nor are the times
    each side was synced, which only a look at the store (sync-links) shows."""
    url = f"sqlite:///{tmp_path / 'links.db'}"
    bases = {"webshop_base": {"email": "a@example.com"}, "chargebee_base": {"id": "cws_1"}}
    first = LinkStore(url)
    first.save("customers", "1", "cws_1", **bases)
    first.close()
    for side, kept in (("webshop", "webshop_base"), ("chargebee", "chargebee_base"), (None, "")):
        store = LinkStore(url, merges_on=side)
        saved = store.save("customers", "1", "cws_1", webshop_version=2)
        store.read_ahead([("customers", "chargebee_id", "cws_1")])
        for link in (saved, store.get_by_webshop("customers", "1"),
                     store.get_by_chargebee("customers", "cws_1")):  # fmt: skip
            got = {name: getattr(link, name) for name in bases}
            assert got == {name: value if name == kept or side is None else None
                           for name, value in bases.items()}  # fmt: skip
            # saved with a webshop version: stamped, but only a look at the store reads it
            assert (link.webshop_synced_at is None) == (side is not None)
            assert link.chargebee_synced_at is None
            assert link.webshop_version == 2
        store.close()
