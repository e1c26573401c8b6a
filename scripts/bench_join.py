"""Join benchmark: how long a newcomer takes to catch up on a long history.

Builds a history of `--events` signed events in-process (`--members` genesis members
taking turns, `--actions` OrderFlow actions per event, each event's clock covering
everything before it, as on a busy network), stores it in node0's data dir as node0's
own history (node0 holds member 0's key), starts node0 as a process, then starts a
newcomer with `--bootstrap` node0 and polls its /status until it holds every event
with node0's digest. Nothing else runs meanwhile; the other members are offline, so
the newcomer catches up but is not admitted (its join cannot become final): this
measures catching up, the part of joining that grows with the history.

Baseline, same run, same machine: the same events handed in-process to a fresh
replica in batches of 256 (`Replica.receive_many`: decode, verify, deliver, apply),
which is the least a newcomer must do without a snapshot. Prints one JSON line per
history size: newcomer API ready, caught up (from its process start), the baseline,
their ratio, node0's start time (it replays its store), CPU seconds and peak RSS.

    .venv/bin/python scripts/bench_join.py --events 10000
    .venv/bin/python scripts/bench_join.py --events 10000 100000 --actions 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time

import httpx

from p2pexchange.core.events import Event, sign_event
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.demo import NodeProcess
from p2pexchange.net.host import IDENTITY_FILE
from p2pexchange.sim.workload import OrderFlow, peer_id_bytes, seeded_key_pair
from p2pexchange.store import EventStore

START_TIMEOUT_S = 600.0
CATCH_UP_TIMEOUT_S = 900.0
POLL_S = 0.1
# Once the history is final, node0 takes its latest checkpoint within a second or two;
# none by then: the history has none (fewer than 4,096 events that act, 65,536 actions).
NO_CHECKPOINT_WAIT_S = 15.0
BATCH = 256


def build_history(events: int, members: int, actions: int, seed: int) -> tuple[list, Replica]:
    """`events` events of `members` genesis members, each covering all before it."""
    keys = [seeded_key_pair(f"join-bench-{seed}-{i}") for i in range(members)]
    origins = [peer_id_bytes(k) for k in keys]
    replica = Replica(DEFAULT_MARKETS)
    replica.adopt_genesis(origins)
    rng = random.Random(seed)
    flows = [OrderFlow(random.Random(rng.random())) for _ in range(members)]
    markets = sorted(DEFAULT_MARKETS)
    history: list[Event] = []
    heads: dict[bytes, tuple[int, bytes]] = {}  # origin -> (seq, id) of its latest event
    for n in range(events):
        i = n % members
        acts = [flows[i].next_action() for _ in range(actions)]
        event = sign_event(keys[i].private_key, origins[i], heads.get(origins[i], (0,))[0] + 1,
                           heads, n + 1, rng.choice(markets), acts)
        heads[origins[i]] = (event.seq, event.id)
        receipt = replica.admit(event)
        assert receipt.status == "delivered", (receipt.status, receipt.code)
        flows[i].placed([event.order_id(k) for k in range(len(acts))])
        history.append(event)
    return [keys, history], replica


def baseline_s(history: list[Event], genesis: list[bytes]) -> tuple[float, str]:
    replica = Replica(DEFAULT_MARKETS)
    replica.adopt_genesis(genesis)
    started = time.perf_counter()
    for k in range(0, len(history), BATCH):
        receipts = replica.receive_many([e.raw for e in history[k:k + BATCH]])
        assert all(r.status == "delivered" for r in receipts)
    return time.perf_counter() - started, replica.digest_hex


def write_node0(data_dir: str, key, history: list[Event], genesis: list[bytes],
                digest: bytes) -> None:
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, IDENTITY_FILE), "wb") as f:
        f.write(key.private_key.to_bytes())
    store = EventStore(os.path.join(data_dir, "events.sqlite3"))
    store.set_genesis(genesis)
    store.add([(e.origin, e.seq, e.id, e.raw) for e in history], digest)
    store.close()


def status(node: NodeProcess) -> dict | None:
    try:
        return node.request("GET", "/status", timeout=2.0)
    except (httpx.HTTPError, ValueError, AssertionError):
        return None


def proc_figures(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, peak RSS MiB, RSS MiB now) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        kib = {line.split(":")[0]: int(line.split()[1]) for line in f
               if line.startswith(("VmHWM", "VmRSS"))}
    return cpu, kib["VmHWM"] / 1024, kib["VmRSS"] / 1024


def run_once(events: int, args: argparse.Namespace, tmp: str) -> dict:
    t = time.perf_counter()
    (keys, history), replica = build_history(events, args.members, args.actions, args.seed)
    build = time.perf_counter() - t
    genesis = replica.members()
    base, base_digest = baseline_s(history, genesis)
    assert base_digest == replica.digest_hex
    root = os.path.join(tmp, f"h{events}")
    for i in range(args.online):
        write_node0(os.path.join(root, f"node{i}"), keys[i], history, genesis, replica.digest)
    quiet = ["--log-level", "warning", "--listen", "/ip4/127.0.0.1/tcp/0"]
    nodes = []
    try:
        t0 = time.monotonic()
        node0 = NodeProcess(0, os.path.join(root, "node0"), quiet, echo=False)
        nodes.append(node0)
        if not node0.ready.wait(START_TIMEOUT_S) or node0.addr is None:
            raise RuntimeError("node0 did not start:\n" + "\n".join(node0.tail))
        for i in range(1, args.online):  # the other members online, from their stores
            nodes.append(NodeProcess(i, os.path.join(root, f"node{i}"),
                                     [*quiet, "--bootstrap", node0.addr], echo=False))
            if not nodes[-1].ready.wait(START_TIMEOUT_S):
                raise RuntimeError(f"node{i} did not start:\n" + "\n".join(nodes[-1].tail))
        node0_start = time.monotonic() - t0
        s0 = status(node0)
        assert s0 is not None and s0["events"] >= events, s0
        attested_wait = time.monotonic()
        while args.online > 1 and time.monotonic() - attested_wait < START_TIMEOUT_S:
            s0 = status(node0)  # a checkpoint attested by the others (net/control.py)
            if s0 and s0["checkpoint"] and s0["checkpoint"]["attested_by"] >= args.online - 1:
                break
            if s0 and not s0["checkpoint"] and \
                    time.monotonic() - attested_wait > NO_CHECKPOINT_WAIT_S:
                break  # a history short of the first checkpoint: the newcomer replays it
            time.sleep(POLL_S)
        t1 = time.monotonic()
        newcomer = NodeProcess(args.online, os.path.join(root, "newcomer"),
                               [*quiet, "--bootstrap", node0.addr], echo=False)
        nodes.append(newcomer)
        api_ready = caught_up = None
        last: dict | None = None
        while time.monotonic() - t1 < CATCH_UP_TIMEOUT_S:
            if newcomer.proc.poll() is not None:
                raise RuntimeError("newcomer exited:\n" + "\n".join(newcomer.tail))
            if newcomer.ready.is_set() and api_ready is None:
                api_ready = time.monotonic() - t1
            s = status(newcomer) if newcomer.api_port else None
            if s is not None:
                last = s
                # node0 signs a few events of its own meanwhile (it admits the newcomer);
                # one that started from a checkpoint holds fewer events than the history
                if (s["events"] >= events or s["started_from"].startswith("checkpoint")) \
                        and s["digest"] == (status(node0) or {}).get("digest"):
                    caught_up = time.monotonic() - t1
                    break
            time.sleep(POLL_S)
        cpu, rss, rss_now = proc_figures(newcomer.proc.pid)
        cpu0, rss0, rss0_now = proc_figures(node0.proc.pid)
        return {
            "events": events, "members": args.members, "actions_per_event": args.actions,
            "history_build_s": round(build, 2),
            "baseline_receive_many_s": round(base, 2),
            "node0_start_s": round(node0_start, 2),
            "newcomer_api_ready_s": None if api_ready is None else round(api_ready, 2),
            "newcomer_caught_up_s": None if caught_up is None else round(caught_up, 2),
            "caught_up_over_baseline": None if caught_up is None else round(caught_up / base, 2),
            "newcomer_events": None if last is None else last["events"],
            "online_members": args.online,
            "newcomer_started_from": None if last is None else last["started_from"],
            "newcomer_cpu_s": round(cpu, 2), "newcomer_peak_rss_mib": round(rss, 1),
            "newcomer_rss_mib": round(rss_now, 1),
            "node0_cpu_s": round(cpu0, 2), "node0_peak_rss_mib": round(rss0, 1),
            "node0_rss_mib": round(rss0_now, 1),
        }
    finally:
        for node in nodes:
            node.signal(9)
            node.proc.wait()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, nargs="+", default=[10_000],
                   help="history sizes to measure, one run each (default 10000)")
    p.add_argument("--members", type=int, default=5, help="genesis members (default 5)")
    p.add_argument("--actions", type=int, default=1,
                   help="actions per event (default 1, as auto-trading nodes sign them)")
    p.add_argument("--online", type=int, default=1,
                   help="members online, each holding the history (default 1); a newcomer "
                        "starts from a checkpoint that more than half of them attest")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if any(not 1 <= n <= 1_000_000 for n in args.events):
        p.error("--events must be within 1..1000000")
    if not 1 <= args.members <= 64 or not 1 <= args.actions <= 500:
        p.error("--members must be within 1..64, --actions within 1..500")
    if not 1 <= args.online <= args.members:
        p.error("--online must be within 1..--members")
    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt  # so that run_once stops its node processes

    signal.signal(signal.SIGTERM, on_term)
    try:
        with tempfile.TemporaryDirectory(prefix="p2pexchange-join-") as tmp:
            for n in args.events:
                print(json.dumps(run_once(n, args, tmp)), flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
