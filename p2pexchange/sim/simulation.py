"""A seeded simulation of the members of one network under faults (in the spirit of
TigerBeetle's VOPR): nothing any honest replica reports final ever changes.

Theory of operation. `run_simulation(seed)` draws everything from `random.Random(seed)`
(no time, no global randomness, sorted iteration wherever a set could decide), so a
failing seed replays exactly; the exception names the seed and the step.
- Members: 4 or 5 from a genesis; on some seeds a newcomer, which syncs from the
  start and is admitted mid-run by a `Join` of an honest member. The join makes it a
  candidate (finality waits for it from the join on); it signs nothing, not even an
  acknowledgement, until the join is final and decided at its own replica
  (`is_member` of itself), so its first event covers the join and the acknowledgements
  that made it final, and no replica has to park it.
- Each tick (one batch interval) every node that is up and a member either signs
  its batch of random actions (workload.OrderFlow), or, when it has none and
  `wants_ack()`, one empty event on the membership market: exactly what the node
  does. Gossip goes over network.py (loss, duplication, delay, reordering); nodes
  pull from random reachable peers with `events_for(their clock)` and note each
  other's clocks as heartbeat hints (`on_heartbeat`), pulling more often while
  `missing()` says something is.
- Faults (faults.py): a partition, a pause, a kill with restart from the node's store
  (its delivered events, its own included, replayed in a random order), a load burst,
  and on some seeds one dishonest member (adversary.py): backdating, a clock
  regression, or an equivocation to two halves that each build on their version.
- Checks after every step (checks.py): each honest replica's final prefix (ids and
  trades up to its final key) only grows, and all of them are prefixes of one
  history. Then healing: no faults, no dishonest sends, no trading; nodes sync and
  acknowledge until all digests agree and nothing with actions is pending, within
  `HEAL_ROUNDS_MAX` rounds (`LivenessFailure` otherwise). After an equivocation the
  network may stay split for good: that is reported (`SimResult.stalled`), not failed.

Parameters from `core/params.py`, as the node reads them: `BATCH_ACTIONS_MAX` bounds
a burst's batch, and the replicas keep their production buffer bounds. Overridden,
none of which any safety decision reads (the finality rule reads no parameter):
- a tick stands for `BATCH_INTERVAL_S`, and everything periodic happens per tick with
  a probability instead of on its own interval (`ANTI_ENTROPY_INTERVAL_S`,
  `SYNC_GAP_PULL_INTERVAL_S`, `HEARTBEAT_INTERVAL_MS`): a short run exercises many;
- a sync answer holds `SYNC_CHUNK` events, not `SYNC_CHUNK_EVENTS`, so gaps take
  several pulls;
- a restarted node trades right after one pull instead of waiting for a sync answer
  up to `CATCH_UP_TIMEOUT_S`, and a newcomer is admitted once, without `JOIN_RETRY_S`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.events import MEMBERSHIP_MARKET, Event, Join, Leave
from ..core.market import DEFAULT_MARKETS
from ..core.params import BATCH_ACTIONS_MAX
from .adversary import backdated_clock, regressed_clock, sign_with_clock
from .checks import FinalityViolation, Ledger, LivenessFailure
from .faults import Schedule, draw_crash, draw_leave, draw_schedule
from .network import Network
from .node import SimNode

__all__ = ["FinalityViolation", "LivenessFailure", "SimResult", "Simulation",
           "run_simulation"]

TICKS = 60  # trading ticks per seed in the test; healing follows
TRADE_P = 0.3  # a member has actions to sign in a tick
ACTIONS_MAX = 4
BURST_ACTIONS_MAX = min(16, BATCH_ACTIONS_MAX)
PULL_P = 0.25  # a node pulls from a random peer in a tick (more often with gaps)
GAP_PULL_P = 0.6
HINT_P = 0.3  # a node's clock reaches a random peer as a heartbeat hint
COMPACT_P = 0.2  # a node compacts what is final in a tick (core/settled.py)
ALIVE_P = 0.5  # a node's heartbeat reaches a reachable peer in a tick (who is heard)
REMOVE_AFTER_TICKS = 10  # params.REMOVE_AFTER_S, shorter than most faults here
JOIN_RETRY_TICKS = 10  # a newcomer whose join went void asks another member
SYNC_CHUNK = 16  # events per sync answer (params.SYNC_CHUNK_EVENTS: 128)
HEAL_ROUNDS_MAX = 60
MARKETS = sorted(DEFAULT_MARKETS)

OnEvent = Callable[[int, SimNode, Event, object], None]


@dataclass
class SimResult:
    seed: int
    schedule: Schedule
    nodes: list[SimNode]
    events: int = 0  # events with actions created
    events_by: Counter[int] = field(default_factory=Counter)  # of those, per node
    messages_sent: int = 0
    messages_lost: int = 0
    heal_rounds: int = 0
    stalled: bool = False  # finality or convergence did not resume (see `stall`)
    stall: str = ""  # why: "equivocation", or "two members out" (protocols/finality.md)
    final_events: int = 0  # length of the longest final history
    prefix_checks: int = 0  # prefix states compared with another honest replica's
    checkpoints: int = 0  # checkpoints taken (each compared across honest replicas)
    prefix_changes: int = 0  # membership changes (joins, leaves, removals) among them
    voided: int = 0  # events of removed members beyond their cut (they count as empty)
    rejected: dict[str, int] = field(default_factory=dict)  # over honest replicas
    log: list[str] = field(default_factory=list)

    @property
    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes
                if n.index not in (self.schedule.persona, self.schedule.crashed)]

    @property
    def network(self) -> list[SimNode]:
        """The live nodes less those another live node removed (see `in_network`)."""
        return in_network(self.live_nodes)

    @property
    def removed(self) -> set[int]:
        """Nodes removed by some live node."""
        removed = removed_by(self.live_nodes)
        return {n.index for n in self.nodes if n.origin in removed}

    @property
    def converged(self) -> bool:
        return len({n.replica.digest for n in self.network}) == 1

    @property
    def partition(self) -> tuple[int, int]:
        window = self.schedule.partition
        return (window.start, window.end) if window else (0, 0)


class Simulation:
    def __init__(self, seed: int, members_n: int | None = None, ticks: int = TICKS,
                 loss: float = 0.2, on_event: OnEvent | None = None,
                 verbose: bool = False, kinds: tuple[str, ...] | None = None) -> None:
        self.rng = rng = random.Random(seed)
        members_n = members_n or rng.choice((4, 5))
        self.schedule = s = draw_schedule(rng, members_n, ticks, kinds)
        draw_leave(random.Random(seed * 1_000_003 + 17), s)
        draw_crash(random.Random(seed * 1_000_003 + 29), s)
        self.known: dict[bytes, Event] = {}  # every event signed in this run, by id
        self.nodes = [SimNode(seed, i, members_n, random.Random(rng.random()),
                              honest=i != s.dishonest, known=self.known,
                              remove_after=REMOVE_AFTER_TICKS)
                      for i in range(members_n + (s.newcomer is not None))]
        self.net = Network(rng, loss)
        self.ledger = Ledger()
        self.result = SimResult(seed, s, self.nodes, log=s.describe() if verbose else [])
        self.on_event = on_event
        self.verbose = verbose
        self.joined: int | None = None  # tick of the latest join of the newcomer
        self.step = -1
        # Replicas compact what is final (core/settled.py) at random moments, each on
        # its own: an rng of its own keeps the schedule of every seed as it was.
        self.compact_rng = random.Random(seed * 1_000_003 + 41)

    def run(self) -> SimResult:
        try:
            for tick in range(self.schedule.ticks):
                self.step = tick
                self._tick(tick)
            self._heal()
        except AssertionError as exc:
            raise type(exc)(f"seed {self.result.seed}, step {self.step}: {exc}") from exc
        except Exception as exc:  # a crash is a failure of this seed too
            raise AssertionError(f"seed {self.result.seed}, step {self.step}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        r = self.result
        r.messages_sent, r.messages_lost = self.net.sent, self.net.lost
        r.final_events = len(self.ledger.ids)
        r.prefix_checks = self.ledger.prefix_checks
        r.checkpoints = len(self.ledger.checkpoints)
        r.prefix_changes = max(0, len({m for m, _ in self.ledger.prefixes.values()}) - 1)
        if r.network:
            replica = r.network[0].replica
            r.voided = sum(1 for i in replica.applied_ids()
                           if replica.ledger.is_void(replica.event(i)))
        for node in self.nodes:
            if node.honest:
                for code, n in node.replica.stats()["rejected"].items():
                    r.rejected[code] = r.rejected.get(code, 0) + n
        return r

    # -- one tick ------------------------------------------------------------------

    def _tick(self, tick: int) -> None:
        self._faults(tick)
        self._deliver(tick)
        up = [n for n in self.nodes if self.schedule.up(n.index, tick)]
        for node in up:
            p = GAP_PULL_P if node.replica.missing() else PULL_P
            if self.rng.random() < p:
                self._pull(node, tick)
        for node in up:
            self._act(node, tick)
            if self.compact_rng.random() < COMPACT_P:
                node.replica.compact()
                if node.honest:
                    self.ledger.agree_checkpoints(node.view.name, node.replica)
        for node in up:
            if self.rng.random() < HINT_P:
                peer = self._peer(node, tick)
                if peer is not None:
                    peer.replica.on_heartbeat(node.origin, node.replica.clock)
            for peer in up:
                if (peer is not node and self.schedule.reachable(node.index, peer.index, tick)
                        and self.rng.random() < ALIVE_P):
                    peer.suspicion.heard(node.origin, tick)
        self._check()
        if self.verbose:
            self._note(tick, "final " + " ".join(f"{len(n.view.ids)}" for n in self.nodes))

    def _faults(self, tick: int) -> None:
        s = self.schedule
        if s.kill is not None and tick == s.kill.end:
            node = self.nodes[s.killed]
            node.restart(self.rng)
            self._note(tick, f"node {node.index} restarted from {len(node.store())} events")
            self._pull(node, tick)
        if s.persona is not None and s.attack is not None and tick == s.attack.start:
            twin = self.nodes[s.dishonest].twin(s.persona, random.Random(self.rng.random()))
            self.nodes.append(twin)
            self._note(tick, f"node {s.dishonest} splits into two personas")

    def _deliver(self, tick: int) -> None:
        s = self.schedule
        for dest, items in self.net.due(tick):
            if dest >= len(self.nodes):
                continue
            events = [(src, e) for src, e in items if s.reachable(src, dest, tick)]
            self.net.lost += len(items) - len(events)
            if events:
                node = self.nodes[dest]
                for src, _ in events:
                    node.suspicion.heard(self.nodes[src].origin, tick)
                node.replica.receive_many([e for _, e in events])

    def _peer(self, node: SimNode, tick: int) -> SimNode | None:
        peer = self.rng.randrange(len(self.nodes))
        if peer == node.index or not self.schedule.reachable(node.index, peer, tick):
            return None
        return self.nodes[peer]

    def _pull(self, node: SimNode, tick: int) -> None:
        peer = self._peer(node, tick)
        if peer is not None:
            node.suspicion.heard(peer.origin, tick)
            peer.suspicion.heard(node.origin, tick)
            items = peer.replica.events_for(node.replica.clock, SYNC_CHUNK)
            if items:
                # Every event in a run was signed here: hand over the decoded one.
                node.replica.receive_many([peer.resolve(item) for item in items])

    # -- what a node does in a tick -------------------------------------------------

    def _act(self, node: SimNode, tick: int) -> None:
        s = self.schedule
        if node.index in s.gone:
            return
        if self._admits(node, tick):
            self._admit(node, tick)
        elif node.index == s.leaver and tick >= s.leave_tick:
            self._leave(node, tick)
        elif not node.is_member():
            return  # a newcomer before its join is final and decided only syncs
        elif (vote := node.removal_statement(tick)) is not None:
            self._publish(node, node.create(MEMBERSHIP_MARKET, [vote]), tick)
            self._note(tick, f"node {node.index} states {self._describe(vote)}")
        elif not node.honest and tick in s.attack:
            self._misbehave(node, tick)
        elif self.rng.random() < (1.0 if s.burst and tick in s.burst else TRADE_P):
            self._trade(node, tick)
        elif node.replica.wants_ack():
            self._publish(node, node.create(MEMBERSHIP_MARKET, []), tick)

    def _admits(self, node: SimNode, tick: int) -> bool:
        """Whether `node` signs a join of the newcomer now: the sponsor, at the join tick,
        and again (by whichever honest member comes first) while the newcomer is no
        candidate or member `JOIN_RETRY_TICKS` after the last join (its sponsor was
        removed and the join void, or the sponsor itself is out), as a newcomer asks
        member after member."""
        s = self.schedule
        if s.newcomer is None or tick < s.join_tick or not node.honest or node.left \
                or node.index in (s.newcomer, s.leaver) or not node.is_member():
            return False
        if self.joined is None:
            return node.index == s.sponsor or not self.nodes[s.sponsor].is_member()
        origin = self.nodes[s.newcomer].origin
        return (tick - self.joined >= JOIN_RETRY_TICKS
                and origin not in node.replica.membership.members)  # type: ignore[union-attr]

    def _admit(self, node: SimNode, tick: int) -> None:
        newcomer = self.nodes[self.schedule.newcomer]  # type: ignore[index]
        self.joined = tick
        self._publish(node, node.create(MEMBERSHIP_MARKET, [Join(newcomer.origin)]), tick)
        self._note(tick, f"node {node.index} admits node {newcomer.index}")

    def _leave(self, node: SimNode, tick: int) -> None:
        """The leaver signs its leave, then only acknowledges until the leave is final
        at its own replica; then it signs nothing ever again. (One removed before it
        leaves is gone already.)"""
        if not node.left and not node.is_member():
            self.schedule.gone.add(node.index)
            self._note(tick, f"node {node.index} was removed before it could leave")
        elif not node.left:
            node.left = True
            self._publish(node, node.create(MEMBERSHIP_MARKET, [Leave()]), tick)
            self._note(tick, f"node {node.index} leaves")
        elif not node.is_member():
            self.schedule.gone.add(node.index)
            self._note(tick, f"node {node.index} is gone: its leave is final")
        elif node.replica.wants_ack():
            self._publish(node, node.create(MEMBERSHIP_MARKET, []), tick)

    def _actions(self, node: SimNode, tick: int) -> list:
        burst = self.schedule.burst is not None and tick in self.schedule.burst
        n = self.rng.randint(ACTIONS_MAX, BURST_ACTIONS_MAX) if burst else \
            self.rng.randint(1, ACTIONS_MAX)
        return [node.flow.next_action() for _ in range(n)]

    def _trade(self, node: SimNode, tick: int) -> None:
        event = node.create(self.rng.choice(MARKETS), self._actions(node, tick))
        if event is None:
            return
        self.result.events += 1
        self.result.events_by[node.index] += 1
        if self.on_event is not None:
            self.on_event(tick, node, event, node.last_receipt)
        self._publish(node, event, tick)

    def _misbehave(self, node: SimNode, tick: int) -> None:
        s, rng = self.schedule, self.rng
        first = tick == s.attack.start
        clock = None
        if s.kind == "regression" and first:
            clock = regressed_clock(node.replica, rng)
        elif s.kind == "backdate" or (s.kind == "equivocation" and rng.random() < 0.5):
            clock = backdated_clock(node.replica)
        if clock is None:
            if first or rng.random() < TRADE_P:  # two versions of one seq differ
                self._trade(node, tick)
            elif node.replica.wants_ack():
                self._publish(node, node.create(MEMBERSHIP_MARKET, []), tick)
            return
        event = sign_with_clock(node.replica, node.key.private_key, clock,
                                rng.choice(MARKETS), self._actions(node, tick))
        if s.kind != "regression" and not node.deliver_own(event):
            return
        node.remember(event)
        self._note(tick, f"node {node.index} signs {s.kind} seq {event.seq} "
                         f"lamport {event.lamport} (its replica is at {node.replica.lamport})")
        self._publish(node, event, tick)

    def _publish(self, node: SimNode, event: Event | None, tick: int) -> None:
        s = self.schedule
        if event is None:
            return
        dests = [n.index for n in self.nodes
                 if n.index != node.index and s.reachable(node.index, n.index, tick)]
        self.net.send(node.index, dests, event, tick, lossless=tick >= s.ticks)

    # -- checks and healing ----------------------------------------------------------

    def _check(self) -> None:
        for node in self.nodes:
            if node.honest:
                new = node.view.observe(node.replica)
                if new:
                    self.ledger.agree(node.view, node.replica, new)
        self.ledger.agree_prefixes([(n.view, n.replica) for n in self.nodes if n.honest])

    def _heal(self) -> None:
        s = self.schedule
        for round_ in range(HEAL_ROUNDS_MAX):
            tick = self.step = s.ticks + round_
            self._deliver(tick)
            nodes = self.result.live_nodes
            for node in nodes:
                self._pull(node, tick)
                for peer in nodes:
                    peer.suspicion.heard(node.origin, tick)
            for node in nodes:
                if node.left and not node.is_member():
                    s.gone.add(node.index)  # a leaver whose leave became final here
                elif node.index in s.gone or not node.is_member():
                    continue
                elif self._admits(node, tick):  # a newcomer whose join went void asks again
                    self._admit(node, tick)
                elif (vote := node.removal_statement(tick)) is not None:
                    self._publish(node, node.create(MEMBERSHIP_MARKET, [vote]), tick)
                    self._note(tick, f"node {node.index} states {self._describe(vote)}")
                elif node.replica.wants_ack():
                    self._publish(node, node.create(MEMBERSHIP_MARKET, []), tick)
            self._check()
            if self._settled(in_network(nodes)):
                self.result.heal_rounds = round_ + 1
                return
        self.result.heal_rounds = HEAL_ROUNDS_MAX
        self.result.stalled = True
        if s.kind == "equivocation":
            self.result.stall = "equivocation"
        elif self._two_out(in_network(nodes)):
            self.result.stall = "two members out"
        elif self._too_few(in_network(nodes)):
            self.result.stall = "too few members"
        else:
            nodes = in_network(nodes)
            waiting = {n.index: len(n.replica.finality().waiting_for) for n in nodes}
            raise LivenessFailure(f"not settled after {HEAL_ROUNDS_MAX} rounds: digests "
                                  f"{sorted({n.replica.digest_hex[:8] for n in nodes})}, "
                                  f"members waited for per node {waiting}")

    def _two_out(self, nodes: list[SimNode]) -> bool:
        """The documented limit of removal (protocols/finality.md): the member that
        crashed for good is not removed because a removal round about another member was
        open when it crashed (a vote stands, or a full set of votes waits for its
        acknowledgements): two members out at once."""
        s = self.schedule
        if s.crashed is None:
            return False
        crashed = self.nodes[s.crashed].origin
        if crashed in removed_by(nodes):
            return False
        return any(n.replica.frozen() or any(
            target != crashed for target, _, _ in n.replica.membership.removals
            .undecided_sets()) for n in nodes)

    def _too_few(self, nodes: list[SimNode]) -> bool:
        """The other documented limit: the crashed member is not removed because fewer
        than three members are left counting it (a removal needs |E| >= 3)."""
        s = self.schedule
        if s.crashed is None or not nodes:
            return False
        crashed = self.nodes[s.crashed].origin
        members = nodes[0].replica.members()
        return crashed in members and len(members) < 3

    def _settled(self, nodes: list[SimNode]) -> bool:
        if not self.net.idle() or len({n.replica.digest for n in nodes}) != 1:
            return False
        newcomer = self.schedule.newcomer
        if newcomer is not None and self.nodes[newcomer] in nodes and not all(
                n.replica.is_member(self.nodes[newcomer].origin) for n in nodes):
            return False  # its join went void: it asks again (`_admits`)
        return not any(n.replica.wants_ack() or n.pending_actions() for n in nodes)

    def _describe(self, vote) -> str:
        index = {n.origin: n.index for n in self.nodes}
        what = f"remove node {index.get(vote.target)}" if vote.target else "refusal"
        return f"{what} in round {vote.round} of {sorted(index[m] for m in vote.members)}"

    def _note(self, tick: int, line: str) -> None:
        if self.verbose:
            self.result.log.append(f"t={tick:4d} {line}")


def removed_by(nodes: list[SimNode]) -> set[bytes]:
    """The members some of `nodes` removed."""
    return {r.member for n in nodes for r in n.replica.removals()}


def in_network(nodes: list[SimNode]) -> list[SimNode]:
    """`nodes` less those another of them has removed: a removed node keeps following as
    best it can, but nothing waits for it (it would join again under a new identity),
    and it may not be able to deliver events that depend on members admitted after its
    cut (their joins are final only without it)."""
    removed = removed_by(nodes)
    return [n for n in nodes if n.origin not in removed]


def run_simulation(seed: int, nodes_n: int | None = None, ticks: int = TICKS,
                   loss: float = 0.2, on_event: OnEvent | None = None,
                   verbose: bool = False, kinds: tuple[str, ...] | None = None
                   ) -> SimResult:
    """One seeded run; raises FinalityViolation (or LivenessFailure) naming the seed.
    `kinds` forces a dishonest member of one of those kinds (faults.DISHONEST_KINDS)."""
    return Simulation(seed, nodes_n, ticks, loss, on_event, verbose, kinds).run()
