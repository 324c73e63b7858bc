"""The dead-letter lifecycle through `meltano run sync`, both directions: a refused record has
one open dead letter; each later run's tap emits it again by id (no full refresh: the bookmark
has passed it and stays where it was), counting attempts, unless `retry_dead_letters` is off;
a fix in the source data or in the stream maps heals it on the next run, which resolves the
dead letter; the run after that is quiet."""

from __future__ import annotations

import json
import time
from collections import Counter

import yaml

from sync_common.links import LinkStore
from tests.harness import REPO, TwoWaySync, cb_client, webshop_get, webshop_patch

#: The webshop accepts a company of 255 characters, Chargebee one of 250.
LONG_COMPANY = "Konsortium " + "K" * 242


def dead_letters(sync: TwoWaySync) -> dict[tuple[str, str, str], list]:
    """Every entry (open and resolved) by (side, stream, record id)."""
    store = LinkStore(sync.link_store_url)
    try:
        entries: dict[tuple[str, str, str], list] = {}
        for letter in store.dead_letters():
            entries.setdefault((letter.source, letter.stream, letter.record_key), []).append(letter)
        return entries
    finally:
        store.close()


def bookmark(sync: TwoWaySync, stream: str) -> str:
    state = sync.state("dev:tap-customwebshop-to-target-chargebee")
    return state["singer_state"]["bookmarks"][stream]["replication_key_value"]


def run(sync: TwoWaySync, **env: str) -> None:
    saved = dict(sync.env)
    sync.env.update(env)
    try:
        sync.run()
    finally:
        sync.env = saved


def truncating_maps() -> str:
    """meltano.yml's forward maps with the fix for the company: cut to Chargebee's limit."""
    config = yaml.safe_load((REPO / "meltano.yml").read_text())
    target = next(p for p in config["plugins"]["loaders"] if p["name"] == "target-chargebee")
    maps = target["config"]["stream_maps"]
    maps["customers"]["company"] = "company[:250] if company else company"
    return json.dumps(maps)


def test_refused_records_are_retried_until_a_fix_heals_them(two_way):
    cb = cb_client(two_way.chargebee)
    live = [c for c in webshop_get(two_way, "customers") if not c["deleted_at"]]
    bad_email, long_company, newest = (str(c["id"]) for c in live[:3])
    webshop_patch(two_way, "customers", bad_email, {"email": "anna@localhost"})
    webshop_patch(two_way, "customers", long_company, {"company": LONG_COMPANY})
    # edited last: the bookmark passes the two refused customers, so only a retry reads them
    webshop_patch(two_way, "customers", newest, {"phone": "+1 555 0100"})
    cb.Customer.create({"id": "no_email", "first_name": "Anon"})  # the webshop needs an e-mail
    time.sleep(1.1)  # tap-chargebee re-reads the bookmark's second: pass it by more
    cb.Customer.update(f"cws_{live[3]['id']}", {"phone": "+1 555 0101"})
    keys = [("webshop", "customers", bad_email), ("webshop", "customers", long_company),
            ("chargebee", "customers", "no_email")]  # fmt: skip

    two_way.run()
    letters = dead_letters(two_way)
    assert sorted(letters) == sorted(keys)
    assert "email" in letters[keys[0]][0].reason and "company" in letters[keys[1]][0].reason
    assert "email" in letters[keys[2]][0].reason
    assert [letters[key][0].attempts for key in keys] == [1, 1, 1]
    first_run = letters[keys[0]][0].run_id
    mark = bookmark(two_way, "customers")

    # retry_dead_letters off: the taps read only what changed; nothing is retried
    run(two_way, TAP_CUSTOMWEBSHOP_RETRY_DEAD_LETTERS="false",
        TAP_CHARGEBEE_RETRY_DEAD_LETTERS="false")  # fmt: skip
    assert [[d.attempts for d in dead_letters(two_way)[key]] for key in keys] == [[1], [1], [1]]
    forward, back = two_way.last_report(), two_way.reverse_report()
    assert forward["dead_letters"] == {"new": 0, "failed_again": 0, "resolved": 0,
                                       "retried": 0, "open": 2}  # fmt: skip
    assert back["dead_letters"]["retried"] == 0

    # on (the default): each tap emits its refused records again, without a full refresh
    two_way.run()
    letters = dead_letters(two_way)
    assert [[d.attempts for d in letters[key]] for key in keys] == [[2], [2], [2]]
    assert letters[keys[0]][0].first_run_id == first_run != letters[keys[0]][0].run_id
    forward, back = two_way.last_report(), two_way.reverse_report()
    assert forward["dead_letters"] == {"new": 0, "failed_again": 2, "resolved": 0,
                                       "retried": 2, "open": 2}  # fmt: skip
    assert back["dead_letters"] == {"new": 0, "failed_again": 1, "resolved": 0,
                                    "retried": 1, "open": 1}  # fmt: skip
    rejected = {r["webshop_id"] for r in forward["rejections"]}
    assert rejected == {bad_email, long_company}
    assert bookmark(two_way, "customers") == mark  # the retried records left it alone

    # the fixes: the e-mail in the webshop, the company in the maps (the webshop keeps its
    # long name: the record itself is unchanged, and still only a retry reads it), the
    # missing e-mail in Chargebee
    webshop_patch(two_way, "customers", bad_email, {"email": "anna@example.com"})
    cb.Customer.update("no_email", {"email": "anon@example.com"})
    fixed_maps = {"TARGET_CHARGEBEE_STREAM_MAPS": truncating_maps()}
    run(two_way, **fixed_maps)
    letters = dead_letters(two_way)
    assert [[d.is_open for d in letters[key]] for key in keys] == [[False]] * 3
    # by the run that wrote them, as each direction's report names it (Meltano's run id)
    runs = [two_way.last_report()["run_id"]] * 2 + [two_way.reverse_report()["run_id"]]
    assert [letters[key][0].resolved_run_id for key in keys] == runs
    assert two_way.last_report()["dead_letters"]["resolved"] == 2
    assert two_way.last_report()["dead_letters"]["open"] == 0
    assert two_way.reverse_report()["dead_letters"]["resolved"] == 1
    assert cb.Customer.retrieve(f"cws_{bad_email}").customer.email == "anna@example.com"
    assert cb.Customer.retrieve(f"cws_{long_company}").customer.company == LONG_COMPANY[:250]
    born = [c for c in webshop_get(two_way, "customers") if c["email"] == "anon@example.com"]
    assert len(born) == 1

    # healed: the next run writes nothing on either side and retries nothing
    two_way.reset_counts()
    run(two_way, **fixed_maps)
    assert two_way.write_counts() == (Counter(), Counter())
    assert two_way.last_report()["dead_letters"]["retried"] == 0
    assert not [d for entries in dead_letters(two_way).values() for d in entries if d.is_open]
