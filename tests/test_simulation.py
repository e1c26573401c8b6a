"""Seeded multi-replica simulations under loss, duplication, reordering and partition.

See p2pexchange/simulation.py. The seed is in the test id: rerun one failing case
with `pytest tests/test_simulation.py -k seed_17`, or watch it with
`python scripts/core_demo.py --seed 17`.
"""

from __future__ import annotations

import pytest

from p2pexchange.sim.simulation import run_simulation


def check(seed: int, nodes_n: int, ticks: int, loss: float) -> None:
    result = run_simulation(seed, nodes_n=nodes_n, ticks=ticks, loss=loss)
    digests = {n.replica.digest_hex for n in result.nodes}
    assert len(digests) == 1, f"seed={seed}: no convergence after healing: {digests}"
    total = result.nodes[0].replica.stats()["events_delivered"]
    assert total == ticks, f"seed={seed}: {total} of {ticks} events delivered"
    # With everyone heard from and nothing missing, everything is final everywhere.
    for node in result.nodes:
        assert len(node.final_prefix) == ticks, f"seed={seed}: finality stalled"
    assert result.messages_lost > 0
    assert result.nodes[0].replica.stats()["trades"] > 0


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed_{s}")
def test_replicas_under_loss_and_partition_converge_after_healing(seed):
    check(seed, nodes_n=4, ticks=150, loss=0.3)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 103), ids=lambda s: f"seed_{s}")
def test_soak_many_replicas_heavy_loss(seed):
    check(seed, nodes_n=7, ticks=500, loss=0.6)
