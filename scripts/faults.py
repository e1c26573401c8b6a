"""Fault harness (issue 10): real node processes under faults; does finality ever lie?

Each scenario starts 5 node processes, each on its own loopback address (127.0.0.2,
.3, …: a node dials from its listen address, net/host.py, so per-address firewall
rules hit its connections), node0 founding the network and the others joining it.
Every node auto-trades; the harness also places a market order through each node's
API every `--order-interval` seconds and records each acknowledgement. Then one fault:

  stop       SIGSTOP one node for --fault-s seconds, then SIGCONT
  kill       kill -9 one node, restart it from its data dir 5 s later
  join       a sixth node joins after --warmup-s of trading: until it is a member it
             must neither publish an event (own_seq 0) nor take an order (503), and no
             trade may name it; then it must trade
  partition  nodes {0,1} | {2,3,4} cut apart for --fault-s seconds by iptables DROP
             rules between their addresses (needs iptables and root; else skipped).
             The rules live in their own chain, removed whatever happens.
  isolate    (issue 13) node 4 cut off from all the others the same way for --fault-s
             seconds (default 60), trading on alone, then healed
  loss       (issue 13) 20% of the packets to and from node 4 dropped at random
             (iptables statistic match) for --fault-s seconds (default 60)
  restart    (issue 13) SIGTERM one node; it stays down while the others sign --events
             new events (default 1,000, counted by their /status), then restarts from
             its data dir: time until it holds them, is a member, finality moves again
  latejoin   (issue 13) a sixth node joins once every node holds --events events
             (default 10,000; a filler of far-off IOC orders, one event per batch tick
             per market and node, raises the rate): the join checks, plus its times to
             catch up and to become a member
  bootstrap_gone  (issue 13) node 0 is SIGKILLed for good; the others trade on for
             --fault-s, then a sixth node bootstraps from node 1: it must sync and
             converge. Finality waits for the dead member, so the drain waits for equal
             digests only, and whether the newcomer becomes a member (within
             --join-wait-s) is measured in `after_bootstrap_loss`, not a pass criterion
  bootstrap_leaves  node 0 leaves the network (POST /leave: its orders cancelled, its
             leave final), then is SIGKILLed for good; the others trade on for
             --fault-s, then a sixth node bootstraps from node 1: it must become a member
             within --join-wait-s, and everything must become final without node 0

A recorder polls every node's GET /trades (a tail long enough to overlap what it
already knows, the whole list when it cannot align) and GET /status every
`POLL_S`, and keeps every trade each node ever reported final, by its position in
that node's trade list, as (maker order, taker order, price, quantity). After the
heal and --after-s more trading it stops trading and drains (bounded) until every
node reports the same digest, nothing buffered and no trade pending. Checks:
  - final_trades_undone: trades some node reported final that are not at the same
    position, identical, in every node's converged trade list (must be 0);
  - the converged trade lists are identical; acknowledged orders are in every node's
    event store; no DIVERGENCE line in any node's log; the drain converged.
Measured: finality stall during the fault (longest time the healthy nodes' count of
final events did not grow, against the same figure before the fault), how long the
faulty node was named in `waiting_for`, heal -> finality caught up (every node's
final trades reach the most trades any healthy node held at the heal), the drain
time, place -> final p50/p99 of the harness's orders that traded (on their node).
Caught up (issue 13's convergence time under continuous trading): a node holds every
event that existed anywhere at the heal (or at a newcomer's start), by event counts
from /status; `heal_to_caught_up_s` (target 5 s), `newcomer_caught_up_s` (target 10 s)
are reported against the targets, not enforced.
One JSON line per scenario; exit status 1 if any check failed.

    .venv/bin/python scripts/faults.py                     # all ten, long versions
    .venv/bin/python scripts/faults.py stop kill --fault-s 8 --warmup-s 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from p2pexchange.core.params import REMOVE_AFTER_S

NODES = 5
FIRST_HOST = 2  # node i listens on 127.0.0.(FIRST_HOST + i)
POLL_S = 0.2  # the recorder polls every node's trades and status this often
HTTP_TIMEOUT_S = 2.0
START_TIMEOUT_S = 60.0  # a process printing its API port
MEMBERS_TIMEOUT_S = 120.0  # every node a member of a network of every node
DRAIN_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
RESTART_DELAY_S = 5.0
TRADES_LIMIT_MAX = 10_000  # the API's limit per GET /trades
OVERLAP_TRADES = 64  # known final trades a tail poll re-reads to align itself
CHAIN = "P2PX_FAULTS"
SCENARIOS = ("stop", "kill", "join", "partition", "isolate", "loss", "restart", "latejoin",
             "bootstrap_gone", "bootstrap_leaves")
CUTS = ("partition", "isolate", "loss")  # the scenarios that need iptables
LOSS_PROBABILITY = 0.2
FILL_TIMEOUT_S = 600.0  # producing the events a scenario waits for (restart, latejoin)
# Issue 13's targets, reported against (not enforced): the nodes hold every event that
# existed at the heal within 5 s of it; a late joiner holds them within 10 s of its start.
HEAL_TO_CAUGHT_UP_TARGET_S = 5.0
JOINER_CAUGHT_UP_TARGET_S = 10.0
# The filler's orders: immediate-or-cancel, far from any book, so they never trade and
# never rest; each is one signed event (one order per batch tick per market and node).
FILL_ORDERS = {"BTC-USD": ("1000.00", "1000000.00", "0.0001"),
               "ETH-USD": ("10.00", "100000.00", "0.001")}  # buy price, sell price, qty
FILL_THREADS = 2  # per node and market: one waits for its tick while the other is answered
LATEJOIN_MEMBER_TIMEOUT_S = 300.0  # the late joiner syncs the whole history first
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Trade = tuple[str, str, str, str]  # (maker order, taker order, price, quantity)


# -- the pure part: what the recorder keeps and how it is judged ----------------------------


def trade_of(t: dict) -> Trade:
    return (t["maker_order"], t["taker_order"], t["price"], t["quantity"])


@dataclass
class FinalLog:
    """Every trade one node reported final, by position in its trade list."""

    at: dict[int, Trade] = field(default_factory=dict)
    position: dict[Trade, int] = field(default_factory=dict)
    changed: list[tuple[int, Trade, Trade]] = field(default_factory=list)  # pos, was, now
    regressions: int = 0  # reported final before, pending now (e.g. after a restart)
    not_prefix: int = 0  # a final trade after a pending one in one answer

    def align(self, tail: Sequence[dict], complete: bool) -> int | None:
        """The position of `tail[0]`: 0 for a complete list, else that of a known final
        trade; None when the tail starts past what we know."""
        if complete or not tail:
            return 0
        return self.position.get(trade_of(tail[0]))

    def absorb(self, start: int, tail: Sequence[dict]) -> list[Trade]:
        """Take in one answer whose first trade is at `start`; returns the trades
        newly seen final."""
        new, seen_pending = [], False
        for i, t in enumerate(tail):
            pos, trade = start + i, trade_of(t)
            known = self.at.get(pos)
            if t["status"] != "final":
                seen_pending = True
                if known is not None and known == trade:
                    self.regressions += 1
                continue
            if seen_pending:
                self.not_prefix += 1
            if known is None:
                self.at[pos] = trade
                self.position.setdefault(trade, pos)
                new.append(trade)
            elif known != trade:
                self.changed.append((pos, known, trade))
        return new


def undone_final_trades(reported: Sequence[FinalLog],
                        converged: Sequence[Sequence[Trade]]) -> list[dict]:
    """Trades some node reported final that some node's converged list does not hold,
    identically, at the same position; and final trades a node later reported changed."""
    undone: dict[tuple[int, Trade], dict] = {}
    for n, log in enumerate(reported):
        for pos, was, now in log.changed:
            undone.setdefault((pos, was), {"position": pos, "trade": list(was),
                                           "reported_by": n, "later": list(now)})
        for pos, trade in log.at.items():
            for m, trades in enumerate(converged):
                have = trades[pos] if pos < len(trades) else None
                if have != trade:
                    undone.setdefault((pos, trade), {
                        "position": pos, "trade": list(trade), "reported_by": n,
                        "node": m, "converged": list(have) if have else None})
    return sorted(undone.values(), key=lambda u: u["position"])


def longest_flat_s(series: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """The longest time within [start, end] during which the value did not grow."""
    longest, since, last = 0.0, start, None
    for t, value in series:
        if t < start:
            last = value
            continue
        if t > end:
            break
        if last is not None and value > last:
            longest = max(longest, t - since)
            since = t
        last = value
    return round(max(longest, (min(end, series[-1][0]) - since) if series else 0.0), 2)


def percentile_ms(samples: Sequence[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


# -- processes ------------------------------------------------------------------------------


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class NodeProcess:
    """One node process on its own address; its output goes to `log_path` (appended
    across restarts), with the lines that matter counted as they pass."""

    def __init__(self, index: int, root: str, rate: float, bootstrap: str | None,
                 remove_after_s: float = REMOVE_AFTER_S) -> None:
        self.index = index
        self.remove_after_s = remove_after_s
        self.name = f"node{index}"
        self.ip = f"127.0.0.{FIRST_HOST + index}"
        self.port = free_port(self.ip)
        self.data_dir = os.path.join(root, self.name)
        self.log_path = os.path.join(root, f"{self.name}.log")
        self.rate = rate
        self.bootstrap = bootstrap
        self.divergence_lines = 0
        self.error_lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.addr: str | None = None
        self.api_port: int | None = None
        self.peer_id: str | None = None
        self.ready = threading.Event()
        cmd = [sys.executable, "-u", "-m", "p2pexchange", "--data-dir", self.data_dir,
               "--listen", f"/ip4/{self.ip}/tcp/{self.port}", "--api-port", "0",
               "--status-interval", "5", "--seed", str(self.index), "--auto-trade",
               "--rate", str(self.rate), "--remove-after", str(self.remove_after_s)]
        if self.bootstrap:
            cmd += ["--bootstrap", self.bootstrap]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     text=True, bufsize=1, cwd=ROOT)
        self.thread = threading.Thread(target=self._relay, args=(self.proc,), daemon=True)
        self.thread.start()

    def _relay(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with open(self.log_path, "a") as log:
            for line in proc.stdout:
                log.write(line)
                if line.startswith("node ") and " listening on " in line:
                    self.addr = line.rstrip().rsplit(" ", 1)[1]
                    self.peer_id = line.split()[1]
                elif line.startswith("client API on 127.0.0.1:"):
                    self.api_port = int(line.rstrip().rsplit(":", 1)[1])
                    self.ready.set()
                if "DIVERGENCE" in line:
                    self.divergence_lines += 1
                if "Traceback" in line and len(self.error_lines) < 20:
                    self.error_lines.append(line.rstrip())
        self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(START_TIMEOUT_S) or self.api_port is None:
            raise RuntimeError(f"{self.name} did not start (exit {self.proc.poll()}); "
                               f"see {self.log_path}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def get(self, path: str, timeout: float = HTTP_TIMEOUT_S) -> dict:
        if self.api_port is None:
            raise httpx.ConnectError("not started")
        reply = httpx.get(self.url(path), timeout=timeout)
        reply.raise_for_status()
        return reply.json()

    def post(self, path: str, body: dict, timeout: float = HTTP_TIMEOUT_S) -> httpx.Response:
        if self.api_port is None:
            raise httpx.ConnectError("not started")
        return httpx.post(self.url(path), json=body, timeout=timeout)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self.thread.join(5)
        self.api_port = None

    def stop(self) -> None:
        self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.signal(signal.SIGTERM)


def stop_all(nodes: Iterable[NodeProcess]) -> None:
    nodes = list(nodes)
    for node in nodes:
        node.stop()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for node in nodes:
        if node.proc is None:
            continue
        try:
            node.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.kill()


# -- the partition ----------------------------------------------------------------------------


def partition_skip_reason() -> str | None:
    if shutil.which("iptables") is None:
        return "partition scenario skipped: no `iptables` on this machine"
    if os.geteuid() != 0:
        return "partition scenario skipped: iptables rules need root"
    return None


def _iptables(*args: str, check: bool = True) -> bool:
    done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done.returncode == 0


def _new_chain() -> None:
    """Our chain, empty, jumped to from INPUT (whatever an earlier run left is gone)."""
    heal_partition()
    _iptables("-N", CHAIN)
    _iptables("-I", "INPUT", "-j", CHAIN)


def partition(side_a: Sequence[str], side_b: Sequence[str]) -> None:
    """DROP every packet between an address of `side_a` and one of `side_b`."""
    _new_chain()
    for a in side_a:
        for b in side_b:
            _iptables("-A", CHAIN, "-s", a, "-d", b, "-j", "DROP")
            _iptables("-A", CHAIN, "-s", b, "-d", a, "-j", "DROP")


def lose(address: str, probability: float) -> None:
    """DROP a random `probability` of the packets from or to `address`."""
    _new_chain()
    for direction in ("-s", "-d"):
        _iptables("-A", CHAIN, direction, address, "-m", "statistic", "--mode", "random",
                  "--probability", f"{probability:.2f}", "-j", "DROP")


def heal_partition() -> None:
    """Remove our chain and the jump to it, whatever of them exists."""
    if shutil.which("iptables") is None or os.geteuid() != 0:
        return
    while _iptables("-D", "INPUT", "-j", CHAIN, check=False):
        pass
    _iptables("-F", CHAIN, check=False)
    _iptables("-X", CHAIN, check=False)


# -- the recorder and the order placer -----------------------------------------------------


@dataclass
class Sample:
    at: float
    membership: str
    events_final: int
    trades: int
    trades_final: int
    trades_pending: int
    waiting_for: list[str]
    own_seq: int
    pending_actions: int
    digest: str
    events: int = 0
    buffered: int = 0


class Recorder:
    """One thread per node polling its trades and status every POLL_S."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes  # the list is shared: a node added later is picked up
        self.finals: list[FinalLog] = []
        self.samples: list[list[Sample]] = []
        self.first_final: list[dict[str, float]] = []  # per node: taker order -> first final
        self.first_seen_origin: dict[str, float] = {}  # peer id -> first trade naming it
        self.overflow = False
        self.poll_errors = 0
        self._pending: list[int] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._spawn_missing()

    def _spawn_missing(self) -> None:
        while len(self._threads) < len(self.nodes):
            i = len(self._threads)
            self.finals.append(FinalLog())
            self.samples.append([])
            self.first_final.append({})
            self._pending.append(0)
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            self._threads.append(t)
            t.start()

    def watch_new_nodes(self) -> None:
        self._spawn_missing()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, i: int) -> None:
        full = True
        while not self._stop.is_set():
            started = time.monotonic()
            node = self.nodes[i]
            if node.api_port is None:  # down on purpose (terminated, killed, restarting)
                self._stop.wait(POLL_S)
                continue
            try:
                total = self._sample(i, node)
                full = self._poll_trades(i, node, full, total)
            except (httpx.HTTPError, ValueError, KeyError):
                self.poll_errors += 1
            self._stop.wait(max(0.0, POLL_S - (time.monotonic() - started)))

    def _sample(self, i: int, node: NodeProcess) -> int:
        """Record one /status sample; returns the node's number of trades."""
        s = node.get("/status")
        self.samples[i].append(Sample(
            time.monotonic(), s["membership"] if "membership" in s else "?",
            s.get("events_final", 0), s["trades"], s["trades_final"], s["trades_pending"],
            s.get("waiting_for", []), s["own_seq"], s["pending_actions"], s["digest"],
            s.get("events", 0), s.get("buffered", 0)))
        return s["trades"]

    def _poll_trades(self, i: int, node: NodeProcess, full: bool, total: int) -> bool:
        """One poll; returns whether the next one must read the whole list. A tail
        reaches back to the last trade known final here (`total`, the node's trade
        count, says how far that is), so a node catching up on thousands of trades is
        not asked for its whole list five times a second (which took CPU from it)."""
        known = len(self.finals[i].at)
        limit = TRADES_LIMIT_MAX if full else min(TRADES_LIMIT_MAX, max(
            self._pending[i] + 200, total - known + 100) + OVERLAP_TRADES)
        trades = node.get(f"/trades?limit={limit}", timeout=5.0)["trades"]
        complete = len(trades) < limit
        if full and not complete:
            self.overflow = True  # more trades than one answer holds: cannot align
            return True
        log = self.finals[i]
        start = log.align(trades, complete)
        if start is None:
            return True
        now = time.monotonic()
        with self._lock:
            new = log.absorb(start, trades)
        for trade in new:
            self.first_final[i].setdefault(trade[1], now)
        self._pending[i] = sum(t["status"] != "final" for t in trades)
        for t in trades[-(self._pending[i] + OVERLAP_TRADES):]:
            for origin in (t["maker_origin"], t["taker_origin"]):
                self.first_seen_origin.setdefault(origin, now)
        return False

    def latest(self, i: int) -> Sample | None:
        return self.samples[i][-1] if self.samples[i] else None


@dataclass
class Placed:
    node: int
    sent: float
    order_id: str


class OrderPlacer:
    """A market order through every node's API every `interval_s`, alternating sides;
    records each acknowledgement (201) with the order id every node uses."""

    def __init__(self, nodes: list[NodeProcess], interval_s: float) -> None:
        self.nodes = nodes
        self.interval_s = interval_s
        self.acked: list[Placed] = []
        self.refused = 0  # 503: busy (joining, catching up, backlog)
        self.refused_why: dict[str, int] = {}  # node: message -> count
        self.failed = 0  # no answer or another status
        self.skip: set[int] = set()  # nodes the placer leaves alone (the newcomer's check)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        k = 0
        while not self._stop.wait(self.interval_s):
            for i, node in enumerate(list(self.nodes)):
                if i in self.skip or self._stop.is_set():
                    continue
                k += 1
                body = {"market": "BTC-USD", "side": "buy" if k % 2 else "sell",
                        "type": "market", "quantity": "0.0005"}
                sent = time.monotonic()
                try:
                    reply = node.post("/orders", body, timeout=1.0)
                except httpx.HTTPError:
                    self.failed += 1
                    continue
                if reply.status_code == 201:
                    self.acked.append(Placed(i, sent, reply.json()["order_id"]))
                elif reply.status_code == 503:
                    self.refused += 1
                    message = reply.json().get("error", {}).get("message", "?")
                    why = "".join("N" if c.isdigit() else c for c in message)
                    why = why.replace("N.N", "N").replace("NN", "N")
                    self.refused_why[why] = self.refused_why.get(why, 0) + 1
                else:
                    self.failed += 1


class Filler:
    """More events for `latejoin`: per node and market a thread placing one IOC order far
    from the book at a time. The API answers once the order is signed, and a node signs
    one event per market per batch tick, so each thread adds about one event per tick.
    Its acknowledgements join the placer's, so they are checked like every other."""

    def __init__(self, nodes: list[NodeProcess], placer: OrderPlacer, count: int) -> None:
        self.nodes = nodes[:count]
        self.placer = placer
        self.refused = 0
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i, m), daemon=True)
                         for i in range(len(self.nodes)) for m in sorted(FILL_ORDERS)
                         for _ in range(FILL_THREADS)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, i: int, market: str) -> None:
        buy, sell, qty = FILL_ORDERS[market]
        k = 0
        while not self._stop.is_set():
            k += 1
            side, price = ("buy", buy) if k % 2 else ("sell", sell)
            body = {"market": market, "side": side, "type": "ioc", "price": price,
                    "quantity": qty}
            sent = time.monotonic()
            try:
                reply = self.nodes[i].post("/orders", body, timeout=5.0)
            except httpx.HTTPError:
                self.failed += 1
                self._stop.wait(0.5)
                continue
            if reply.status_code == 201:
                self.placer.acked.append(Placed(i, sent, reply.json()["order_id"]))
            elif reply.status_code == 503:
                self.refused += 1
                self._stop.wait(0.3)  # backpressure: the node lags, let it breathe
            else:
                self.failed += 1
                self._stop.wait(0.5)


# -- one scenario ------------------------------------------------------------------------------


@dataclass
class Settings:
    warmup_s: float
    fault_s: float
    after_s: float
    rate: float
    order_interval_s: float
    keep: str | None
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    events: int = 0  # restart: events the others produce while the node is down;
    # latejoin: events the network holds before the newcomer starts
    join_wait_s: float = 60.0  # bootstrap_gone: how long the newcomer may take to be a member
    fill: bool = True  # latejoin: add the filler's orders to reach `events` sooner
    remove_after_s: float = REMOVE_AFTER_S  # the nodes' --remove-after (liveness only)


class Scenario:
    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.s = settings
        self.tmp = tempfile.TemporaryDirectory(prefix=f"p2pexchange-faults-{name}-")
        self.root = settings.keep and os.path.join(settings.keep, name) or self.tmp.name
        os.makedirs(self.root, exist_ok=True)
        self.nodes: list[NodeProcess] = []
        self.result: dict = {"scenario": name}
        self.failures: list[str] = []
        self.faulty: int | None = None
        self.dead: set[int] = set()  # nodes killed for good (bootstrap_gone)
        self.heal_at: float | None = None  # set by a fault whose end is not its return
        self.newcomer_started: float | None = None
        self.join_facts: dict = {}
        # bootstrap_gone: finality waits for the dead member until the others remove it
        # (--remove-after); then every trade must become final all the same.
        self.finality_expected = True

    def live(self) -> list[NodeProcess]:
        return [n for i, n in enumerate(self.nodes) if i not in self.dead]

    # -- setup

    def start_cluster(self) -> None:
        t0 = time.monotonic()
        first = NodeProcess(0, self.root, self.s.rate, None, self.s.remove_after_s)
        self.nodes.append(first)
        first.wait_ready()
        for i in range(1, NODES):
            self.nodes.append(NodeProcess(i, self.root, self.s.rate, first.addr,
                                          self.s.remove_after_s))
        for node in self.nodes:
            node.wait_ready()
        self.wait_until(lambda ss: all(s["membership"] == "member"
                                       and len(s["members"]) == NODES for s in ss),
                        MEMBERS_TIMEOUT_S, "every node a member of a 5-member network")
        self.result["members_after_s"] = round(time.monotonic() - t0, 1)

    def statuses(self, nodes: Sequence[NodeProcess] | None = None) -> list[dict]:
        return [n.get("/status") for n in (self.live() if nodes is None else nodes)]

    def events_min(self, nodes: Sequence[NodeProcess]) -> int:
        """The fewest events any of `nodes` holds (retried while an answer is late)."""
        found: list[int] = []
        self.wait_until(lambda ss: found.append(min(s["events"] for s in ss)) is None,
                        30.0, "status answers", nodes)
        return found[-1]

    def wait_until(self, ok, timeout_s: float, what: str,
                   nodes: Sequence[NodeProcess] | None = None) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if ok(self.statuses(nodes)):
                    return time.monotonic()
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(POLL_S)

    # -- the run

    def run(self) -> dict:
        self.start_cluster()
        self.recorder = Recorder(self.nodes)
        self.placer = OrderPlacer(self.nodes, self.s.order_interval_s)
        self.recorder.start()
        self.placer.start()
        self.t_warm = time.monotonic()
        time.sleep(self.s.warmup_s)
        self.t_fault = time.monotonic()
        getattr(self, f"fault_{self.name}")()
        self.t_heal = self.heal_at or time.monotonic()
        self.heal_trades = max((self.recorder.latest(i).trades
                                for i in range(NODES) if i != self.faulty
                                and i not in self.dead
                                and self.recorder.latest(i) is not None), default=0)
        time.sleep(self.s.after_s)
        self.drain()
        self.judge()
        return self.result

    def fault_stop(self) -> None:
        self.faulty = 3
        node = self.nodes[self.faulty]
        node.signal(signal.SIGSTOP)
        time.sleep(self.s.fault_s)
        node.signal(signal.SIGCONT)

    def fault_kill(self) -> None:
        self.faulty = 2
        node = self.nodes[self.faulty]
        node.kill()
        time.sleep(RESTART_DELAY_S)
        node.start()
        node.wait_ready()

    def fault_partition(self) -> None:
        self.cut(lambda: partition([n.ip for n in self.nodes[:2]],
                                   [n.ip for n in self.nodes[2:]]))

    def fault_isolate(self) -> None:
        """Node 4 alone on one side: it keeps trading, and so must catch up with the
        four others (and they with it) after the heal."""
        self.cut(lambda: partition([self.nodes[4].ip], [n.ip for n in self.nodes[:4]]))

    def fault_loss(self) -> None:
        """Node 4's packets, both ways, dropped at random: TCP retransmits, so the node
        sees delay and stalls rather than lost messages; it trades on throughout."""
        self.cut(lambda: lose(self.nodes[4].ip, LOSS_PROBABILITY))

    def cut(self, install: Callable[[], None]) -> None:
        """`install` firewall rules for the fault's length, then remove them."""
        install()
        try:
            time.sleep(self.s.fault_s)
        finally:
            heal_partition()

    def fault_join(self) -> None:
        """The newcomer starts after the warm-up; until it is a member it must publish
        nothing, take no order (503) and be named in no trade; then it must trade."""
        self.newcomer(self.nodes[0].addr, MEMBERS_TIMEOUT_S, member_required=True)

    def fault_restart(self) -> None:
        """Node 2 is terminated (SIGTERM: a clean stop) and stays down while the others
        sign `events` new events (the fewest any of them holds, from /status); then it
        restarts from its data dir. The heal is the restart."""
        self.faulty = 2
        node = self.nodes[self.faulty]
        others = [n for i, n in enumerate(self.nodes) if i != self.faulty]
        node.stop()
        try:
            node.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.kill()
        node.thread.join(5)
        node.api_port = None
        down_at = time.monotonic()
        before = self.events_min(others)
        try:
            self.wait_until(lambda ss: min(s["events"] for s in ss) >= before + self.s.events,
                            FILL_TIMEOUT_S, f"{self.s.events} new events on the others", others)
        except TimeoutError as exc:
            self.failures.append(str(exc))
        self.result["restart"] = {"exit_code": node.proc.returncode,
                                  "events_while_down": self.events_min(others) - before,
                                  "down_s": round(time.monotonic() - down_at, 1)}
        self.heal_at = time.monotonic()
        node.start()
        node.wait_ready()  # the process started, replayed its store, serves its API
        self.result["restart"]["api_ready_s"] = round(time.monotonic() - self.heal_at, 2)

    def fault_latejoin(self) -> None:
        """After the warm-up, the filler raises the event rate until every node holds
        `events` events; then a sixth node joins as in `join` (the same checks)."""
        filler = Filler(self.nodes, self.placer, NODES) if self.s.fill else None
        t0 = time.monotonic()
        if filler is not None:
            filler.start()
        try:
            self.wait_until(lambda ss: min(s["events"] for s in ss) >= self.s.events,
                            FILL_TIMEOUT_S, f"{self.s.events} events on every node")
        except TimeoutError as exc:
            self.failures.append(str(exc))
        finally:
            if filler is not None:
                filler.stop()
        self.result["fill"] = {"fill_s": round(time.monotonic() - t0, 1),
                               "events_at_join": self.events_min(self.nodes),
                               "filler_refused": filler and filler.refused,
                               "filler_unanswered": filler and filler.failed}
        self.newcomer(self.nodes[0].addr, LATEJOIN_MEMBER_TIMEOUT_S, member_required=True)

    def fault_bootstrap_gone(self) -> None:
        """Node 0, the bootstrap, is killed (SIGKILL) for good; the others trade on for
        --fault-s (longer than --remove-after: they remove it, and finality resumes),
        then a sixth node starts with node 1 as its bootstrap: it must sync, converge and
        become a member (its join is decided in the final order, without node 0)."""
        self.faulty = 0
        self.placer.skip.add(0)
        self.nodes[0].kill()
        self.dead.add(0)
        time.sleep(self.s.fault_s)
        self.heal_at = time.monotonic()  # the newcomer's start: the fault never ends
        self.newcomer(self.nodes[1].addr, self.s.join_wait_s, member_required=True)

    def fault_bootstrap_leaves(self) -> None:
        """Node 0, the bootstrap, leaves (POST /leave) and, once it reports `left`, is
        killed for good; the others trade on for --fault-s, then a sixth node starts with
        node 1 as its bootstrap and must become a member: finality no longer waits for a
        member whose leave is final."""
        self.faulty = 0
        self.placer.skip.add(0)
        asked = time.monotonic()
        reply = self.nodes[0].post("/leave", {})
        if reply.status_code != 202:
            self.failures.append(f"POST /leave answered {reply.status_code}: {reply.text}")
        left_at = None
        deadline = asked + self.s.join_wait_s
        while time.monotonic() < deadline:
            try:
                if self.nodes[0].get("/status")["membership"] == "left":
                    left_at = time.monotonic()
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(POLL_S)
        self.result["leave"] = {"answer": reply.status_code, "cancelled": reply.json().get(
            "cancelled") if reply.status_code == 202 else None,
            "left_after_s": left_at and round(left_at - asked, 2)}
        if left_at is None:
            self.failures.append(f"node 0 did not report left within {self.s.join_wait_s} s")
        self.nodes[0].kill()
        self.dead.add(0)
        time.sleep(self.s.fault_s)
        self.heal_at = time.monotonic()
        self.newcomer(self.nodes[1].addr, self.s.join_wait_s, member_required=True)

    def newcomer(self, bootstrap: str | None, timeout_s: float, member_required: bool) -> None:
        """Start a sixth node and probe it until it is a member or `timeout_s` passed:
        until then it must publish nothing, take no order (503), be named in no trade."""
        self.newcomer_spawned = time.monotonic()
        newcomer = NodeProcess(NODES, self.root, self.s.rate, bootstrap, self.s.remove_after_s)
        self.placer.skip.add(NODES)  # probed here instead, with its own checks
        self.nodes.append(newcomer)
        newcomer.wait_ready()
        self.recorder.watch_new_nodes()
        started = time.monotonic()
        states: dict[str, float] = {}
        published_before, taken_before, probes, pending_max = 0, 0, 0, 0
        member_at = None
        last_not_member = started  # when the last status showing no member was asked
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            asked = time.monotonic()
            try:
                s = newcomer.get("/status")
            except (httpx.HTTPError, ValueError):
                time.sleep(POLL_S)
                continue
            states.setdefault(s["membership"], round(time.monotonic() - started, 2))
            if s["membership"] == "member":
                member_at = time.monotonic()
                break
            last_not_member = asked
            published_before += s["own_seq"] > 0
            pending_max = max(pending_max, s["pending_actions"])
            try:
                reply = newcomer.post("/orders", {"market": "BTC-USD", "side": "buy",
                                                  "type": "market", "quantity": "0.0005"})
                probes += 1
                if reply.status_code != 503:
                    after = newcomer.get("/status")["membership"]
                    if after != "member":  # an order taken while not a member
                        taken_before += 1
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)
        if member_at is not None:
            self.placer.skip.discard(NODES)
        peer = newcomer.peer_id
        named_at = self.recorder.first_seen_origin.get(peer or "")
        self.join_facts = {"api_ready_after_s": round(started - self.newcomer_spawned, 2),
                           "states_seen_at_s": states, "member_after_s":
                           member_at and round(member_at - started, 2),
                           "polls_with_own_events_before_member": published_before,
                           "orders_taken_before_member": taken_before,
                           "orders_probed_before_member": probes,
                           "pending_actions_max_before_member": pending_max}
        if member_at is None and member_required:
            self.failures.append("newcomer never became a member")
        if published_before or taken_before:
            self.failures.append("newcomer published or took orders before it was a member")
        # Seen (answer received) before a status that still showed no member was asked.
        if named_at is not None and named_at < last_not_member:
            self.failures.append("a trade named the newcomer before it was a member")
        self.newcomer_started = started

    def drain(self) -> None:
        self.placer.stop()
        t0 = time.monotonic()
        for node in self.live():
            try:
                node.post("/trading", {"on": False}, timeout=5)
                node.post("/flush", {}, timeout=10)
            except httpx.HTTPError:
                pass
        self.converged = False
        try:
            final = self.finality_expected
            self.wait_until(lambda ss: len({s["digest"] for s in ss}) == 1
                            and len({s["events"] for s in ss}) == 1
                            and all(s["buffered"] == 0 and s["pending_actions"] == 0
                                    and (s["trades_pending"] == 0 or not final) for s in ss),
                            self.s.drain_timeout_s, "every digest equal" +
                            (" and no trade pending" if final else " (finality not awaited)"))
            self.converged = True
        except TimeoutError as exc:
            self.failures.append(str(exc))
            self.result["drain_stuck"] = self.stuck()
        self.result["drain_s"] = round(time.monotonic() - t0, 1)
        time.sleep(3 * POLL_S)  # the recorder sees the last finals
        self.recorder.stop()

    def stuck(self) -> list[dict]:
        """What each node still waits for when the drain times out."""
        out = []
        for node in self.live():
            try:
                s = node.get("/status")
            except (httpx.HTTPError, ValueError) as exc:
                out.append({"node": node.name, "error": str(exc)})
                continue
            names = {n.peer_id: n.name for n in self.nodes}
            out.append({"node": node.name, "membership": s["membership"],
                        "digest": s["digest"][:16], "events": s["events"],
                        "events_final": s["events_final"], "own_seq": s["own_seq"],
                        "trades_pending": s["trades_pending"], "buffered": s["buffered"],
                        "pending_actions": s["pending_actions"],
                        "waiting_for": [names.get(p, p) for p in s["waiting_for"]]})
        return out

    # -- the verdict

    def judge(self) -> None:
        r, rec = self.result, self.recorder
        converged: list[list[Trade]] = []
        final_statuses = []
        for node in self.live():
            try:
                answer = node.get(f"/trades?limit={TRADES_LIMIT_MAX}", timeout=20)["trades"]
                final_statuses.append(node.get("/status"))
            except (httpx.HTTPError, ValueError) as exc:
                self.failures.append(f"{node.name} did not answer at the end: {exc}")
                answer = []
            if len(answer) >= TRADES_LIMIT_MAX:
                rec.overflow = True
            converged.append([trade_of(t) for t in answer])
        undone = undone_final_trades(rec.finals, converged)
        identical = all(c == converged[0] for c in converged)
        r["trades"] = len(converged[0]) if converged else 0
        r["final_trades_reported"] = len(set().union(*(log.at.values() for log in rec.finals)))
        r["final_trades_undone"] = len(undone)
        if undone:
            r["undone_examples"] = undone[:5]
        r["converged_lists_identical"] = identical
        r["converged"] = self.converged
        r["digests"] = sorted({s["digest"][:16] for s in final_statuses})
        r["final_regressions"] = [log.regressions for log in rec.finals]
        r["final_not_prefix"] = sum(log.not_prefix for log in rec.finals)
        r["recorder_overflow"] = rec.overflow
        r["recorder_poll_errors"] = rec.poll_errors
        r["divergence_lines"] = sum(n.divergence_lines for n in self.nodes)
        r["divergences_status"] = sum(s.get("divergences", 0) for s in final_statuses)
        r["tracebacks"] = sum(len(n.error_lines) for n in self.nodes)
        missing = self.acked_missing()
        r["orders_acked"] = len(self.placer.acked)
        r["orders_refused"] = self.placer.refused
        r["orders_refused_why"] = self.placer.refused_why
        r["orders_unanswered"] = self.placer.failed
        r["acked_orders_missing"] = missing
        self.timings(final_statuses)
        if self.name == "bootstrap_gone":
            self.after_bootstrap_loss(final_statuses)
        elif self.name in ("join", "latejoin", "bootstrap_leaves"):
            r["join"] = self.join_facts
            peer = self.nodes[NODES].peer_id
            trades_of_newcomer = sum(o == peer for o in self._origins_of(NODES))
            r["join"]["newcomer_trades"] = trades_of_newcomer
            if not trades_of_newcomer:
                self.failures.append("the newcomer never traded after it became a member")
        if undone:
            self.failures.append(f"{len(undone)} final trades undone")
        if not identical:
            self.failures.append("the converged trade lists differ")
        if r["divergence_lines"] or r["divergences_status"]:
            self.failures.append("DIVERGENCE reported")
        if missing:
            self.failures.append(f"{missing} acknowledged orders missing from some store")
        if rec.overflow:
            self.failures.append("more trades than the recorder can read in one answer")
        r["ok"] = not self.failures
        r["failures"] = self.failures

    def _origins_of(self, i: int) -> Iterable[str]:
        """The origins named by trades of node i's converged list, one per trade side."""
        try:
            answer = self.nodes[i].get(f"/trades?limit={TRADES_LIMIT_MAX}", timeout=20)
        except (httpx.HTTPError, ValueError):
            return []
        return [o for t in answer["trades"] for o in (t["maker_origin"], t["taker_origin"])]

    def acked_missing(self) -> int:
        """Acknowledged orders whose event is not in every node's event store."""
        wanted = {bytes.fromhex(p.order_id[:64]) for p in self.placer.acked}
        missing: set[bytes] = set()
        for node in self.live():
            path = os.path.join(node.data_dir, "events.sqlite3")
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                have = {row[0] for row in db.execute("SELECT id FROM events")}
            finally:
                db.close()
            missing |= wanted - have
        return len(missing)

    def timings(self, final_statuses: Sequence[dict]) -> None:
        r, rec = self.result, self.recorder
        healthy = [i for i in range(NODES) if i != self.faulty and i not in self.dead]
        warm_flat = max(longest_flat_s([(x.at, x.events_final) for x in rec.samples[i]],
                                       self.t_warm, self.t_fault) for i in healthy)
        fault_end = self.t_heal + self.s.after_s
        stall = max(longest_flat_s([(x.at, x.events_final) for x in rec.samples[i]],
                                   self.t_fault, fault_end) for i in healthy)
        r["finality_flat_before_fault_s"] = warm_flat
        r["finality_stall_s"] = stall
        r["fault_s"] = round(self.t_heal - self.t_fault, 1)
        if self.faulty is not None:
            # Under load `waiting_for` names most members most of the time: the share of
            # the fault during which it named the faulty node, against the warm-up's.
            peer = self.nodes[self.faulty].peer_id
            for key, (t0, t1) in (("before_fault", (self.t_warm, self.t_fault)),
                                  ("during_fault", (self.t_fault, self.t_heal))):
                share = 0.0
                for i in healthy:
                    xs = [x for x in rec.samples[i] if t0 <= x.at <= t1]
                    named = sum(b.at - a.at for a, b in zip(xs, xs[1:], strict=False)
                                if peer in a.waiting_for)
                    share = max(share, named / max(t1 - t0, 1e-9))
                r[f"faulty_node_in_waiting_for_share_{key}"] = round(share, 2)
        self.catch_up_timings(final_statuses)
        reached = []
        for i in range(NODES):
            if i in self.dead:
                continue
            at = [x.at for x in rec.samples[i]
                  if x.at >= self.t_heal and x.trades_final >= self.heal_trades]
            reached.append(at[0] if at else None)
        r["heal_to_final_caught_up_s"] = (None if None in reached
                                          else round(max(reached) - self.t_heal, 2))
        latencies = []
        for p in self.placer.acked:
            at = rec.first_final[p.node].get(p.order_id)
            if at is not None:
                latencies.append(at - p.sent)
        r["place_to_final_p50_ms"] = percentile_ms(latencies, 0.5)
        r["place_to_final_p99_ms"] = percentile_ms(latencies, 0.99)
        r["place_to_final_samples"] = len(latencies)

    def catch_up_timings(self, final_statuses: Sequence[dict]) -> None:
        """Caught up at t: a node holds every event that existed anywhere at t. Its event
        count (/status) must reach the live nodes' own seqs at t summed (each one's last
        poll at or before t; 0 before its first) plus the events no live node signed (the
        converged count minus the live nodes' own seqs at the end: a dead node's, genesis).
        Under continuous trading two digests are seldom equal at one poll; this needs
        none. Figures are from POLL_S polls: about 0.2 s coarse."""
        r, rec = self.result, self.recorder
        live = [i for i in range(len(self.nodes)) if i not in self.dead]
        if not self.converged or len(final_statuses) != len(live):
            return
        offsets = {s["events"] - sum(f["own_seq"] for f in final_statuses)
                   for s in final_statuses}
        r["events_signed_by_no_live_node"] = sorted(offsets)
        offset = min(offsets)

        def held_at(t: float) -> int:
            total = offset
            for i in live:
                seqs = [x.own_seq for x in rec.samples[i] if x.at <= t]
                total += seqs[-1] if seqs else 0
            return total

        def first(i: int, t: float, ok) -> float | None:
            return next((x.at for x in rec.samples[i] if x.at >= t and ok(x)), None)

        def span(at: Sequence[float | None], t: float) -> float | None:
            return None if not at or None in at else round(max(at) - t, 2)

        if self.newcomer_started is None:  # stop, kill, partition, restart
            want = held_at(self.t_heal)
            caught = span([first(i, self.t_heal, lambda x: x.events >= want) for i in live],
                          self.t_heal)
            r["heal_to_caught_up_s"] = caught
            r["heal_to_caught_up_target_s"] = HEAL_TO_CAUGHT_UP_TARGET_S
            r["heal_to_caught_up_met_target"] = (caught is not None
                                                 and caught <= HEAL_TO_CAUGHT_UP_TARGET_S)
            r["heal_to_events_final_s"] = span(
                [first(i, self.t_heal, lambda x: x.events_final >= want) for i in live],
                self.t_heal)
        else:  # join, latejoin, bootstrap_gone: from the newcomer's process start
            t = self.newcomer_spawned
            want = held_at(t)
            caught = span([first(NODES, t, lambda x: x.events >= want)], t)
            r["newcomer_events_to_catch_up"] = want
            r["newcomer_caught_up_s"] = caught
            r["newcomer_caught_up_target_s"] = JOINER_CAUGHT_UP_TARGET_S
            r["newcomer_caught_up_met_target"] = (caught is not None
                                                  and caught <= JOINER_CAUGHT_UP_TARGET_S)
            r["newcomer_member_after_start_s"] = span(
                [first(NODES, t, lambda x: x.membership == "member")], t)
        if self.name == "restart":
            i = self.faulty
            r["restart"]["to_caught_up_s"] = span(
                [first(i, self.t_heal, lambda x: x.events >= want)], self.t_heal)
            r["restart"]["to_member_s"] = span(
                [first(i, self.t_heal, lambda x: x.membership == "member")], self.t_heal)
            # Finality resumes: every other node's count of final events grows again.
            moved = []
            for j in live:
                if j == i:
                    continue
                base = [x.events_final for x in rec.samples[j] if x.at <= self.t_heal]
                floor = base[-1] if base else 0
                moved.append(first(j, self.t_heal, lambda x, f=floor: x.events_final > f))
            r["restart"]["to_finality_moves_s"] = span(moved, self.t_heal)
            r["restart"]["to_events_final_s"] = r["heal_to_events_final_s"]

    def after_bootstrap_loss(self, final_statuses: Sequence[dict]) -> None:
        """What became of finality and of the newcomer's membership with node 0 dead:
        measured, kept apart from the pass criteria (it fails by design today)."""
        rec = self.recorder
        names = {n.peer_id: n.name for n in self.nodes}
        dead = self.nodes[0].peer_id
        named: set[str] = set()
        for i in range(1, NODES):
            for x in rec.samples[i]:
                if self.t_fault <= x.at <= self.t_heal:
                    named.update(x.waiting_for)
        gained = []
        for i in range(1, NODES):
            at_kill = [x.events_final for x in rec.samples[i] if x.at <= self.t_fault]
            if at_kill and rec.samples[i]:
                gained.append(rec.samples[i][-1].events_final - at_kill[-1])
        removed_by = [any(r["member"] == dead for r in s.get("removed", []))
                      for s in final_statuses[1:NODES]]
        self.result["after_bootstrap_loss"] = {
            "newcomer_member": self.join_facts.get("member_after_s") is not None,
            "newcomer": self.join_facts,
            # `waiting_for` at the end, and named by a survivor between the kill and the
            # newcomer's start; whether every survivor removed the dead node.
            "finality_stalled_on": sorted({names.get(p, p) for s in final_statuses
                                           for p in s["waiting_for"]}),
            "waiting_for_before_newcomer": sorted(names.get(p, p) for p in named),
            "dead_node_removed_by_every_survivor": all(removed_by),
            "cut": sorted({r["cut"] for s in final_statuses for r in s.get("removed", [])
                           if r["member"] == dead}),
            "survivors_events_final_gained_after_kill": gained,
            "trades_pending_at_end": max((s["trades_pending"] for s in final_statuses),
                                         default=None),
            "members_known_by_survivors": sorted({len(s["members"])
                                                  for s in final_statuses[:NODES - 1]}),
        }
        loss = self.result["after_bootstrap_loss"]
        if not loss["dead_node_removed_by_every_survivor"] or len(loss["cut"]) != 1:
            self.failures.append("the dead node was not removed alike by every survivor")

    def close(self) -> None:
        stop_all(self.nodes)
        if not self.s.keep:
            self.tmp.cleanup()


def run_scenario(name: str, settings: Settings) -> dict:
    if name in CUTS and (reason := partition_skip_reason()) is not None:
        print(reason, file=sys.stderr, flush=True)
        return {"scenario": name, "skipped": reason, "ok": True}
    scenario = Scenario(name, settings)
    started = time.monotonic()
    try:
        result = scenario.run()
    except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
        result = {**scenario.result, "ok": False, "failures": [*scenario.failures, str(exc)]}
    finally:
        if name in CUTS:
            heal_partition()
        scenario.close()
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", default=[], metavar="SCENARIO",
                   help=f"which to run, among {' '.join(SCENARIOS)} (default all)")
    p.add_argument("--warmup-s", type=float, default=None,
                   help="trading before the fault (default 20; 60 for join)")
    p.add_argument("--fault-s", type=float, default=None,
                   help="how long the fault lasts (default 20; 60 for partition, isolate, loss)")
    p.add_argument("--after-s", type=float, default=15.0,
                   help="trading after the heal before the drain (default 15)")
    p.add_argument("--rate", type=float, default=4.0,
                   help="auto-trade orders per second per node (default 4)")
    p.add_argument("--order-interval", type=float, default=1.0,
                   help="seconds between the harness's orders to each node (default 1)")
    p.add_argument("--events", type=int, default=None,
                   help="restart: events the others sign while the node is down (default "
                   "1000); latejoin: events the network holds before the join (default "
                   "10000)")
    p.add_argument("--no-fill", action="store_true",
                   help="latejoin: reach --events by auto-trading alone (no filler orders)")
    p.add_argument("--join-wait-s", type=float, default=60.0,
                   help="bootstrap_gone: how long the newcomer may take to become a member "
                   "(default 60)")
    p.add_argument("--remove-after", type=float, default=REMOVE_AFTER_S, metavar="SECONDS",
                   help="the nodes' --remove-after (default %(default)s: the node's own)")
    p.add_argument("--keep", metavar="DIR", default=None,
                   help="keep data dirs and node logs in DIR/<scenario>/")
    args = p.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario {unknown[0]!r}: choose among {', '.join(SCENARIOS)}")
    return args


DEFAULTS = {"stop": (20.0, 20.0), "kill": (20.0, RESTART_DELAY_S),
            "join": (60.0, 0.0), "partition": (20.0, 60.0), "isolate": (20.0, 60.0),
            "loss": (20.0, 60.0),
            "restart": (20.0, 0.0),
            "latejoin": (10.0, 0.0), "bootstrap_gone": (20.0, REMOVE_AFTER_S + 20.0),
            "bootstrap_leaves": (20.0, 20.0)}  # (warm-up s, fault s)
DEFAULT_EVENTS = {"restart": 1_000, "latejoin": 10_000}


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ok = True
    try:
        for name in args.scenarios or SCENARIOS:
            warm, fault = DEFAULTS[name]
            settings = Settings(warmup_s=args.warmup_s if args.warmup_s is not None else warm,
                                fault_s=args.fault_s if args.fault_s is not None else fault,
                                after_s=args.after_s, rate=args.rate,
                                order_interval_s=args.order_interval, keep=args.keep,
                                events=(args.events if args.events is not None
                                        else DEFAULT_EVENTS.get(name, 0)),
                                join_wait_s=args.join_wait_s, fill=not args.no_fill,
                                remove_after_s=args.remove_after)
            result = run_scenario(name, settings)
            ok &= bool(result.get("ok"))
            print(json.dumps(result), flush=True)
    except KeyboardInterrupt:
        heal_partition()
        print("interrupted: nodes stopped, partition rules removed", file=sys.stderr)
        return 130
    finally:
        heal_partition()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
