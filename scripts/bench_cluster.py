"""Cluster benchmark (issue 11): N node processes on 127.0.0.1 under a fixed offered load.

Starts --nodes node processes (node0 the bootstrap, the others bootstrapping from it, as
the demo does; no auto-trading), waits until every node sees every other and is a member
of the network, measures idle CPU, then offers --rate orders/s in total, spread
evenly over the nodes, for --duration seconds through POST /orders/batch (one call per
node every ~0.1 s; limit orders around a drifting mid from sim.workload.OrderFlow, some
crossing, plus IOC, post-only and market orders). A 503 counts as refused and makes
that node's sender back off. With --resting N each node's sender also cancels, through
POST /orders/cancel, the oldest of its orders that rested once more than N did, so the
book stays bounded (without it the load never cancels and the book grows for as long as
it runs). After the load it drains (until every node reports the
same digest and nothing buffered or queued) and prints ONE JSON line per run.

Latency: the bench subscribes to every node's `WS /stream?types=applied,status`. An
"applied" message names each applied event (with the node's time); an order id is its
event id + index, so the ids POST /orders/batch returns tell which event carries each
order. place->applied-everywhere = the last node's "applied" time minus the time the
batch call was sent; place->final-everywhere uses the status messages' final frontier
(an event counts as final on a node once the frontier's Lamport time is above its own:
conservative, since the frontier is a full sort key), for every order, traded or not.
Percentiles are over orders.

The same invocation runs the one-order-per-event baseline (nodes started with
--batch-actions-max 1) at --baseline-rate on a fresh cluster and reports the ratio of
accepted orders/s. --sweep steps the offered load on one cluster per node count until
the p99 exceeds --p99-target or acceptance falls, and plots p50/p99 against the load.

    .venv/bin/python scripts/bench_cluster.py --nodes 5 --rate 1000 --duration 20
    .venv/bin/python scripts/bench_cluster.py --sweep --nodes 3 5   # needs .[bench]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field

import httpx
import trio
import trio_websocket

from p2pexchange.core.events import OrderType, Side
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.params import BATCH_INTERVAL_S
from p2pexchange.demo import STOP_TIMEOUT_S, NodeProcess
from p2pexchange.sim.workload import OrderFlow

START_TIMEOUT_S = 60.0  # processes up and every node seeing every other
FINALITY_READY_TIMEOUT_S = 30.0  # newcomers learn the genesis, sync, and are admitted
IDLE_S = 3.0  # idle CPU is measured over this window before the load
DRAIN_TIMEOUT_S = 60.0
FINAL_WAIT_S = 20.0  # after the drain, for the last events to become final everywhere
CALL_INTERVAL_S = 0.1  # one POST /orders/batch per node this often (fewer when small)
BATCH_ORDERS_MAX = 1000  # the API's limit per call
INFLIGHT_CALLS_MAX = 32  # per node; beyond this the sender waits (the load is not met).
# A call is answered once its orders are signed, up to a batch interval later: with
# --batch-interval 0.9 and a call every 0.1 s, nine wait at any time.
BACKOFF_S = 0.25  # after a 503 (node busy)
CALL_TIMEOUT_S = 30.0
SWEEP_RATES = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
ACCEPTED_FRACTION_MIN = 0.9  # a sweep step with less accepted than this has failed
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Limits mostly rest 0..20 ticks from the mid, a fifth cross up to 5 ticks; cancels only
# with --resting.
# Words of Node.busy's reasons (a 503's message), for counting refusals by reason.
BUSY_REASONS = ("events waiting", "event loop", "peers are", "joining", "catching up", "genesis",
                "leaving", "left", "removed")
RESTS = ("resting", "partially_filled")  # outcomes of an order left on the book
ORDER_MIX = {"limit": 0.8, "ioc": 0.08, "post_only": 0.06, "market": 0.06}
MID_TICKS = 6_500_000  # 65,000.00 on BTC-USD's 0.01 tick


# -- processes ---------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def hwm_mib(pid: int, field: str = "VmHWM") -> float:
    """A process's peak resident memory (or `field`, "VmRSS": now) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Cluster:
    """N quiet node processes; `stop` leaves none behind."""

    def __init__(self, nodes: int, batch_actions_max: int | None, log_level: str,
                 batch_interval_s: float | None = None,
                 call_interval_s: float = CALL_INTERVAL_S) -> None:
        self.size = nodes
        self.call_interval_s = call_interval_s  # the load's: one API call per node this often
        self.tmp = tempfile.TemporaryDirectory(prefix="p2pexchange-bench-")
        self.extra = ["--log-level", log_level]
        if batch_interval_s is not None:
            self.extra += ["--batch-interval", str(batch_interval_s)]
        if batch_actions_max is not None:
            self.extra += ["--batch-actions-max", str(batch_actions_max)]
        self.nodes: list[NodeProcess] = []

    def start(self) -> float:
        """Start node0, then the others from its multiaddr; wait until each sees all
        others and is a member. Returns seconds to full discovery."""
        t0 = time.monotonic()
        first = self._spawn(0, [])
        self._wait_ready(first)
        assert first.addr is not None
        for i in range(1, self.size):
            self._spawn(i, ["--bootstrap", first.addr])
        for node in self.nodes:
            self._wait_ready(node)
        discovered = self._wait_until(lambda s: s["peers"] >= self.size - 1, START_TIMEOUT_S,
                                      "every node seeing every other") - t0
        self._wait_until(lambda s: s["membership"] == "member", FINALITY_READY_TIMEOUT_S,
                         "every node a member of the network (admission.py)")
        return discovered

    def _spawn(self, i: int, args: list[str]) -> NodeProcess:
        node = NodeProcess(i, os.path.join(self.tmp.name, f"node{i}"), args + self.extra,
                           echo=False)
        self.nodes.append(node)
        return node

    def _wait_ready(self, node: NodeProcess) -> None:
        if not node.ready.wait(START_TIMEOUT_S) or node.api_port is None:
            tail = "\n".join(node.tail)
            raise RuntimeError(f"{node.name} did not start (exit {node.proc.poll()}):\n{tail}")

    def _wait_until(self, ok, timeout_s: float, what: str) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if all(ok(s) for s in self.statuses()):
                    return time.monotonic()
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def statuses(self) -> list[dict]:
        return [n.request("GET", "/status") for n in self.nodes]

    def cpu(self) -> list[float]:
        return [cpu_s(n.proc.pid) for n in self.nodes]

    def idle_cpu(self, seconds: float = IDLE_S) -> list[float]:
        """Fraction of a core each node uses while nothing is offered."""
        before, t0 = self.cpu(), time.monotonic()
        time.sleep(seconds)
        after, elapsed = self.cpu(), time.monotonic() - t0
        return [round((a - b) / elapsed, 3) for a, b in zip(after, before, strict=True)]

    def stop(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        stop_by = time.monotonic() + STOP_TIMEOUT_S
        for node in self.nodes:
            try:
                node.proc.wait(max(0.1, stop_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.signal(signal.SIGKILL)
                node.proc.wait()
        for node in self.nodes:
            node.thread.join(2)
        self.tmp.cleanup()


# -- the load ------------------------------------------------------------------------------


class Orders:
    """OrderFlow's orders as API bodies: decimal strings on the market's grid."""

    def __init__(self, seed: int, market: str) -> None:
        self.market = DEFAULT_MARKETS[market]
        self.flow = OrderFlow(random.Random(seed), mid=MID_TICKS, spread=20, qty_max=10,
                              mix=ORDER_MIX)

    def next(self) -> dict:
        place = self.flow.next_action()
        body = {"market": self.market.name, "side": Side(place.side).name.lower(),
                "type": OrderType(place.type).name.lower(),
                "quantity": self.market.lots_to_qty(place.qty),
                "stp": place.stp.name.lower()}
        if place.type != OrderType.MARKET:
            body["price"] = self.market.ticks_to_price(place.price)
        return body


@dataclass
class Observed:
    """What the bench saw: calls sent and their events; every node's stream."""

    nodes: int
    calls: list[tuple[float, float, dict[str, int]]] = field(default_factory=list)
    offered: int = 0
    accepted: int = 0
    refused: int = 0
    failed: int = 0
    applied: list[dict[str, float]] = field(default_factory=list)  # per node: event -> at
    lamport: dict[str, int] = field(default_factory=dict)
    frontiers: list[list[tuple[float, int]]] = field(default_factory=list)  # (at, frontier)
    refused_by: dict[str, int] = field(default_factory=dict)  # the node's busy reason
    cancels_sent: int = 0  # order ids in POST /orders/cancel calls (--resting)
    cancelled: int = 0  # of those, answered "cancelled" (the others had closed already)
    cancels_failed: int = 0

    def __post_init__(self) -> None:
        self.applied = [{} for _ in range(self.nodes)]
        self.frontiers = [[] for _ in range(self.nodes)]


async def read_stream(port: int, index: int, seen: Observed, market: str,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    url = f"ws://127.0.0.1:{port}/stream?types=applied,status&market={market}"
    async with trio_websocket.open_websocket_url(url, max_message_size=16 * 2**20) as ws:
        task_status.started()
        applied, frontiers = seen.applied[index], seen.frontiers[index]
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] == "applied":
                for e in message["events"]:
                    applied.setdefault(e["id"], message["at"])
                    seen.lamport[e["id"]] = e["lamport"]
            elif message["type"] == "status" and message["final_frontier"] is not None:
                frontiers.append((message.get("at", time.time()), message["final_frontier"]))


async def post(http: httpx.AsyncClient, orders: list[dict], seen: Observed,
               limiter: trio.CapacityLimiter, token: object, busy: list[float],
               rested: deque[str] | None) -> None:
    try:
        sent = time.time()
        reply = await http.post("/orders/batch", json={"orders": orders})
        answered = time.time()
    except httpx.HTTPError:
        seen.failed += len(orders)
        return
    finally:
        limiter.release_on_behalf_of(token)
    if reply.status_code == 503:
        seen.refused += len(orders)
        why = reply.json().get("error", {}).get("message", "?")
        reason = next((r for r in BUSY_REASONS if r in why), "other")
        seen.refused_by[reason] = seen.refused_by.get(reason, 0) + len(orders)
        busy[0] = trio.current_time() + BACKOFF_S
        return
    if not reply.is_success:
        seen.failed += len(orders)
        return
    by_event: dict[str, int] = {}
    for placed in reply.json()["results"]:
        event_id = placed["order_id"][:64]
        by_event[event_id] = by_event.get(event_id, 0) + 1
        if rested is not None and placed["outcome"] in RESTS:
            rested.append(placed["order_id"])
    seen.accepted += len(orders)
    seen.calls.append((sent, answered, by_event))


async def cancel(http: httpx.AsyncClient, order_ids: list[str], seen: Observed,
                 limiter: trio.CapacityLimiter, token: object) -> None:
    seen.cancels_sent += len(order_ids)
    try:
        reply = await http.post("/orders/cancel", json={"order_ids": order_ids})
    except httpx.HTTPError:
        seen.cancels_failed += len(order_ids)
        return
    finally:
        limiter.release_on_behalf_of(token)
    if not reply.is_success:
        seen.cancels_failed += len(order_ids)
        return
    seen.cancelled += sum(r["outcome"] == "cancelled" for r in reply.json()["results"])


def call_plan(rate_per_node: float, every_s: float) -> tuple[float, float]:
    """(seconds between calls, orders per call) for one node's share of the load, a call
    every `every_s` unless a call would carry too many orders or less than one."""
    interval = every_s
    if rate_per_node * interval > BATCH_ORDERS_MAX:
        interval = BATCH_ORDERS_MAX / rate_per_node
    elif rate_per_node * interval < 1:
        interval = 1 / rate_per_node
    return interval, rate_per_node * interval


async def send_load(port: int, rate_per_node: float, every_s: float, duration_s: float,
                    orders: Orders, seen: Observed, resting_max: int | None) -> None:
    """Open loop: a call every interval whatever the previous ones do, at most
    INFLIGHT_CALLS_MAX in flight; a late sender skips slots rather than bursting. With
    `resting_max`, each slot also cancels the oldest orders of this node that rested
    beyond that many (one call, at most BATCH_ORDERS_MAX)."""
    interval, per_call = call_plan(rate_per_node, every_s)
    rested: deque[str] | None = deque() if resting_max is not None else None
    limiter = trio.CapacityLimiter(INFLIGHT_CALLS_MAX)
    busy = [0.0]  # until when this node asked us to back off
    limits = httpx.Limits(max_connections=INFLIGHT_CALLS_MAX)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=CALL_TIMEOUT_S) as http, trio.open_nursery() as calls:
        start = trio.current_time()
        end, due, carry = start + duration_s, start, 0.0
        while due < end:
            await trio.sleep_until(max(due, busy[0]))
            now = trio.current_time()
            if now >= end:
                break
            carry += per_call
            count = min(BATCH_ORDERS_MAX, int(carry))
            carry -= count
            if count:
                batch = [orders.next() for _ in range(count)]
                token = object()
                await limiter.acquire_on_behalf_of(token)
                seen.offered += count
                calls.start_soon(post, http, batch, seen, limiter, token, busy, rested)
            if rested is not None and len(rested) > resting_max:
                count = min(BATCH_ORDERS_MAX, len(rested) - resting_max)
                oldest = [rested.popleft() for _ in range(count)]
                token = object()
                await limiter.acquire_on_behalf_of(token)
                calls.start_soon(cancel, http, oldest, seen, limiter, token)
            due = max(due + interval, trio.current_time() - interval)


def delivered_via_sync(cluster: Cluster) -> list[float | None]:
    """Per node, the fraction of peers' events it got by sync rather than gossip."""
    out = []
    for node in cluster.nodes:
        text = httpx.get(f"http://127.0.0.1:{node.api_port}/metrics", timeout=10).text
        got = {"gossip": 0.0, "sync": 0.0}
        for line in text.splitlines():
            if line.startswith("p2pexchange_events_received_total{") and \
                    'result="delivered"' in line:
                path = line.split('path="', 1)[1].split('"', 1)[0]
                got[path] = got.get(path, 0.0) + float(line.rsplit(" ", 1)[1])
        total = got["gossip"] + got["sync"]
        out.append(round(got["sync"] / total, 3) if total else None)
    return out


# -- one run -------------------------------------------------------------------------------


def percentiles_ms(samples: list[tuple[float, int]]) -> tuple[float | None, float | None]:
    """Weighted p50 and p99 of (seconds, weight) in ms."""
    if not samples:
        return None, None
    samples = sorted(samples)
    total = sum(w for _, w in samples)
    out = []
    for q in (0.5, 0.99):
        goal, acc = q * total, 0
        for value, weight in samples:
            acc += weight
            if acc >= goal:
                out.append(round(value * 1000, 1))
                break
    return out[0], out[1]


def latencies(seen: Observed) -> dict:
    applied_s, final_s, answered_s, missing = [], [], [], 0
    # frontier per node as a running max, to find the first time it reaches a Lamport time
    fronts = []
    for series in seen.frontiers:
        times, values, high = [], [], -1
        for at, value in series:
            high = max(high, value)
            times.append(at)
            values.append(high)
        fronts.append((times, values))
    for sent, answered, by_event in seen.calls:
        for event_id, count in by_event.items():
            answered_s.append((answered - sent, count))
            ats = [node.get(event_id) for node in seen.applied]
            if None in ats:
                missing += count
                continue
            applied_s.append((max(ats) - sent, count))
            lamport = seen.lamport[event_id]
            # Final once the frontier's Lamport time is above the event's: conservative
            # (an event at the frontier's own Lamport time may be final already).
            finals = [times[i] if (i := bisect.bisect_right(values, lamport)) < len(times)
                      else None for times, values in fronts]
            if None not in finals:
                final_s.append((max(finals) - sent, count))
    a50, a99 = percentiles_ms(applied_s)
    f50, f99 = percentiles_ms(final_s)
    r50, r99 = percentiles_ms(answered_s)
    return {"applied_everywhere_p50_ms": a50, "applied_everywhere_p99_ms": a99,
            "final_everywhere_p50_ms": f50, "final_everywhere_p99_ms": f99,
            "answered_p50_ms": r50, "answered_p99_ms": r99,
            "orders_not_applied_everywhere": missing,
            "orders_not_final_everywhere": sum(w for _, w in applied_s) - sum(
                w for _, w in final_s)}


async def drain(cluster: Cluster) -> tuple[bool, float, list[dict]]:
    """Until every node reports the same digest, nothing buffered and nothing queued."""
    started = time.monotonic()
    deadline = started + DRAIN_TIMEOUT_S
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            try:
                statuses = [(await http.get(f"http://127.0.0.1:{n.api_port}/status")).json()
                            for n in cluster.nodes]
                if (len({s["digest"] for s in statuses}) == 1
                        and all(s["buffered"] == 0 and s["pending_actions"] == 0
                                for s in statuses)):
                    return True, time.monotonic() - started, statuses
            except (httpx.HTTPError, ValueError, KeyError):
                statuses = []
            if time.monotonic() > deadline:
                return False, time.monotonic() - started, statuses
            await trio.sleep(0.1)


async def wait_final(seen: Observed) -> None:
    """Until every node's frontier covers the last event applied, at most FINAL_WAIT_S."""
    last = max(seen.lamport.values(), default=0)
    with trio.move_on_after(FINAL_WAIT_S):
        while not all(f and f[-1][1] > last for f in seen.frontiers):
            await trio.sleep(0.2)


async def offer(cluster: Cluster, rate: float, duration_s: float, seed: int,
                market: str, resting_max: int | None) -> tuple[Observed, dict]:
    """Streams open, the load offered, the drain; what was seen and the run's figures."""
    seen = Observed(cluster.size)
    orders = Orders(seed, market)
    ports = [n.api_port for n in cluster.nodes]
    async with trio.open_nursery() as streams:
        for i, port in enumerate(ports):
            await streams.start(read_stream, port, i, seen, market)
        before_load = cluster.statuses()
        cpu0, t0 = cluster.cpu(), time.monotonic()
        async with trio.open_nursery() as senders:
            for port in ports:
                senders.start_soon(send_load, port, rate / cluster.size,
                                   cluster.call_interval_s, duration_s, orders, seen,
                                   resting_max)
        load_s = time.monotonic() - t0
        after_load = cluster.statuses()
        lag = [s.get("loop_lag_p99_ms") for s in after_load]
        slow = [s.get("loop_slow_steps") or [] for s in after_load]
        converged, drain_s, statuses = await drain(cluster)
        cpu1 = cluster.cpu()
        await wait_final(seen)
        streams.cancel_scope.cancel()
    figures = {
        "converged": converged, "drain_s": round(drain_s, 2), "load_s": round(load_s, 2),
        "cpu_s": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "loop_lag_p99_ms": lag,
        "slowest_steps": [[f"{s['task']} {s['ms']} ms" for s in steps[:3]] for steps in slow],
        # task steps each node's loop ran during the load, and those of 50 ms or more
        "loop_steps": [a.get("loop_steps", 0) - b.get("loop_steps", 0)
                       for a, b in zip(after_load, before_load, strict=True)],
        "loop_steps_over_50ms": [a.get("loop_steps_over_50ms", 0) - b.get("loop_steps_over_50ms", 0)
                                 for a, b in zip(after_load, before_load, strict=True)],
        "events": max((s["events"] for s in statuses), default=None),
        "trades": max((s["trades"] for s in statuses), default=None),
        # alarms (each node's count since it started): a trade report that disagrees with
        # what we computed, and what the commit rule rules out (finality undone)
        "divergences": [s.get("divergences") for s in statuses],
        "finality_broken": [s.get("finality_broken") for s in statuses],
        "rollbacks": [s.get("rollbacks") for s in statuses],  # since each node started
        "events_reapplied": [s.get("events_reapplied") for s in statuses],
        # what memory holds at the end besides history: the books' resting orders, and
        # how far the checkpoints (below which what is final is forgotten) have come
        "resting_orders": max((sum(s.get("resting", {}).values()) for s in statuses),
                              default=None),
        "checkpoint_n": [(s.get("checkpoint") or {}).get("n") for s in statuses]}
    return seen, figures


def run_once(cluster: Cluster, rate: float, duration_s: float, seed: int, market: str,
             idle: list[float], resting_max: int | None) -> dict:
    seen, fig = trio.run(offer, cluster, rate, duration_s, seed, market, resting_max)
    interval, per_call = call_plan(rate / cluster.size, cluster.call_interval_s)
    accepted_per_s = seen.accepted / fig["load_s"]
    return {
        "nodes": cluster.size, "offered_target_per_s": rate,
        "offered_per_s": round(seen.offered / fig["load_s"], 1),
        "accepted_per_s": round(accepted_per_s, 1),
        "refused_orders": seen.refused, "failed_orders": seen.failed,
        "refused_by_reason": seen.refused_by,
        "resting_max_per_node": resting_max, "cancels_sent": seen.cancels_sent,
        "cancelled_per_s": round(seen.cancelled / fig["load_s"], 1),
        "cancels_failed": seen.cancels_failed,
        "orders_per_call": round(per_call, 1), "call_interval_ms": round(interval * 1000),
        "duration_s": duration_s, **latencies(seen),
        "drain_s": fig["drain_s"], "converged": fig["converged"],
        "events": fig["events"], "trades": fig["trades"],
        "divergences": fig["divergences"], "finality_broken": fig["finality_broken"],
        "rollbacks": fig["rollbacks"], "events_reapplied": fig["events_reapplied"],
        "cpu_us_per_order": [round(c / max(1, seen.accepted) * 1e6, 1) for c in fig["cpu_s"]],
        "cpu_cores_under_load": [round(c / (fig["load_s"] + fig["drain_s"]), 2)
                                 for c in fig["cpu_s"]],
        "peak_rss_mib": [hwm_mib(n.proc.pid) for n in cluster.nodes],
        "rss_end_mib": [hwm_mib(n.proc.pid, "VmRSS") for n in cluster.nodes],
        "resting_orders": fig["resting_orders"], "checkpoint_n": fig["checkpoint_n"],
        "idle_cpu_cores": idle, "loop_lag_p99_ms": fig["loop_lag_p99_ms"],
        "slowest_steps": fig["slowest_steps"], "loop_steps": fig["loop_steps"],
        "loop_steps_over_50ms": fig["loop_steps_over_50ms"],
        "delivered_via_sync": delivered_via_sync(cluster)}


# -- invocations -----------------------------------------------------------------------------


CLUSTERS: list[Cluster] = []  # stopped in main's finally, also on Ctrl-C


def with_cluster(nodes: int, batch_actions_max: int | None, args: argparse.Namespace):
    cluster = Cluster(nodes, batch_actions_max, args.log_level, args.batch_interval,
                      args.call_interval)
    CLUSTERS.append(cluster)
    discovery_s = cluster.start()
    return cluster, discovery_s, cluster.idle_cpu()


def baseline(nodes: int, args: argparse.Namespace) -> dict | None:
    """The same load shape with one order per signed event, on a fresh cluster."""
    if args.no_baseline:
        return None
    cluster, _, idle = with_cluster(nodes, 1, args)
    try:
        out = run_once(cluster, args.baseline_rate, args.baseline_duration, args.seed + 7,
                       args.market, idle, args.resting)
    finally:
        cluster.stop()
    keep = ("offered_per_s", "accepted_per_s", "refused_orders", "applied_everywhere_p50_ms",
            "applied_everywhere_p99_ms", "final_everywhere_p99_ms", "drain_s", "converged",
            "events", "cpu_us_per_order", "loop_lag_p99_ms")
    return {"batch_actions_max": 1, "offered_target_per_s": args.baseline_rate,
            **{k: out[k] for k in keep}}


def emit(result: dict, base: dict | None) -> None:
    if base is not None:
        result["baseline"] = base
        result["accepted_ratio_vs_baseline"] = (
            round(result["accepted_per_s"] / base["accepted_per_s"], 2)
            if base["accepted_per_s"] else None)
    print(json.dumps(result), flush=True)


def fixed(args: argparse.Namespace) -> int:
    ok = True
    for nodes in args.nodes:
        base = baseline(nodes, args)
        cluster, discovery_s, idle = with_cluster(nodes, None, args)
        try:
            for rate in args.rate:
                result = {"batch_actions_max": "default",
                          "batch_interval_s": args.batch_interval or BATCH_INTERVAL_S,
                          "discovery_s": round(discovery_s, 2),
                          **run_once(cluster, rate, args.duration, args.seed, args.market,
                                     idle, args.resting)}
                emit(result, base)
                ok = ok and result["converged"]
        finally:
            cluster.stop()
    return 0 if ok else 1


def target_s(args: argparse.Namespace, nodes: int) -> float:
    return args.p99_target if args.p99_target else (1.0 if nodes <= 5 else 2.0)


def sweep(args: argparse.Namespace) -> int:
    curves: dict[int, list[dict]] = {}
    best: dict[int, float | None] = {}
    for nodes in args.nodes:
        base = baseline(nodes, args)
        cluster, discovery_s, idle = with_cluster(nodes, None, args)
        curves[nodes], best[nodes] = [], None
        try:
            for rate in [r for r in SWEEP_RATES if r <= args.sweep_max]:
                result = {"sweep": True, "p99_target_ms": target_s(args, nodes) * 1000,
                          "batch_interval_s": args.batch_interval or BATCH_INTERVAL_S,
                          **run_once(cluster, rate, args.duration, args.seed + rate,
                                     args.market, idle, args.resting)}
                emit(result, base)
                curves[nodes].append(result)
                p99 = result["applied_everywhere_p99_ms"]
                met = (result["converged"] and p99 is not None
                       and p99 <= target_s(args, nodes) * 1000
                       and result["accepted_per_s"] >= ACCEPTED_FRACTION_MIN * rate)
                if not met:
                    break
                best[nodes] = rate
        finally:
            cluster.stop()
    plot(curves, args)
    print(json.dumps({"sweep_summary": {str(n): {"highest_rate_meeting_p99_target": best[n],
                                                 "p99_target_ms": target_s(args, n) * 1000}
                                        for n in curves}, "plot": args.plot}), flush=True)
    return 0


def plot(curves: dict[int, list[dict]], args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for nodes, points in sorted(curves.items()):
        rates = [p["offered_target_per_s"] for p in points]
        line = ax.plot(rates, [p["applied_everywhere_p99_ms"] for p in points], marker="o",
                       label=f"{nodes} nodes p99")[0]
        ax.plot(rates, [p["applied_everywhere_p50_ms"] for p in points], marker=".",
                linestyle="--", color=line.get_color(), label=f"{nodes} nodes p50")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (orders/s, all nodes)")
    ax.set_ylabel("place -> applied on every node (ms)")
    ax.set_title("p2pexchange cluster on 127.0.0.1 (2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[5],
                   help="node processes per cluster, one cluster each (3..16; default 5)")
    p.add_argument("--rate", type=float, nargs="+", default=[1000.0],
                   help="offered orders/s in total (several: one run each on one cluster)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load per run")
    p.add_argument("--baseline-rate", type=float, default=100.0,
                   help="orders/s offered to the one-order-per-event baseline (default 100)")
    p.add_argument("--baseline-duration", type=float, default=10.0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--call-interval", type=float, default=CALL_INTERVAL_S, metavar="SECONDS",
                   help="one order-batch API call per node this often (default "
                        f"{CALL_INTERVAL_S}; longer: fewer, larger calls, less client work)")
    p.add_argument("--batch-interval", type=float, default=None, metavar="SECONDS",
                   help="the nodes' --batch-interval (default: theirs, "
                        f"{BATCH_INTERVAL_S} s)")
    p.add_argument("--sweep", action="store_true",
                   help=f"step the load through {SWEEP_RATES} until the p99 target fails")
    p.add_argument("--sweep-max", type=float, default=max(SWEEP_RATES))
    p.add_argument("--p99-target", type=float, default=None, metavar="SECONDS",
                   help="place->applied-everywhere p99 target (default 1 s up to 5 nodes, "
                        "2 s above)")
    p.add_argument("--plot", default="docs/bench_cluster.png", help="the sweep's PNG")
    p.add_argument("--market", default="BTC-USD", choices=sorted(DEFAULT_MARKETS))
    p.add_argument("--resting", type=int, default=None, metavar="N",
                   help="each node's sender cancels the oldest of its orders that rested "
                        "beyond N (POST /orders/cancel): a bounded book (default: no "
                        "cancels, the book grows)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-level", default="warning", choices=["info", "warning", "error"],
                   help="the nodes' log level (default warning: no per-event log lines)")
    args = p.parse_args(argv)
    if not all(2 <= n <= 16 for n in args.nodes):
        p.error("--nodes must be within 2..16")
    if not all(0 < r <= 100_000 for r in [*args.rate, args.baseline_rate]):
        p.error("rates must be within (0, 100000]")
    if not (1 <= args.duration <= 120 and 1 <= args.baseline_duration <= 120):
        p.error("durations must be within 1..120 s")
    if not 0.01 <= args.call_interval <= 2:
        p.error("--call-interval must be within 0.01..2 s")
    if args.resting is not None and not 0 <= args.resting <= 1_000_000:
        p.error("--resting must be within 0..1000000")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.sweep:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--sweep plots with matplotlib: pip install -e '.[bench]' (or pip install "
                  "matplotlib)", file=sys.stderr)
            return 2

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return sweep(args) if args.sweep else fixed(args)
    except KeyboardInterrupt:
        print("[bench] interrupted: all nodes stopped", file=sys.stderr, flush=True)
        return 130
    except RuntimeError as exc:
        print(f"[bench] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for cluster in CLUSTERS:
            if cluster.nodes and any(n.proc.poll() is None for n in cluster.nodes):
                cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
