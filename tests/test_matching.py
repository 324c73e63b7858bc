"""The first-contact matching rule (sync_common.matching), in process: keys are trimmed and
case-folded, the same in both directions; the candidate index; the report's match lines."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_common import matching
from sync_common.matching import (
    CandidateIndex,
    HeldByKey,
    ambiguous_entry,
    email_key,
    name_key,
    sku_key,
    text_key,
)
from sync_common.report import RunReport

WHITESPACE = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003\u3000", max_size=4)
ASCII_EMAIL = st.from_regex(
    r"[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9-]{1,12}\.[A-Za-z]{2,6}", fullmatch=True
)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("Mixed.Case@example.com", "mixed.case@example.com"),
        ("  mixed.case@EXAMPLE.com\t", "mixed.case@example.com"),
        ("STRASSE@example.com", "strasse@example.com"),
        ("Straße@example.com", "strasse@example.com"),  # casefold, not lower
        ("", None),
        ("   ", None),
        (None, None),
        (42, None),
    ],
)
def test_email_key(value, key):
    assert email_key(value) == key


def test_the_same_rule_for_every_key():
    for value in ("  Hand-made Vase ", "VASE-001", "Ünïcødé Näme"):
        assert email_key(value) == name_key(value) == sku_key(value) == text_key(value)


@given(st.text())
def test_a_key_is_trimmed_case_folded_and_stable(value):
    key = email_key(value)
    if not value.strip():
        assert key is None
        return
    assert key == value.strip().casefold()
    assert key == key.strip()
    assert email_key(key) == key  # idempotent: a key matches itself


@given(st.text(), WHITESPACE, WHITESPACE)
def test_surrounding_spaces_never_matter(value, before, after):
    assert email_key(before + value + after) == email_key(value)


@given(ASCII_EMAIL, st.lists(st.booleans(), min_size=40, max_size=40))
def test_case_never_matters_and_both_directions_agree(email, upper):
    mixed = "".join(c.upper() if up else c.lower() for c, up in zip(email, upper, strict=False))
    assert email_key(mixed) == email_key(email) == email_key(email.swapcase())
    # one side's index, looked up with the other side's spelling, finds the record
    webshop = CandidateIndex([(email_key(mixed), "17")])
    chargebee = CandidateIndex([(email_key(email.upper()), "cb_1")])
    assert webshop.get(email_key(f" {email.upper()} ")) == ["17"]
    assert chargebee.get(email_key(mixed)) == ["cb_1"]


@given(st.text(alphabet=string.ascii_letters + "@. ", min_size=1))
def test_different_keys_stay_apart(value):
    other = value + "x"
    if email_key(value) is not None:
        assert email_key(other) != email_key(value)


def test_candidate_index_keeps_keys_and_ids_only():
    index = CandidateIndex([("a@x.io", 1), ("a@x.io", "2"), ("b@x.io", "3"), (None, "4")])
    assert index.get("a@x.io") == ["1", "2"]
    assert index.get("c@x.io") == [] and index.get(None) == []
    assert index.has("4") and index.has(3) and not index.has("5")  # keyless ids are known
    index.add("a@x.io", "2")  # no duplicates
    assert index.get("a@x.io") == ["1", "2"]
    index.discard("a@x.io", "1")
    assert index.get("a@x.io") == ["2"] and not index.has("1")
    index.discard("a@x.io", "2")
    assert index.get("a@x.io") == [] and len(index) == 2


KEYS = st.sampled_from([None, "", "a@x.io", "b@x.io", "c@x.io"])
IDS = st.one_of(st.sampled_from(["1", "2", "3", "", None]), st.integers(1, 3))
INDEX_STEPS = st.lists(st.tuples(st.sampled_from(["add", "discard"]), KEYS, IDS), max_size=30)


@given(st.lists(st.tuples(KEYS, IDS), max_size=10), INDEX_STEPS)
def test_the_candidate_index_answers_as_a_dict_of_lists_would(rows, steps):
    """The index lives in SQLite (flat memory): it answers as the plain Python model of the
    same rule, whatever the order of adds and discards."""
    model_keys: dict[str, list[str]] = {}
    model_ids: set[str] = set()

    def model_add(key, record_id):
        if record_id in (None, ""):
            return
        model_ids.add(str(record_id))
        if key and str(record_id) not in model_keys.setdefault(key, []):
            model_keys[key].append(str(record_id))

    for key, record_id in rows:
        model_add(key, record_id)
    index = CandidateIndex(rows)
    for step, key, record_id in steps:
        if step == "add":
            model_add(key, record_id)
            index.add(key, record_id)
        else:
            model_ids.discard(str(record_id))
            if key and str(record_id) in model_keys.get(key, []):
                model_keys[key].remove(str(record_id))
            index.discard(key, record_id)
    assert len(index) == len(model_ids)
    for key in ["a@x.io", "b@x.io", "c@x.io"]:
        assert index.get(key) == model_keys.get(key, [])
    for record_id in ["1", "2", "3", 1, 2, 3]:
        assert index.has(record_id) == (str(record_id) in model_ids)


def test_the_report_lists_ambiguous_matches_and_a_plan_shows_the_match_report():
    report = RunReport("target-test", dry_run=True)
    for _ in range(3):
        report.received("customers")
    report.count("customers", "matched")
    report.count("customers", "created")
    report.count("customers", "skipped")
    report.ambiguous.append(
        ambiguous_entry(
            "customers",
            webshop_id=5,
            chargebee_id="cws_5",
            by="e-mail",
            candidates_in="chargebee",
            candidates=["b", "a"],
            reason="2 Chargebee customers",
        )  # fmt: skip
    )
    data = report.as_dict({})
    assert data["ambiguous_matches"][0]["candidates"] == ["a", "b"]
    assert data["match_report"] == {
        "customers": {
            "matched": 1, "ambiguous": 1, "new": 1, "ambiguous_several_in_chargebee": 1,
        }
    }  # fmt: skip
    lines = report.summary_lines(data)
    assert "  ambiguous customers 5 / cws_5: 2 Chargebee customers" in lines
    assert (
        "  first contact: customers 1 matched, 1 ambiguous (1 several in Chargebee), 1 new" in lines
    )
    run = RunReport("target-test")
    run.ambiguous.append({"stream": "customers", "webshop_id": "5", "candidates": ["x", "y"]})
    run_lines = run.summary_lines(run.as_dict({}))
    assert "  ambiguous customers 5: candidates x, y" in run_lines  # an entry without a reason
    assert not [line for line in run_lines if "first contact" in line]  # a plan's lines only


@given(
    holds=st.lists(st.tuples(st.integers(0, 30), st.sampled_from("abcdef")), max_size=200),
    limit=st.integers(1, 12),
)
def test_held_records_stay_within_the_limit_and_each_comes_out_grouped_by_key(holds, limit):
    """Never more than the limit held; what comes out is one key's records, all of them held
    then, each at its latest version; and every record's last version comes out."""
    previous, matching.MAX_HELD = matching.MAX_HELD, limit
    try:
        held = HeldByKey()
        latest: dict[str, tuple[str, int]] = {}  # record id -> (key, version) last held
        holding: set[str] = set()  # record ids held now, by this test's count
        last_out: dict[str, int] = {}  # record id -> the version that came out last

        def came_out(groups: list[dict[str, dict]]) -> None:
            for group in groups:
                keys = {latest[record_id][0] for record_id in group}
                assert len(keys) == 1  # one key
                for record_id, record in group.items():
                    assert record["version"] == latest[record_id][1]  # its latest version
                    last_out[record_id] = record["version"]
                holding.difference_update(group)
                # nothing of that key stays behind
                assert not [r for r in holding if latest[r][0] in keys]

        for version, (number, key) in enumerate(holds):
            record_id = str(number)
            latest[record_id] = (key, version)
            holding.add(record_id)
            came_out(held.hold(record_id, key, {"id": record_id, "version": version}))
            assert len(held) == len(holding) <= limit
        came_out(held.take())
    finally:
        matching.MAX_HELD = previous
    assert last_out == {record_id: version for record_id, (_, version) in latest.items()}
    assert not holding and not len(held)
