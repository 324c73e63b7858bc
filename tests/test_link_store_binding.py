"""The link store is bound to the pair of systems it links, through `meltano run`: another
environment pointed at another Chargebee site gets a store of its own without any setting,
and a store of another pair given explicitly stops the run before it writes."""

from __future__ import annotations

from tests.harness import CHARGEBEE_KEY, Sync, assert_mirrors, expected_chargebee
from tests.plugin_forks import start_sandbox


def test_an_environment_pointed_at_another_site_gets_every_record_there(tmp_path, shop, chargebee):
    sync = Sync(tmp_path, shop, chargebee)
    del sync.env["TARGET_CHARGEBEE_LINK_STORE_URL"]  # the default: one store per pair
    del sync.env["TAP_CUSTOMWEBSHOP_LINK_STORE_URL"]  # and the tap reads that default one
    sync.run()
    site_b = start_sandbox("chargebee", str(tmp_path / "site-b.db"), CHARGEBEE_KEY)
    try:
        staging = Sync(tmp_path, shop, site_b)
        del staging.env["TARGET_CHARGEBEE_LINK_STORE_URL"]
        del staging.env["TAP_CUSTOMWEBSHOP_LINK_STORE_URL"]
        staging.env["MELTANO_DATABASE_URI"] = f"sqlite:///{tmp_path / 'staging.db'}"  # its state
        staging.run()
        assert_mirrors(staging, expected_chargebee(staging))  # every record, in site B too
        stores = sorted(p.name for p in (tmp_path / ".meltano" / "sync").glob("links-*.db"))
        assert len(stores) == 2, stores
    finally:
        site_b.stop()


def test_a_store_bound_to_another_pair_stops_the_run_before_it_writes(tmp_path, shop, chargebee):
    Sync(tmp_path, shop, chargebee).run()  # binds links.db to this webshop and site A
    site_b = start_sandbox("chargebee", str(tmp_path / "site-b.db"), CHARGEBEE_KEY)
    try:
        wrong = Sync(tmp_path, shop, site_b)  # the same explicit link_store_url
        wrong.env["MELTANO_DATABASE_URI"] = f"sqlite:///{tmp_path / 'staging.db'}"
        refused = wrong.run(check=False)
        assert refused.returncode != 0
        assert "link_store_url" in refused.stderr
        assert chargebee.url in refused.stderr and site_b.url in refused.stderr
        assert sum(wrong.writes().values()) == 0  # nothing reached site B
    finally:
        site_b.stop()
