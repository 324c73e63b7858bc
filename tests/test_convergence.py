"""Randomized end-to-end convergence of the two-way link, through the real `meltano run sync`
against both sandboxes (the edit script and the checks: tests/convergence.py).

Per seed: a small generated webshop and an empty Chargebee, a first sync, then rounds of
random edits on both sides, each followed by one `sync` and the checks: both sides alike on
every mapped field, every uncontested edit survived, every conflict went to the newer edit
and is reported with both values, no duplicates, and a further sync writes nothing. A seed
stops at its first round with a violation; the failure lists that round's violations.

Seed 1 runs in `make test` (5 rounds of at least 64 edits); more with
`SYNC_CONVERGENCE_SEEDS=2-20` (ranges and lists, or a count: `SYNC_CONVERGENCE_SEEDS=10`
runs seeds 2 to 11), rounds per seed with
`SYNC_CONVERGENCE_ROUNDS` (default 5). One summary line per seed is printed (`pytest -s`, or
`-rA`) and recorded as the test's `convergence` property.
"""

from __future__ import annotations

import os

import pytest

from tests.convergence import Convergence, extra_seeds
from tests.harness import WEBSHOP_KEY, TwoWaySync
from tests.plugin_forks import start_sandbox

SEEDS = [1, *extra_seeds(os.environ.get("SYNC_CONVERGENCE_SEEDS"))]
ROUNDS = int(os.environ.get("SYNC_CONVERGENCE_ROUNDS") or 5)
GENERATE = "customers=15,products=8,orders=15"


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{seed}" for seed in SEEDS])
def test_random_edits_on_both_sides_converge(seed, tmp_path, chargebee, record_property):
    shop = start_sandbox(
        "customwebshop", str(tmp_path / "shop.db"), WEBSHOP_KEY,
        "--generate", GENERATE, "--seed", str(seed),
    )  # fmt: skip
    try:
        result = Convergence(TwoWaySync(tmp_path, shop, chargebee), seed).run(ROUNDS)
    finally:
        shop.stop()
    summary = result.summary()
    print(summary)
    for note in result.notes:
        print(f"  note: {note}")
    record_property("convergence", summary)
    details = "\n".join(f"- {v}" for v in [*result.violations, *result.notes])
    assert not result.violations and result.rounds == ROUNDS, f"{summary}\n{details}"
