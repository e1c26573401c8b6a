"""Admission: the network's genesis, joining it, admitting others, and when to trade.

Finality needs explicit membership (core/finality.py, protocols/finality.md). A node
is in one of four states, shown as `membership` in its status:
- `learning`: it knows no genesis yet (a newcomer before its first heartbeat from a
  bootstrap peer). It takes no event in; the first heartbeat of a peer named by
  `--bootstrap` that names a genesis fixes it, for good (stored in the data dir:
  trust on first use, as for an SSH host key).
  A node started without `--bootstrap` on an empty data dir founds a network instead:
  its genesis is itself.
- `joining`: it knows the genesis and is no member. Once a sync with a peer has
  completed, it asks one connected member to admit
  it (a join request on the join topic), another one every `JOIN_RETRY_S`, until a
  join of it is delivered. It neither trades nor publishes meanwhile. (A sync that
  completed is enough: what it still lacks comes with the join, and a lying heartbeat
  could otherwise keep it from ever asking.)
- `catching_up`: a member that has not completed a sync since it started (a
  restarted member): it acknowledges, but takes no orders, for at most
  `CATCH_UP_TIMEOUT_S` (a founder alone has nobody to sync with).
- `member`: it trades, acknowledges (`Replica.wants_ack`) and admits newcomers.
- `leaving`: asked to leave (`Node.leave`): it has cancelled its open orders and
  signed its `Leave`, takes no orders, and acknowledges until its leave is final.
- `removed`: the other members removed it (it was silent for `--remove-after` while
  finality waited for it: core/removal.py); its events beyond the cut count for nothing.
  It takes no orders and signs nothing; a new data directory makes a new identity
  that may join.
- `left`: its leave is final and every other member has delivered its last event (its
  events or heartbeats say so), so nobody needs anything more from it: it signs
  nothing ever again (it still follows the network and serves its history) and may be
  stopped for good. A node that left cannot come back under the same identity: a new
  data directory makes a new one.

Removal (liveness only; the rule is core/removal.py): a member suspects another that
finality has waited for `--remove-after` seconds (`REMOVE_AFTER_S`) with no event and no
heartbeat from it, or that a kept proof shows equivocating (proofs are gossiped:
net/control.py), and signs the removal statement its replica proposes
(`Replica.removal_statement`) at its next tick.

A member admits whoever asks it, up to `MEMBERS_MAX` members (an open network; the
limits of that choice are in protocols/finality.md). The protocol itself refuses, in
the final order, every join beyond `MEMBERS_MAX` (core/finality.py), so a member
that admits more than that cannot make honest clocks overflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.peer.id import ID

from .core.events import Action, Cancel, Join, Leave, Vote
from .core.finality import MEMBERS_MAX, covers
from .core.params import (
    CATCH_UP_TIMEOUT_S,
    FOLLOW_EVENTS_AFTER_S,
    JOIN_RETRY_S,
    PENDING_ACTIONS_MAX,
    REMOVE_AFTER_S,
)
from .core.removal import Suspicion
from .core.replica import Replica
from .net import wire
from .net.batcher import Batcher
from .net.gossip import JOIN_TOPIC, Gossip
from .net.host import short_peer
from .net.rejections import Rejections
from .store import EventStore

log = logging.getLogger("p2pexchange.node")


class Admission:
    def __init__(self, replica: Replica, store: EventStore, origin: bytes, gossip: Gossip,
                 rejections: Rejections, bootstrap: set[bytes],
                 peers: Callable[[], set[ID]], syncs_completed: Callable[[], int],
                 seen_by: Callable[[bytes], int] = lambda peer: 0,
                 deciding: Callable[[], bool] = lambda: False,
                 remove_after_s: float = REMOVE_AFTER_S) -> None:
        self.replica = replica
        self.store = store
        self.origin = origin
        self.gossip = gossip
        self._reject = rejections
        self._peers = peers
        self._syncs_completed = syncs_completed
        self._seen_by = seen_by  # our highest seq a peer's heartbeat says it has
        self._deciding = deciding  # how to start (start.py): no event gossip meanwhile
        self._bootstrap = bootstrap  # the peers whose word on the genesis we take
        self._other_networks: set[bytes] = set()  # peers seen with another genesis (logged)
        self._started = time.monotonic()
        self._restarted = store.count() > 0  # history to catch up on since it stopped
        self._asked_at = -JOIN_RETRY_S
        self._asked = 0
        self._due: dict[bytes, None] = {}  # newcomers to admit in our next event
        self._admitted_at: dict[bytes, float] = {}  # newcomer -> when we signed its join
        self._leave_due = False  # sign our leave with the next tick
        self._leaving = False  # asked to leave (the leave may not be signed yet)
        self._left_logged = False
        self.suspicion = Suspicion(remove_after_s)
        self._heard_at = -1  # events delivered when we last noted whom we heard from
        self._last_seq: dict[bytes, int] = {}
        genesis = store.genesis()
        if not genesis and not bootstrap:
            genesis = [origin]
            store.set_genesis(genesis)
            log.info("founded a new network: genesis member %s", short_peer(ID(origin)))
        if genesis:
            replica.adopt_genesis(genesis)

    @property
    def state(self) -> str:
        replica = self.replica
        membership = replica.membership
        if membership is None:
            return "learning"
        if membership.removed(self.origin) is not None:
            return "removed"
        if membership.left(self.origin) is not None or self._leaving:
            return self._leave_state()
        if not replica.is_member(self.origin):
            return "joining"
        if (self._restarted and self._syncs_completed() == 0
                and self.replica.members() != [self.origin]
                and time.monotonic() - self._started < CATCH_UP_TIMEOUT_S):
            return "catching_up"
        return "member"

    def _leave_state(self) -> str:
        replica = self.replica
        if replica.is_member(self.origin):
            return "leaving"  # not signed yet, or not final yet
        last = replica.last_events(self.origin, 1)[-1]
        for member in replica.members():
            # What it has of us shows in its events, or else in its heartbeats.
            head = replica.last_events(member, 1)
            if ((not head or not covers(head[0], self.origin, last.seq))
                    and self._seen_by(member) < last.seq):
                return "leaving"
        if not self._left_logged:
            self._left_logged = True
            log.info("left the network: every member has our last event; this node may "
                     "be stopped for good")
        return "left"

    def synced_once(self) -> bool:
        """Whether it no longer waits for a first sync to read event gossip and explore
        the DHT: a founder; else once a sync has completed since it started, or after
        `FOLLOW_EVENTS_AFTER_S` (the sync exchanges take its time meanwhile)."""
        return (not self._bootstrap or self._syncs_completed() > 0
                or time.monotonic() - self._started > FOLLOW_EVENTS_AFTER_S)

    async def follow_events(self, follow: Callable[[], Awaitable[None]],
                            task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start reading the event topics (`follow`): a founder at once, before it is
        started; a node started with `--bootstrap` once `synced_once` and, once it knows
        the genesis, its start is decided (start.py: a checkpoint installs into an empty
        replica only; without a genesis nothing is taken in). Sync alone
        brings history faster: a newcomer catching up on 10,000 events spent about 40%
        of its time reading the members' live gossip (py-spy), which sync brings again
        anyway (docs/faults.md)."""
        if self._bootstrap:
            task_status.started()
            while not self.synced_once() or (self._deciding()
                                             and self.replica.membership is not None):
                await trio.sleep(0.05)
        await follow()
        if not self._bootstrap:
            task_status.started()

    def busy(self) -> str | None:
        """Why this node takes no orders yet, or None."""
        return {"learning": "waiting to learn the network's genesis from a peer",
                "joining": "joining the network (not a member yet)",
                "catching_up": "catching up with the network after a restart",
                "leaving": "this node is leaving the network",
                "left": "this node has left the network (a new data directory makes a "
                        "new identity that may join)",
                "removed": "this node was removed from the network (it was silent too "
                           "long; a new data directory makes a new identity that may join)",
                }.get(self.state)

    def can_leave(self) -> str | None:
        """Why this node cannot leave now, or None."""
        state = self.state
        if state in ("leaving", "left"):
            return f"this node is already {state}"
        if state != "member":
            return f"only a member can leave (this node is {state.replace('_', ' ')})"
        if self.replica.members() == [self.origin]:
            return "the last member of a network cannot leave it"
        return None

    async def leave(self, batcher: Batcher,
                    open_orders: Callable[[], list[tuple[str, bytes]]]) -> int:
        """Refuse orders from now on; sign what is queued, cancel every open order
        (`open_orders`: (market, order id)), and have the next tick sign our leave after
        them. Returns how many orders were cancelled; ValueError if we cannot leave."""
        reason = self.can_leave()
        if reason is not None:
            raise ValueError(reason)
        self._leaving = True
        await batcher.flush()  # orders accepted before: signed, so they are cancelled too
        cancels = open_orders()
        for market, order_id in cancels:
            if len(batcher.pending) >= PENDING_ACTIONS_MAX:
                await batcher.flush()
            batcher.submit(market, Cancel(order_id))
        await batcher.flush()
        if batcher.pending:  # could not sign (not expected): leave no order behind
            self._leaving = False
            raise ValueError("could not sign this node's cancels; try again")
        self._leave_due = True
        return len(cancels)

    # -- in --------------------------------------------------------------------------

    def on_genesis(self, sender: ID, genesis: tuple[bytes, ...]) -> None:
        """A peer's heartbeat names its genesis: adopt it if we know none yet and the
        peer is one we bootstrapped from; note a peer of another network."""
        if not genesis:
            return
        membership = self.replica.membership
        if membership is not None:
            if (membership.genesis != frozenset(genesis)
                    and sender.to_bytes() not in self._other_networks
                    and len(self._other_networks) < 1024):
                self._other_networks.add(sender.to_bytes())
                log.warning("peer %s belongs to another network (genesis %s): its events "
                            "are refused here", short_peer(sender),
                            ", ".join(short_peer(ID(m)) for m in genesis))
            return
        if sender.to_bytes() not in self._bootstrap:
            return
        self.store.set_genesis(list(genesis))
        self.replica.adopt_genesis(genesis)
        log.info("joined network of genesis %s (learned from %s)",
                 ", ".join(short_peer(ID(m)) for m in genesis), short_peer(sender))

    def on_join_request(self, sender: ID, sponsor: bytes) -> None:
        """A newcomer asks a member to admit it; the member it names does."""
        newcomer = sender.to_bytes()
        membership = self.replica.membership
        if (sponsor != self.origin or self.state != "member" or membership is None
                or newcomer in membership.members):
            return  # for another member, or already a member or a candidate
        if len(membership.members) + len(self._due) >= MEMBERS_MAX:
            self._reject("join request", "members_full", sender)
            return
        if time.monotonic() - self._admitted_at.get(newcomer, -JOIN_RETRY_S) < JOIN_RETRY_S:
            return  # our join of it is on its way
        self._due[newcomer] = None

    # -- out -------------------------------------------------------------------------

    def membership_actions(self, signed: bool) -> list[Action] | None:
        """The Batcher's hook after each tick: joins to sign, [] for an acknowledgement
        (when this tick signed nothing else), or None."""
        if self.replica.membership is None or not self.replica.is_member(self.origin):
            return None
        membership = self.replica.membership
        if self._leave_due and membership.left(self.origin) is None:
            self._leave_due = False
            log.info("leaving the network")
            return [Leave()]
        vote = self._removal_statement()
        if vote is not None:
            return [vote]
        joins = [Join(m) for m in self._due if m not in membership.members]
        self._due.clear()
        if joins:
            now = time.monotonic()
            for join in joins:
                self._admitted_at[join.member] = now
                log.info("admitting %s to the network", short_peer(ID(join.member)))
            return joins  # type: ignore[return-value]
        return [] if not signed and self.replica.wants_ack() else None

    def heard(self, peer: bytes) -> None:
        """`peer` showed it is alive (a heartbeat): no removal vote against it yet."""
        self.suspicion.heard(peer, time.monotonic())

    def _removal_statement(self) -> Vote | None:
        """The removal statement to sign now, if finality waits for a member we have
        heard nothing from (no event, no heartbeat) for `remove_after_s`."""
        replica, suspicion, now = self.replica, self.suspicion, time.monotonic()
        if self._heard_at != replica.events_delivered:  # its events are word from it
            self._heard_at = replica.events_delivered
            for member, seq in replica.clock.items():
                if self._last_seq.get(member) != seq:
                    self._last_seq[member] = seq
                    suspicion.heard(member, now)
        suspects = suspicion.suspects(now, replica.finality().waiting_for)
        suspects |= replica.equivocators() - {self.origin}  # proven: no need to wait
        if not suspects:
            return None
        vote = replica.removal_statement(suspects, suspicion.may_open(now, suspects))
        if vote is not None:
            suspicion.stated(vote, replica.opens_round(vote), now)
            what = f"remove {short_peer(ID(vote.target))}" if vote.target else "refusal"
            log.warning("removal statement: %s in round %d (suspected: %s)", what, vote.round,
                        ", ".join(short_peer(ID(m)) for m in sorted(suspects)))
        return vote

    async def run(self) -> None:
        while True:
            await trio.sleep(0.5)
            try:
                await self.tick()
            except Exception:  # a failed publish: ask again later
                log.exception("asking for admission failed")

    async def tick(self) -> None:
        """While joining: ask a connected member to admit us, now and then."""
        if (self.state != "joining" or self._syncs_completed() == 0
                or time.monotonic() - self._asked_at < JOIN_RETRY_S):
            return
        members = sorted((p for p in self._peers() if self.replica.is_member(p.to_bytes())),
                         key=str)
        if not members:
            return
        sponsor = members[self._asked % len(members)]
        self._asked += 1
        self._asked_at = time.monotonic()
        log.info("asking %s to admit us to the network", short_peer(sponsor))
        await self.gossip.publish(JOIN_TOPIC, wire.encode_join_request(sponsor.to_bytes()))
