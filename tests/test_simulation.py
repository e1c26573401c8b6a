"""Seeded simulations of one network's members under faults: nothing any honest replica
reports final ever changes, with the node's own finality rule (core/finality.py).

See p2pexchange/sim/simulation.py. Each run raises FinalityViolation (or, when an
honest network does not settle after healing, LivenessFailure) naming its seed and
step. More seeds: `SIM_SEEDS=5000 SIM_START=0 pytest tests/test_simulation.py`, or
`python scripts/simulate.py --seeds 5000`; replay one with a log:
`python scripts/simulate.py --seed 17`.

The mutation tests replace a rule with an unsafe one (by monkeypatching
`Membership.frontier` or `Removals.frozen_at`; no production code path changes) and
require the simulation to find a violation, so a simulation that checks nothing
fails them.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from p2pexchange.core.events import MEMBERSHIP_MARKET, Join
from p2pexchange.core.finality import Membership
from p2pexchange.core.removal import Removals
from p2pexchange.sim.faults import DISHONEST_KINDS
from p2pexchange.sim.simulation import (
    FinalityViolation,
    Simulation,
    run_simulation,
)

SIM_SEEDS = int(os.environ.get("SIM_SEEDS", "2000"))
SIM_START = int(os.environ.get("SIM_START", "0"))
CHUNK = 50


@pytest.mark.parametrize("start", range(SIM_START, SIM_START + SIM_SEEDS, CHUNK),
                         ids=lambda s: f"seeds_{s}")
def test_nothing_reported_final_ever_changes_under_faults(start):
    """Every step of every seed is checked inside the run (checks.py); after healing,
    every seed without an equivocation converges with everything final, except the
    documented limit of removal (two members out at once: protocols/finality.md)."""
    prefix_checks = prefix_changes = checkpoints = 0
    for seed in range(start, min(start + CHUNK, SIM_START + SIM_SEEDS)):
        result = run_simulation(seed)
        prefix_checks += result.prefix_checks
        prefix_changes += result.prefix_changes
        checkpoints += result.checkpoints
        if result.schedule.kind != "equivocation" and not result.stalled:
            assert result.converged, f"seed {seed}"
            assert not any(n.pending_actions() for n in result.network), f"seed {seed}"
            # Every order of a node still in the network ended final (a removed or
            # crashed node's may be lost with it, or void).
            created = sum(result.events_by[n.index] for n in result.network)
            assert result.final_events >= created, f"seed {seed}"
        assert result.stall in ("", "equivocation", "two members out", "too few members"), seed
        assert result.stall in ("", "equivocation") or result.schedule.crashed is not None
        newcomer = result.schedule.newcomer
        if newcomer is not None and result.converged and not result.stalled:
            # Its join was decided everywhere; it signed only as a member, so no replica
            # had to park or refuse its first event.
            origin = result.nodes[newcomer].origin
            assert all(n.is_member() for n in result.network
                       if n.index not in result.schedule.gone), f"seed {seed}"
            assert all(n.replica.is_member(origin) for n in result.network
                       if newcomer not in result.removed), f"seed {seed}"
            assert "not_member" not in result.rejected, f"seed {seed}"
        leaver = result.schedule.leaver
        if leaver is not None and not result.stalled:
            # It left for good (or was removed first): finality went on without it.
            origin = result.nodes[leaver].origin
            assert leaver in result.schedule.gone | result.removed, f"seed {seed}"
            assert not any(n.replica.is_member(origin) for n in result.network), seed
        assert "left" not in result.rejected, f"seed {seed}"  # it signed no action after
    # The prefix states (membership and latest events as the final prefix decides them:
    # docs/snapshot_design.md) were compared, across joins, leaves and removals too.
    assert prefix_checks > 0 and prefix_changes > 0
    assert checkpoints > 0  # taken, and compared across the honest replicas (checks.py)


def test_a_member_that_crashes_for_good_is_removed_and_finality_resumes():
    """Seeds with a crash: the others remove the crashed member (the node's policy, run
    in ticks) and everything else becomes final; the only exception is the documented
    one (another member was already the target of a full set of votes that needed the
    crashed member's acknowledgements)."""
    removed = stalled = 0
    for seed in range(SIM_START, SIM_START + 150):
        if Simulation(seed).schedule.crashed is None:
            continue
        result = run_simulation(seed)
        crashed = result.schedule.crashed
        if result.stall in ("two members out", "too few members"):
            stalled += 1
            continue
        if result.schedule.kind == "equivocation":
            continue
        assert crashed in result.removed, f"seed {seed}"
        cuts = {r.cut for n in result.network for r in n.replica.removals()
                if r.member == result.nodes[crashed].origin}
        assert len(cuts) == 1, f"seed {seed}: {cuts}"  # one cut, the same everywhere
        removed += 1
    assert removed >= 10 and stalled <= removed // 3, (removed, stalled)


def test_the_seeds_draw_every_fault_and_every_dishonest_behaviour():
    seen = Counter()
    for seed in range(SIM_START, SIM_START + min(SIM_SEEDS, 200)):
        s = Simulation(seed).schedule
        if s.partition:
            sizes = sorted(Counter(s.sides[n] for n in range(s.members_n)).values())
            seen["isolation" if sizes[0] == 1 else "split"] += 1
        seen.update(name for name in ("pause", "kill", "burst") if getattr(s, name))
        seen.update(["join"] if s.newcomer is not None else [])
        seen.update(["leave"] if s.leaver is not None else [])
        seen.update(["crash"] if s.crashed is not None else [])
        seen.update([s.kind] if s.kind else [])
        seen[f"members_{s.members_n}"] += 1
        assert all(w.end < s.ticks for w in (s.partition, s.pause, s.kill, s.attack) if w)
    expected = {"isolation", "split", "pause", "kill", "burst", "join", "leave", "crash",
                "members_4",
                "members_5", *DISHONEST_KINDS}
    assert expected <= set(seen), seen


def test_a_seed_replays_exactly():
    for seed in (3, 8, 16):
        a, b = run_simulation(seed, verbose=True), run_simulation(seed, verbose=True)
        assert a.log == b.log and a.log
        assert [n.replica.digest for n in a.nodes] == [n.replica.digest for n in b.nodes]
        assert [n.final_prefix for n in a.nodes] == [n.final_prefix for n in b.nodes]


def test_a_regressed_clock_is_refused_and_the_network_still_settles():
    refused = 0
    for seed in range(20):
        result = run_simulation(seed, kinds=("regression",))
        refused += result.rejected.get("clock_regression", 0)
        assert result.converged and not result.stalled, f"seed {seed}"
    assert refused > 0


def test_an_equivocation_never_splits_what_is_final():
    stalled = 0
    for seed in range(20):
        stalled += run_simulation(seed, kinds=("equivocation",)).stalled
    assert stalled > 0  # the halves fork for good: liveness stalls, safety holds


# -- mutations: the simulation must catch an unsafe commit rule ---------------------

SILENT_LAMPORT = 25  # "silent": a head this far behind the newest member's head


def covered_seq(head, origin: bytes) -> int:
    return head.seq if head.origin == origin else head.clock.get(origin, 0)


def mutant_committed(events, members, bound, two_rounds: bool):
    """The two-round all-member rule over `members` (or round one only), kept here so
    the mutations do not depend on the core's internals: the key of the highest event
    it commits at or before `bound` (None: no bound), or None."""
    heads = [events[m][-1] for m in members if events.get(m)]
    if len(heads) < len(members) or not heads:
        return None
    witnesses = []
    for p in members:
        w = min(covered_seq(h, p) for h in heads)
        if w == 0:
            return None
        witnesses.append(events[p][w - 1])
    best = None
    for p, witness in zip(members, witnesses, strict=True):
        c = min(covered_seq(w, p) for w in witnesses) if two_rounds else witness.seq
        while c and bound is not None and events[p][c - 1].key > bound:
            c -= 1
        if c and (best is None or events[p][c - 1].key > best):
            best = events[p][c - 1].key
    return best


def join_keys(self, events) -> dict[bytes, object]:
    """Each candidate or admitted member's earliest join key, read from the delivered
    events (joins of refused candidates included: they stop counting once refused, as
    the core's do). Scans only what was delivered since the last call."""
    seen = self.__dict__.setdefault("mutant_scanned", {})
    joined = self.__dict__.setdefault("mutant_joined", {})
    for origin, chain in events.items():
        for event in chain[seen.get(origin, 0):]:
            if event.market == MEMBERSHIP_MARKET:
                for action in event.actions:
                    if not isinstance(action, Join):
                        continue
                    if action.member not in self.genesis and (
                            action.member not in joined or event.key < joined[action.member]):
                        joined[action.member] = event.key
        seen[origin] = len(chain)
    return {m: k for m, k in joined.items() if m not in self.refused}


def mutant_rule(self, events, choose, two_rounds: bool):
    """The core's structure around a mutant commit rule: a member admitted by a join
    counts only for what sorts after its join (else a candidate, which may not sign
    before its join is final and decided, would stall the rule for ever), so the rule
    runs once per prefix of the members in order of admission, bounded by the next
    join; `choose(members)` picks whom it waits for. The highest key ever found is
    kept on the Membership, so the mutant's frontier only grows."""
    best = self.__dict__.get("mutant_frontier")
    keys = join_keys(self, events)
    joined = sorted(keys, key=keys.__getitem__)
    required = sorted(self.genesis)
    for k in range(len(joined) + 1):
        bound = keys[joined[k]] if k < len(joined) else None
        found = mutant_committed(events, choose(required), bound, two_rounds)
        if found is not None and (best is None or found > best):
            best = found
        if k < len(joined):
            required.append(joined[k])
    self.mutant_frontier = best
    return best


def frontier_ignoring_silent_members(self, events):
    """UNSAFE, the old liveness rule in spirit: a member whose latest event lags the
    newest member's by more than SILENT_LAMPORT stops holding finality back."""
    def live(members):
        if not all(events.get(m) for m in members):
            return members  # one never spoke: the rule commits nothing for this prefix
        top = max(events[m][-1].lamport for m in members)
        return [m for m in members if events[m][-1].lamport >= top - SILENT_LAMPORT]
    return mutant_rule(self, events, live, two_rounds=True)


def frontier_one_round(self, events):
    """UNSAFE: commit the highest event every member's head covers (round one only)."""
    return mutant_rule(self, events, list, two_rounds=False)


def violations(seeds, **kwargs) -> list[str]:
    found = []
    for seed in seeds:
        try:
            run_simulation(seed, **kwargs)
        except FinalityViolation as exc:
            found.append(str(exc))
            if len(found) == 3:
                break
    return found


def test_a_rule_that_ignores_silent_members_is_caught(monkeypatch):
    monkeypatch.setattr(Membership, "frontier", frontier_ignoring_silent_members)
    found = violations(range(60))
    assert len(found) == 3, found
    assert found[0].startswith("seed ") and ", step " in found[0]
    with pytest.raises(FinalityViolation) as again:  # the same seed fails the same way
        run_simulation(int(found[0].split()[1].rstrip(",")))
    assert str(again.value) == found[0]


def test_a_one_round_rule_is_caught_by_equivocation(monkeypatch):
    monkeypatch.setattr(Membership, "frontier", frontier_one_round)
    found = violations(range(120), kinds=("equivocation",))
    assert len(found) == 3, found


def test_removal_without_frozen_coverage_is_caught(monkeypatch):
    """UNSAFE: a voter may go on acknowledging the member it voted to remove (no bound
    while its vote stands). Then something of that member beyond the cut becomes final
    somewhere before the removal is decided, and the removal voids it."""
    monkeypatch.setattr(Removals, "frozen_at", lambda self, vote, past, decided: 2**62)
    found = violations(range(120))
    assert len(found) == 3, found


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(1000, 1006), ids=lambda s: f"seed_{s}")
def test_soak_long_runs_with_long_partitions(seed):
    result = run_simulation(seed, ticks=240)
    assert result.converged or result.schedule.kind == "equivocation", f"seed {seed}"
