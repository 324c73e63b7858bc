"""The per-field three-way merge (sync_common.merge), in-process: property tests over random
base / webshop / Chargebee values, and the rules spelled out as examples."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync_common.merge import UNKNOWN, is_empty, merge_fields, same

FIELDS = ("email", "phone", "company", "billing_address")
POLICIES = ("newest_wins", "webshop_wins", "chargebee_wins")

scalar = st.one_of(st.none(), st.just(""), st.sampled_from(["a", "b", "c"]), st.integers(0, 2))
address = st.one_of(st.none(), st.fixed_dictionaries({"city": scalar, "zip": scalar}))
value = st.one_of(scalar, address)
record = st.fixed_dictionaries({name: value for name in FIELDS})
base = st.one_of(st.none(), record)


def run(base, webshop, chargebee, *, source="chargebee", policy="newest_wins", cb_at=2, ws_at=1,
        empty_overwrites=False):  # fmt: skip
    """One merge; `source` is the side whose record arrives (the other is read)."""
    source_record, target_record = (chargebee, webshop) if source == "chargebee" else (
        webshop, chargebee)  # fmt: skip
    at = {"chargebee": cb_at, "webshop": ws_at}
    return merge_fields(
        base, source_record, target_record, source_side=source, policy=policy,
        source_updated_at=at[source], target_updated_at=at["webshop" if source == "chargebee"
                                                           else "chargebee"],
        empty_overwrites=empty_overwrites,
    )  # fmt: skip


@given(base, record, record, st.sampled_from(["chargebee", "webshop"]), st.sampled_from(POLICIES),
       st.integers(0, 3), st.integers(0, 3), st.booleans())  # fmt: skip
def test_per_field_rule(base, webshop, chargebee, source, policy, cb_at, ws_at, empties):
    merge = run(base, webshop, chargebee, source=source, policy=policy, cb_at=cb_at,
                ws_at=ws_at, empty_overwrites=empties)  # fmt: skip
    conflicted = {c.field: c for c in merge.conflicts}
    for name in FIELDS:
        old = UNKNOWN if base is None else base[name]
        ws, cb, merged = webshop[name], chargebee[name], merge.values[name]
        # the merged value is always one side's value
        assert same(merged, ws) or same(merged, cb)
        if same(ws, cb):
            assert name not in conflicted and same(merged, ws)
        elif old is not UNKNOWN and same(cb, old):
            assert same(merged, ws) and name not in conflicted  # only the webshop changed it
        elif old is not UNKNOWN and same(ws, old):
            assert same(merged, cb) and name not in conflicted  # only Chargebee changed it
        else:
            conflict = conflicted[name]  # both changed, or never synced: reported
            assert (conflict.webshop, conflict.chargebee) == (ws, cb)
            assert same(merged, ws if conflict.winner == "webshop" else cb)
            if not empties and (is_empty(ws) != is_empty(cb)):
                assert not is_empty(merged)  # an empty value does not clear a filled one
    assert len(conflicted) == len(merge.conflicts)


@given(base, record, record, st.sampled_from(POLICIES), st.integers(0, 3), st.integers(0, 3))
def test_both_directions_decide_alike(base, webshop, chargebee, policy, cb_at, ws_at):
    """The way back and the forward sync merge the same three versions to the same values,
    so whichever meets a conflict first, the other carries the same decision out."""
    back = run(base, webshop, chargebee, source="chargebee", policy=policy, cb_at=cb_at,
               ws_at=ws_at)  # fmt: skip
    forward = run(base, webshop, chargebee, source="webshop", policy=policy, cb_at=cb_at,
                  ws_at=ws_at)  # fmt: skip
    for name in FIELDS:
        assert same(back.values[name], forward.values[name])
    assert {c.field: c.winner for c in back.conflicts} == {
        c.field: c.winner for c in forward.conflicts
    }


@given(base, record, record, st.sampled_from(["chargebee", "webshop"]), st.sampled_from(POLICIES))
def test_writes_and_pending_say_who_still_lacks_the_merged_value(base, webshop, chargebee, source,
                                                                 policy):  # fmt: skip
    merge = run(base, webshop, chargebee, source=source, policy=policy)
    target = webshop if source == "chargebee" else chargebee
    incoming = chargebee if source == "chargebee" else webshop
    for name in FIELDS:
        assert (name in merge.to_target) == (not same(merge.values[name], target[name]))
        assert (name in merge.pending) == (not same(merge.values[name], incoming[name]))
    # writing the target, then merging again with the source as the new base, is quiet
    written = {**target, **merge.to_target}
    again = merge_fields(incoming, incoming, written, source_side=source, policy=policy,
                         source_updated_at=1, target_updated_at=1)  # fmt: skip
    assert not again.to_target and not again.conflicts


def test_edits_of_different_fields_both_survive():
    base = {"email": "old@example.com", "phone": "1"}
    merge = run(base, {"email": "new@example.com", "phone": "1"},
                {"email": "old@example.com", "phone": "2"})  # fmt: skip
    assert merge.values == {"email": "new@example.com", "phone": "2"}
    assert merge.to_target == {"phone": "2"} and merge.pending == {"email"}
    assert merge.conflicts == ()


def test_a_conflict_follows_the_policy_and_ties_go_to_chargebee():
    base = {"phone": "1"}
    webshop, chargebee = {"phone": "webshop"}, {"phone": "chargebee"}
    assert run(base, webshop, chargebee, cb_at=5, ws_at=9).values["phone"] == "webshop"
    assert run(base, webshop, chargebee, cb_at=9, ws_at=5).values["phone"] == "chargebee"
    assert run(base, webshop, chargebee, cb_at=5, ws_at=5).values["phone"] == "chargebee"
    merge = run(base, webshop, chargebee, policy="webshop_wins", cb_at=9, ws_at=5)
    [conflict] = merge.conflicts
    assert (conflict.field, conflict.base, conflict.winner) == ("phone", "1", "webshop")


def test_an_empty_winner_keeps_the_filled_value_unless_empty_overwrites():
    base = {"company": "Old AB"}
    webshop, chargebee = {"company": ""}, {"company": "New AB"}
    kept = run(base, webshop, chargebee, cb_at=1, ws_at=9)
    assert kept.values["company"] == "New AB" and kept.conflicts[0].winner == "chargebee"
    cleared = run(base, webshop, chargebee, cb_at=1, ws_at=9, empty_overwrites=True)
    assert cleared.values["company"] == "" and cleared.conflicts[0].winner == "webshop"
    # an edit on one side only that clears a field is an edit like any other
    assert run(base, {"company": ""}, {"company": "Old AB"}).values["company"] == ""


def test_values_equal_as_stored_are_not_changes():
    assert same(None, "") and same({"city": None}, None) and not same({"city": "x"}, None)
    assert same("2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+01:00")
    assert same("2023-11-14T22:13:20+00:00", "1700000000")  # tap-chargebee's, Chargebee's
    assert not same("2023-11-14T22:13:21+00:00", "1700000000") and not same("0123", "123")
    # the webshop's fraction of a second is not kept by Chargebee (the maps truncate it)
    assert same("2026-05-09T08:07:51.259161Z", "2026-05-09T08:07:51+00:00")
    assert same("2023-11-14T22:13:20.999Z", "1700000000")
    assert not same("2026-05-09T08:07:51.999Z", "2026-05-09T08:07:52+00:00")
    assert same({"city": "x", "zip": None}, {"city": "x"})
    merge = run({"billing_address": None}, {"billing_address": {"city": "Oslo"}},
                {"billing_address": {"city": None}})  # fmt: skip
    assert merge.values == {"billing_address": {"city": "Oslo"}} and not merge.conflicts
