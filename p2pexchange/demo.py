"""The demo: a small p2pexchange network of separate node processes on this machine.

Starts one bootstrap node, then the others bootstrapping from its printed multiaddr;
the first two stay quiet, the rest place random orders around a moving mid. Shows
their interleaved logs with node prefixes; after --duration seconds it stops trading,
drains (waits until every node reports the same digest), stops every node, and prints
a summary table and one JSON line. It leaves no process behind, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

import httpx

DRAIN_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
TAIL_LINES = 50  # last output lines a quiet node process keeps for error reports


class NodeProcess:
    def __init__(self, index: int, data_dir: str, args: list[str], echo: bool = True) -> None:
        self.index = index
        self.name = f"node{index}"
        self.echo = echo  # print its output with a [nodeK] prefix; else keep the tail only
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.addr: str | None = None
        self.api_port: int | None = None
        self.ready = threading.Event()
        cmd = [sys.executable, "-u", "-m", "p2pexchange", "--data-dir", data_dir,
               "--api-port", "0", "--status-interval", "10", "--seed", str(index), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     text=True, bufsize=1)
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if " listening on " in line and line.startswith("node "):
                self.addr = line.rsplit(" ", 1)[1]
            elif line.startswith("client API on 127.0.0.1:"):
                self.api_port = int(line.rsplit(":", 1)[1])
                self.ready.set()
            self.tail.append(line)
            if self.echo:
                print(f"[{self.name}] {line}", flush=True)
        self.ready.set()

    def request(self, method: str, path: str, body: dict | None = None,
                timeout: float = 5.0) -> dict:
        """One call to the node's HTTP API; the reply's JSON with "ok" (2xx or not)."""
        assert self.api_port is not None
        reply = httpx.request(method, f"http://127.0.0.1:{self.api_port}{path}", json=body,
                              timeout=timeout)
        return {"ok": reply.is_success, **reply.json()}

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m p2pexchange demo", description=__doc__)
    p.add_argument("--nodes", type=int, default=4, help="number of node processes (2..16)")
    p.add_argument("--duration", type=float, default=30.0,
                   help="seconds of trading before draining (default 30)")
    p.add_argument("--rate", type=float, default=4.0,
                   help="orders per second per trading node (default 4)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="keep the nodes' data dirs in DIR/nodeK (default: a temporary dir, "
                        "removed at the end); `python -m p2pexchange verify --data-dir "
                        "DIR/node0` checks one afterwards")
    args = p.parse_args(argv)
    if not 2 <= args.nodes <= 16:
        p.error("--nodes must be within 2..16")
    if not 1 <= args.duration <= 3600:
        p.error("--duration must be within 1..3600 seconds")
    if not 0 < args.rate <= 100:
        p.error("--rate must be within (0, 100]")
    return args


def _wait_ready(node: NodeProcess) -> None:
    if not node.ready.wait(START_TIMEOUT_S) or node.api_port is None:
        raise RuntimeError(f"{node.name} did not start (exit code {node.proc.poll()})")


def _statuses(nodes: list[NodeProcess]) -> list[dict]:
    out = []
    for node in nodes:
        try:
            out.append(node.request("GET", "/status"))
        except (httpx.HTTPError, ValueError) as exc:
            out.append({"ok": False, "error": str(exc)})
    return out


def _start(args: argparse.Namespace, root: str, nodes: list[NodeProcess]) -> None:
    """Start the bootstrap node, then the others from its multiaddr; wait for all."""
    started = time.monotonic()
    first = NodeProcess(0, os.path.join(root, "node0"), [])
    nodes.append(first)
    _wait_ready(first)
    assert first.addr is not None
    for i in range(1, args.nodes):
        trading = i >= 2 or args.nodes == 2
        extra = ["--bootstrap", first.addr]
        if trading:
            extra += ["--auto-trade", "--rate", str(args.rate)]
        nodes.append(NodeProcess(i, os.path.join(root, f"node{i}"), extra))
    for node in nodes[1:]:
        _wait_ready(node)
    print(f"[demo] {args.nodes} nodes up in {time.monotonic() - started:.1f}s; trading "
          f"for {args.duration:.0f}s", flush=True)


def _drain(nodes: list[NodeProcess]) -> tuple[list[dict], float]:
    """Stop trading, then wait until every node reports the same digest (twice)."""
    print("[demo] stopping trading and draining", flush=True)
    for node in nodes:
        node.request("POST", "/trading", {"on": False})
        node.request("POST", "/flush")
    started = time.monotonic()
    deadline = started + DRAIN_TIMEOUT_S
    while True:
        statuses = _statuses(nodes)
        digests = {s.get("digest") for s in statuses}
        if (len(digests) == 1 and all(s.get("ok") for s in statuses)
                and all(s["buffered"] == 0 for s in statuses)):
            time.sleep(2)  # one more round of heartbeats and syncs, then confirm
            again = _statuses(nodes)
            if {s.get("digest") for s in again} == digests:
                return again, time.monotonic() - started
        if time.monotonic() > deadline:
            return statuses, time.monotonic() - started
        time.sleep(0.5)


def _stop_all(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        node.signal(signal.SIGTERM)
    stop_by = time.monotonic() + STOP_TIMEOUT_S
    for node in nodes:
        try:
            node.proc.wait(max(0.1, stop_by - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.signal(signal.SIGKILL)
            node.proc.wait()
    for node in nodes:
        node.thread.join(2)


def _summary(nodes: list[NodeProcess], statuses: list[dict], drained_s: float) -> bool:
    """Print the table and the JSON line; True when every node holds the same digest."""
    print(f"\n[demo] drained in {drained_s:.1f}s\n")
    print(f"{'node':<7}{'peer id':<54}{'events':>7}{'trades':>7}{'final':>7}{'reports ok':>11}"
          f"{'diverged':>9}  digest")
    for node, s in zip(nodes, statuses, strict=True):
        if not s.get("ok"):
            print(f"{node.name:<7}{'(no answer: ' + s.get('error', '?') + ')':<54}")
            continue
        print(f"{node.name:<7}{s['peer_id']:<54}{s['events']:>7}{s['trades']:>7}"
              f"{s['trades_final']:>7}{s['trade_reports_matched']:>11}{s['divergences']:>9}  "
              f"{s['digest'][:16]}")
    ok = [s for s in statuses if s.get("ok")]
    converged = len(ok) == len(nodes) and len({s["digest"] for s in ok}) == 1
    print(json.dumps({
        "converged": converged, "nodes": len(nodes),
        "events": max((s["events"] for s in ok), default=0),
        "trades": max((s["trades"] for s in ok), default=0),
        "digests": [s.get("digest") for s in statuses]}), flush=True)
    return converged


def run(args: argparse.Namespace) -> int:
    nodes: list[NodeProcess] = []
    tmp = tempfile.TemporaryDirectory(prefix="p2pexchange-demo-")
    root = args.data_dir or tmp.name

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    interrupted = False
    try:
        _start(args, root, nodes)
        time.sleep(args.duration)
        statuses, drained_s = _drain(nodes)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop_all(nodes)
        tmp.cleanup()
    if interrupted:
        print("[demo] interrupted: all nodes stopped", flush=True)
        return 130
    return 0 if _summary(nodes, statuses, drained_s) else 1


def main(argv: list[str]) -> int:
    return run(parse(argv))
