"""The node's status: one dict for the API, the demo and the periodic log line.

`members` is the network's membership as this node knows it (core/finality.py),
`membership` this node's own state in it (admission.py), `waiting_for` the members
whose next event would move finality (empty when nothing waits), `removed` the members
removed so far (each with the seq after which its events count for nothing),
`voting_to_remove` the members this node's standing removal votes name,
`finality_broken` how often the network did what the commit rule rules out (more
dishonest members than it tolerates: core/ledger.py `broken`; 0 otherwise),
`checkpoint` the latest checkpoint the node took (core/checkpoint.py: n and the hash of
the state after the n-th final event that acts, the same on every node that took it)
and how many other members' heartbeats attest it, `checkpoints_matched` how many members'
attested checkpoints this node compared with its own and found equal (a difference
counts in `divergences`).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.peer.id import ID

log = logging.getLogger("p2pexchange.node")


def node_status(node: Any) -> dict:
    """The node's status as its drivers and logs show it (`Node.status`)."""
    stats = node.replica.stats()
    finality = node.control.finality()
    checkpoint = node.replica.checkpoint
    return {
        "peer_id": str(node.peer_id),
        "addr": node.listen_addr,
        "addrs": [str(a) for a in node.host.get_addrs()] if node.ready.is_set() else [],
        "membership": node.admission.state,
        "members": sorted(str(ID(o)) for o in node.replica.members()),
        "waiting_for": sorted(str(ID(o)) for o in finality.waiting_for),
        "final_frontier": finality.frontier_lamport,
        "events_final": finality.final_events,
        "checkpoint": (None if checkpoint is None else
                       {"n": checkpoint.n, "hash": checkpoint.hash.hex(),
                        "attested_by": node.control.attesting()}),
        "checkpoints_matched": node.control.checkpoints_matched,
        "started_from": node.start.outcome,
        "equivocations": len(node.replica.equivocations),
        "removed": [{"member": str(ID(r.member)), "cut": r.cut, "round": r.round,
                     "equivocated": any(o == r.member for o, _ in node.replica.equivocations)}
                    for r in node.replica.removals()],
        "voting_to_remove": [str(ID(m)) for m in node.replica.frozen()],
        "peers": len(node.peers),
        "events": stats["events_delivered"],
        "buffered": stats["events_buffered"],
        "own_seq": node.replica.clock.get(node.origin, 0),
        "trades": stats["trades"],
        "trades_final": finality.final_trades,
        "trades_pending": stats["trades"] - finality.final_trades,
        "resting": stats["resting"],
        "rollbacks": stats["rollbacks"],
        "events_reapplied": stats["events_reapplied"],
        "rejected": {**stats["rejected"], **node.rejections.by_code},
        "rejecting_peers": len(node.rejections.by_peer),
        "divergences": node.control.divergences,
        "finality_broken": stats["finality_broken"],
        "trade_reports_matched": node.control.reports.matched,
        "digest": node.replica.digest_hex,
        "pending_actions": node.pending_actions,
        **node.loop_lag.status(),
    }


async def log_status(node: Any) -> None:
    """Log the status line every `status_interval_s` (the node's config)."""
    while True:
        await trio.sleep(node.config.status_interval_s)
        log.info(status_line(node.status()))


def status_line(s: dict) -> str:
    resting = " ".join(f"{m}={n}" for m, n in s["resting"].items())
    return (f"status: peers={s['peers']} events={s['events']} resting[{resting}] "
            f"trades final={s['trades_final']} pending={s['trades_pending']} "
            f"{_waiting(s)}digest={s['digest'][:16]}")


def _waiting(s: dict) -> str:
    """Whom finality waits for, when anything waits: the members, shortened."""
    if s["membership"] != "member":
        return f"({s['membership']}) "
    if not s["waiting_for"] or not s["trades_pending"]:
        return ""
    return "finality waits for " + ",".join(p[-6:] for p in s["waiting_for"]) + " "
