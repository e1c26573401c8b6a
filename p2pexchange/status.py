"""The node's status: one dict for the API, the demo and the periodic log line.

`members` is provisional: the origins this replica has delivered events from, until
membership is explicit (ARCHITECTURE.md, finality).
"""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID


def node_status(node: Any) -> dict:
    """The node's status as its drivers and logs show it (`Node.status`)."""
    stats = node.replica.stats()
    finality = node.control.finality()
    # Nothing is reported final before the node has listened for one liveness timeout.
    trades_final = finality.final_trades if finality is not None else 0
    return {
        "peer_id": str(node.peer_id),
        "addr": node.listen_addr,
        "addrs": [str(a) for a in node.host.get_addrs()] if node.ready.is_set() else [],
        "members": sorted(str(ID(o)) for o in node.replica.clock),  # provisional
        "final_frontier": finality.frontier if finality is not None else None,
        "peers": len(node.peers),
        "events": stats["events_delivered"],
        "buffered": stats["events_buffered"],
        "own_seq": node.replica.clock.get(node.origin, 0),
        "trades": stats["trades"],
        "trades_final": trades_final,
        "trades_pending": stats["trades"] - trades_final,
        "resting": stats["resting"],
        "rollbacks": stats["rollbacks"],
        "rejected": {**stats["rejected"], **node.rejections.by_code},
        "rejecting_peers": len(node.rejections.by_peer),
        "divergences": node.control.divergences,
        "trade_reports_matched": node.control.trade_reports_matched,
        "digest": node.replica.digest_hex,
        "pending_actions": node.pending_actions,
        "loop_lag_p99_ms": node.loop_lag.p99_ms,
        "loop_lag_max_ms": node.loop_lag.max_ms,
    }


def status_line(s: dict) -> str:
    resting = " ".join(f"{m}={n}" for m, n in s["resting"].items())
    return (f"status: peers={s['peers']} events={s['events']} resting[{resting}] "
            f"trades final={s['trades_final']} pending={s['trades_pending']} "
            f"digest={s['digest'][:16]}")
