"""`sync-links` as the targets' Meltano plugin command (`meltano invoke target-chargebee:links
...`, `target-customwebshop:links ...`) on the store a real `meltano run sync` made: Meltano
hands the command the target's settings, both targets' commands find the same store, a link
one forgets is gone for the other and is matched again by the next run, and no API key is
printed. What each subcommand prints: tests/test_links_cli.py (in-process; Meltano hands every
subcommand the same settings)."""

from __future__ import annotations

import json
import subprocess

import pytest

from sync_common.links import LinkStore
from tests.harness import (
    BIN,
    CHARGEBEE_KEY,
    REPO,
    WEBSHOP_KEY,
    TwoWaySync,
    webshop_get,
    webshop_patch,
)

#: `meltano run` itself: the command as Meltano invokes it, on a store `meltano run sync` made.
pytestmark = pytest.mark.meltano


def links(sync: TwoWaySync, plugin: str, *args: str) -> subprocess.CompletedProcess:
    """`meltano invoke <plugin>:links ...`, with only the settings Meltano passes: the test's
    own link-store variable is the target's setting, not the command's."""
    result = subprocess.run(
        [str(BIN / "meltano"), "invoke", f"{plugin}:links", *args],
        cwd=REPO, env=sync.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert WEBSHOP_KEY not in result.stdout + result.stderr
    assert CHARGEBEE_KEY not in result.stdout + result.stderr
    return result


def test_the_links_command_through_meltano_on_a_synced_store(two_way):
    store = LinkStore(two_way.link_store_url)
    try:  # a refusal as a target keeps one, beside any the sync kept
        store.add_dead_letter(
            "orders", "77", "customer cws_404 not found", {"id": 77}, source="webshop"
        )
        counts, letters = store.counts(), store.open_dead_letters()
    finally:
        store.close()
    assert counts["customers"] > 0 and counts["orders"] > 0

    for plugin in ("target-chargebee", "target-customwebshop"):
        bound = links(two_way, plugin, "bound", "--format", "json")
        assert bound.returncode == 0, bound.stderr
        facts = json.loads(bound.stdout)
        systems = two_way.systems()
        assert (facts["webshop"], facts["chargebee"]) == (systems.webshop, systems.chargebee)
        assert facts["links"] == counts and facts["dead_letters"] == len(letters)

    customer = next(c for c in webshop_get(two_way, "customers") if not c["deleted_at"])
    webshop_id = str(customer["id"])
    forgot = links(two_way, "target-customwebshop", "forget", "customers",
                   "--webshop-id", webshop_id, "--yes")  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert f"forgot the customers link: webshop {webshop_id} <-> Chargebee cws_" in forgot.stdout
    store = LinkStore(two_way.link_store_url)
    try:  # gone from the store both commands found, and only that link
        assert store.counts()["customers"] == counts["customers"] - 1
    finally:
        store.close()

    # the next run that reads the record matches it again: the same Chargebee customer
    webshop_patch(two_way, "customers", webshop_id, {"phone": "+45 12 34 56 78"})
    two_way.run()
    found = links(two_way, "target-chargebee", "find", "--webshop-id", webshop_id,
                  "--resource", "customers", "--format", "json")  # fmt: skip
    assert [link["chargebee_id"] for link in json.loads(found.stdout)] == [f"cws_{webshop_id}"]
