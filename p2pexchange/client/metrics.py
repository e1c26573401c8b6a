"""`GET /metrics`: the node's counters in Prometheus text format (prometheus-client).

Counts the node already keeps (events received by path and result, applied,
rejected by reason, rollbacks, peers, trades pending and final) are read when
Prometheus scrapes, by a collector over the node's public status; nothing is
counted twice. The API itself observes the place -> applied-here latency: from the
request's arrival to the moment the node has signed and applied its batch.
Each API has its own registry, so several nodes in one process do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


# Counters read from the status by name: (name, help)
_COUNTERS = (
    ("rollbacks", "Late events that re-ordered applied ones"),
    ("divergences", "Trade reports or members' checkpoints that disagreed with our own"),
    ("checkpoints_matched", "Members' checkpoints equal to our own"),
    ("finality_broken", "Events the commit rule rules out, taken as empty (alarm)"),
    ("loop_steps", "Task steps the event loop ran"),
    ("loop_steps_over_50ms", "Task steps that held the event loop 50 ms or more"))


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        s = node.status()
        received = CounterMetricFamily(
            "p2pexchange_events_received", "Events received from peers, by path "
            "(gossip, sync) and result (delivered, buffered, duplicate, rejected)",
            labels=["path", "result"])
        for (path, result), n in sorted(node.received.items()):
            received.add_metric([path, result], n)
        yield received
        yield CounterMetricFamily("p2pexchange_events_applied",
                                  "Events delivered and applied (own and peers')",
                                  value=s["events"])
        yield CounterMetricFamily("p2pexchange_own_events_published",
                                  "Events this node signed (its seq)", value=s["own_seq"])
        rejected = CounterMetricFamily("p2pexchange_rejected", "Refused input, by reason",
                                       labels=["reason"])
        for reason, n in sorted(s["rejected"].items()):
            rejected.add_metric([reason], n)
        yield rejected
        for name, doc in _COUNTERS:
            yield CounterMetricFamily(f"p2pexchange_{name}", doc, value=s[name])
        for name, doc, value in (
                ("peers", "Connected peers", s["peers"]),
                ("members", "Members of the network as this node knows them",
                 len(s["members"])),
                ("finality_waiting_for", "Members whose next event would move finality",
                 len(s["waiting_for"])),
                ("members_removed", "Members the network removed (voted out)",
                 len(s["removed"])),
                ("removal_votes_standing", "Members this node's standing votes would remove",
                 len(s["voting_to_remove"])),
                ("events_buffered", "Events waiting for their causes", s["buffered"]),
                ("trades_pending", "Trades not yet final", s["trades_pending"]),
                ("trades_final", "Trades final here", s["trades_final"]),
                ("actions_pending", "Own actions waiting to be signed", s["pending_actions"]),
                ("loop_lag_p99_ms", "Event-loop wakeup lag, p99 of recent wakeups",
                 s["loop_lag_p99_ms"])):
            yield GaugeMetricFamily(f"p2pexchange_{name}", doc, value=value)


class Metrics:
    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self.place_latency = Histogram(
            "p2pexchange_place_to_applied_seconds",
            "From an order request's arrival to its batch signed and applied here",
            buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
