"""How often a node pulls from a random peer as a backstop (net/sync.py): every
`ANTI_ENTROPY_INTERVAL_S` while anything arrives, slowing down while nothing does."""

from __future__ import annotations

from p2pexchange.core.params import ANTI_ENTROPY_IDLE_MAX_S, ANTI_ENTROPY_INTERVAL_S
from p2pexchange.net.sync import next_anti_entropy_s


def test_the_backstop_sync_pull_slows_down_while_nothing_arrives_and_not_otherwise():
    pauses = [ANTI_ENTROPY_INTERVAL_S]
    for _ in range(6):  # idle: 3, 6, 12, 24, 24, ...
        pauses.append(next_anti_entropy_s(pauses[-1], delivered_since=False))
    assert pauses[:4] == [ANTI_ENTROPY_INTERVAL_S * 2 ** k for k in range(4)]
    assert pauses[-1] == ANTI_ENTROPY_IDLE_MAX_S == max(pauses)
    assert next_anti_entropy_s(pauses[-1], delivered_since=True) == ANTI_ENTROPY_INTERVAL_S
