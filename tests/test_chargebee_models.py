"""The emulator's state layer in-process, without HTTP: `models.ChargebeeBackend` takes parsed
params and the business-entity header, answers JSON objects, and refuses with
`ChargebeeError` (what `responses.py` renders)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_sandbox.chargebee.errors import ChargebeeError
from sync_sandbox.chargebee.models import ChargebeeBackend
from sync_sandbox.chargebee.store import Store


@pytest.fixture
def backend(tmp_path) -> ChargebeeBackend:
    return ChargebeeBackend(Store(str(tmp_path / "cb.db")), ["default", "eu"], "site-test")


def test_a_customer_lives_in_its_business_entity(backend):
    created = backend.create_customer(params={"id": "c1", "email": "a@b.cd"}, entity="eu")
    assert created["customer"]["business_entity_id"] == "eu"
    assert backend.retrieve("customer", "c1", entity="eu")["customer"]["email"] == "a@b.cd"
    assert backend.retrieve("customer", "c1", entity=None)["customer"]["id"] == "c1"
    with pytest.raises(ChargebeeError) as outside:
        backend.retrieve("customer", "c1", entity="default")
    assert (outside.value.status, outside.value.code) == (404, "resource_not_found")
    with pytest.raises(ChargebeeError) as unknown:
        backend.list_customers(params={}, entity="nowhere")
    assert unknown.value.param == "chargebee-business-entity-id"
    listed = backend.list_customers(params={"email": {"is": "a@b.cd"}}, entity="eu")
    assert [entry["customer"]["id"] for entry in listed["list"]] == ["c1"]


def test_a_write_with_an_idempotency_key_is_applied_once(backend):
    def create() -> dict:
        return backend.create_customer(params={"id": "c1"}, entity=None)

    first = backend.write("key-1", "request-a", create)
    again = backend.write("key-1", "request-a", create)  # would be a duplicate id if run
    assert (first.status, first.replayed) == (200, False)
    assert (again.status, again.body, again.replayed) == (200, first.body, True)
    with pytest.raises(ChargebeeError) as other_request:
        backend.write("key-1", "request-b", create)
    assert other_request.value.status == 409
    refused = backend.write("key-2", "request-c", create)  # a 4xx answer is kept, too
    assert refused.status == 400
    assert json.loads(refused.body)["api_error_code"] == "duplicate_entry"
    assert backend.write("key-2", "request-c", create).replayed
    with pytest.raises(ChargebeeError, match="1 to 100 characters"):
        backend.write("k" * 101, "request-d", create)


STORE_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("save"), st.sampled_from("abcd"), st.sampled_from(["i1", "i2", None])),
        st.tuples(st.just("rename"), st.sampled_from("abcd"), st.sampled_from("efgh")),
        st.tuples(st.just("look"), st.just(""), st.sampled_from(["i1", "i2", None])),
        st.tuples(st.just("clear"), st.just(""), st.just(None)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(steps=STORE_STEPS)
def test_the_stores_lookup_by_field_is_what_a_scan_of_every_object_finds(steps):
    """`Store.where` (indexed on its first call) against filtering `Store.all`, through saves
    that change the field, renames (a transfer's deprecated copy) and resets."""
    with tempfile.TemporaryDirectory() as directory:
        store = Store(str(Path(directory) / "cb.db"))
        for action, id_, value in steps:
            if action == "save":
                store.save("order", {"id": id_, "invoice_id": value})
            elif action == "rename" and store.get("order", id_) is not None:
                store.rename("order", id_, {**store.get("order", id_), "id": value})
            elif action == "clear":
                store.clear()
            for invoice in ("i1", "i2", None):
                if action == "look" or invoice == value:
                    found = {o["id"] for o in store.where("order", "invoice_id", invoice)}
                    scan = {o["id"] for o in store.all("order") if o["invoice_id"] == invoice}
                    assert found == scan
        assert store.count("order") == len(store.all("order"))
