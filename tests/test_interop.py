"""Interop (issue 14): a js-libp2p 2.x peer (tests/interop/peer.mjs) joins a network of
Python nodes and agrees with them on every byte and on the digest.

The JS peer knows the network only from protocols/: it decodes, verifies and
re-encodes (cborg) every event, heartbeat, join request and sync message it receives,
keeps its own replica (replica.mjs) and computes books and digest with its own
reference state machine (reference.mjs). Its steps are JSON lines on stdout.

What is checked, from both sides:
- transport: the JS peer dials the first Python node over TCP + noise + yamux and
  identifies it; the Python node sees yamux on that connection;
- discovery: the JS peer learns the other Python nodes from Kademlia FIND_NODE answers
  (`/ipfs/kad/1.0.0`), not only the bootstrap node, and dials them;
- sync, both directions: the JS peer pulls the history from Python nodes; a late
  Python node, bootstrapped from the JS peer alone, pulls from it (its `Sync.pull` is
  wrapped to record what it delivered from whom);
- admission: the JS peer learns the genesis from a heartbeat, asks a member to admit
  it, and its first event covers the join;
- a place and its cancel signed by the JS peer are applied by every Python node;
- finality (protocols/finality.md): the JS peer decides its own join effective once it
  is final, acknowledges (empty events on the membership market) when the commit rule
  wants it, so finality on the Python nodes never stalls on it: its place and cancel
  and every trade become final everywhere (`waiting_for` empty, no pending trade), and
  its own final frontier is the Python nodes' `final_key`;
- every event the JS peer delivered is verified, and it ends with the same delivered
  set and the same digest as every Python node.

Runs `npm ci` in tests/interop when node_modules is missing or older than
package-lock.json (bounded); skips only when `node` or `npm` is not on PATH.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import random
import shutil
import subprocess
import time

import multiaddr
import pytest
import trio
from harness import market_events, network
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pexchange.core.events import STP, OrderType, Place, Side
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.orders import CANCELLED
from p2pexchange.core.replica import Replica
from p2pexchange.net.host import create_host, dial, peer_info
from p2pexchange.net.sync import Sync
from p2pexchange.node import Node, NodeConfig

pytestmark = pytest.mark.interop

INTEROP_DIR = pathlib.Path(__file__).parent / "interop"
NPM_CI_TIMEOUT_S = 300
STAMP = INTEROP_DIR / "node_modules" / ".p2pexchange-lock.sha256"
PEER_TIMEOUT_S = 60
JS_PRICE_TICKS = 1000  # the JS peer's resting buy, below every ask of the history


def _lock_hash() -> str:
    return hashlib.sha256((INTEROP_DIR / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def js_peer_ready() -> pathlib.Path:
    """node and npm on PATH (else skip), and node_modules installed from the lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("interop test needs Node.js >= 20 and npm on PATH "
                    f"(node: {node or 'missing'}, npm: {npm or 'missing'})")
    if not STAMP.exists() or STAMP.read_text() != _lock_hash():
        started = time.monotonic()
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=INTEROP_DIR,
                                capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S)
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        STAMP.write_text(_lock_hash())
        print(f"npm ci in {time.monotonic() - started:.1f}s")
    return INTEROP_DIR


class JsPeer:
    """The JS peer's process and the JSON lines it printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[dict] = []
        self.stderr = bytearray()
        self.changed = trio.Event()

    async def read_stdout(self) -> None:
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                self.lines.append(json.loads(line))
            self.changed.set()
            self.changed = trio.Event()

    async def read_stderr(self) -> None:
        async for chunk in self.process.stderr:
            self.stderr += chunk

    def last(self, kind: str) -> dict | None:
        return next((line for line in reversed(self.lines) if line["type"] == kind), None)

    async def wait_for(self, kind: str, timeout_s: float) -> dict:
        with trio.move_on_after(timeout_s):
            while (line := self.last(kind)) is None:
                if self.process.returncode is not None:
                    break
                await self.changed.wait()
            if line is not None:
                return line
        raise AssertionError(f"the JS peer printed no {kind!r} line; its output:\n"
                             + "\n".join(json.dumps(line)[:300] for line in self.lines)
                             + "\nstderr:\n" + self.stderr.decode(errors="replace")[-4000:])


async def _history(nodes: list[Node]) -> None:
    """Orders of every type on both markets, some crossing, before the JS peer joins."""
    a, b, c = nodes
    a.submit("BTC-USD", Place(Side.SELL, OrderType.LIMIT, 1010, 5, STP.EXPIRE_TAKER))
    a.submit("BTC-USD", Place(Side.SELL, OrderType.LIMIT, 1020, 4, STP.EXPIRE_TAKER))
    a.submit("ETH-USD", Place(Side.SELL, OrderType.LIMIT, 2000, 10, STP.EXPIRE_TAKER))
    await a.flush()
    await trio.sleep(0.5)
    b.submit("BTC-USD", Place(Side.BUY, OrderType.LIMIT, 1010, 2, STP.EXPIRE_TAKER))
    b.submit("BTC-USD", Place(Side.BUY, OrderType.POST_ONLY, 1015, 1, STP.EXPIRE_TAKER))
    b.submit("ETH-USD", Place(Side.BUY, OrderType.IOC, 2000, 3, STP.EXPIRE_TAKER))
    c.submit("BTC-USD", Place(Side.BUY, OrderType.FOK, 1020, 9, STP.EXPIRE_TAKER))
    c.submit("BTC-USD", Place(Side.BUY, OrderType.MARKET, 0, 1, STP.EXPIRE_TAKER))
    c.submit("ETH-USD", Place(Side.BUY, OrderType.LIMIT, 990, 7, STP.EXPIRE_TAKER))
    await b.flush()
    await c.flush()
    await trio.sleep(0.5)
    a.submit("BTC-USD", Place(Side.BUY, OrderType.LIMIT, 1020, 2, STP.EXPIRE_MAKER))
    await a.flush()


async def test_js_libp2p_peer_joins_trades_and_agrees_on_the_digest(
        js_peer_ready: pathlib.Path, tmp_path: pathlib.Path) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    async with network(tmp_path) as net:
        # checkpoints every 2 events that act: heartbeats carry them (heartbeat.md `k`)
        n0 = await net.start("n0", checkpoint_every=2)
        n1 = await net.start("n1", bootstrap=n0, checkpoint_every=2)
        n2 = await net.start("n2", bootstrap=n0, checkpoint_every=2)
        await net.discovered()
        await _history([n0, n1, n2])
        await net.converged(events=7)
        timings["python network ready"] = time.monotonic() - started

        process = await trio.lowlevel.open_process(
            ["node", "peer.mjs", "--bootstrap", n0.listen_addr, "--market", "BTC-USD",
             "--side", "0", "--price", str(JS_PRICE_TICKS), "--qty", "3",
             "--timeout-ms", str(PEER_TIMEOUT_S * 1000)],
            cwd=js_peer_ready, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        js = JsPeer(process)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(js.read_stdout)
                nursery.start_soon(js.read_stderr)
                await _check(net, js, [n0, n1, n2], tmp_path, timings, started)
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
    print("timings (s since start):", {k: round(v, 1) for k, v in timings.items()})


async def _check(net, js: JsPeer, nodes: list[Node], tmp_path: pathlib.Path,
                 timings: dict[str, float], started: float) -> None:
    n0, n1, n2 = nodes
    listening = await js.wait_for("listening", 20)
    js_id = ID.from_base58(listening["peer"])
    timings["js listening"] = time.monotonic() - started

    # 1. Transport: noise + yamux, seen from both ends.
    connected = await js.wait_for("connected", 15)
    assert connected["peer"] == str(n0.peer_id)
    assert (connected["encryption"], connected["multiplexer"]) == ("/noise", "/yamux/1.0.0")
    identified = await js.wait_for("identified", 15)
    assert "/p2pexchange/sync/1.0.0" in identified["protocols"]
    assert "/meshsub/1.0.0" in identified["protocols"] or any(
        p.startswith("/meshsub/") for p in identified["protocols"])

    # 2. Discovery: the other Python nodes named by DHT answers, then dialed.
    dht = await js.wait_for("dht", 20)
    timings["js dht"] = time.monotonic() - started
    for other in (n1, n2):
        found = dht["found"].get(str(other.peer_id))
        assert found is not None, f"the DHT did not name {other.peer_id}: {dht}"
        noise_yamux = {"encryption": "/noise", "multiplexer": "/yamux/1.0.0"}
        assert found.get("connected") == noise_yamux, found

    # 3. Genesis, history by sync, admission.
    genesis = await js.wait_for("genesis", 15)
    assert genesis["members"] == [str(n0.peer_id)]
    pulled = await js.wait_for("pulled", 15)
    assert pulled["delivered"] > 0, pulled
    admitted = await js.wait_for("admitted", 30)
    timings["js admitted"] = time.monotonic() - started

    # 4. A place and its cancel, applied by every Python node.
    placed = await js.wait_for("placed", 15)
    assert placed["seq"] == 1 and placed["covers_join"], placed
    cancelled = await js.wait_for("cancelled", 15)
    place_id, cancel_id = bytes.fromhex(placed["event"]), bytes.fromhex(cancelled["event"])
    order_id = bytes.fromhex(placed["order"])
    with trio.fail_after(20):
        while not all(n.replica.event(cancel_id) for n in nodes):
            await trio.sleep(0.1)
    timings["python nodes applied the cancel"] = time.monotonic() - started
    for n in nodes:
        assert n.replica.is_member(js_id.to_bytes())
        assert n.replica.outcomes_of(place_id) == ["resting"], n.replica.outcomes_of(place_id)
        assert n.replica.outcomes_of(cancel_id) == ["cancelled"]
        order = n.order(order_id)
        assert order is not None and order.status == CANCELLED and order.origin == js_id.to_bytes()
        assert n.replica.event(bytes.fromhex(admitted["join_event"])) is not None
    js_conns = [c for peer, c in n0.host.get_network().connections.items() if peer == js_id]
    assert js_conns, "the bootstrap node has no connection to the JS peer"

    # 4b. Finality does not stall on the JS peer: it acknowledges, so its place and
    # cancel, and every trade, become final on every Python node.
    await _all_final(nodes, [place_id, cancel_id], 20)
    timings["js events final on every python node"] = time.monotonic() - started

    # 5. The JS peer serves sync. (a) The Python sync client (net/sync.py), on a fresh
    # host and an empty replica, pulls the whole history from the JS peer alone and
    # reaches the Python nodes' digest. (b) A late Python node bootstrapped from the JS
    # peer alone (DHT and gossip through it) pulls from it without error and is admitted.
    # Which peer the late node pulls its history from first is up to its sync loop, so
    # (b) does not require that the events came from the JS peer: (a) shows that.
    pulled_from_js = await _pull_everything_from(js_id, listening["addrs"][0], n0)
    timings["python sync client pulled everything from js"] = time.monotonic() - started
    pulls: list[tuple[str, int | str]] = []
    late = Node(NodeConfig(data_dir=str(tmp_path / "late"),
                           bootstrap=[listening["addrs"][0]], status_interval_s=3600))
    # It replays the history, not a checkpoint the members attest (start.py): the
    # history is what this step has it pull, and what step 6 compares.
    late.start.outcome = "history"
    late.start.decided.set()
    pull = late.sync.pull

    async def recording_pull(peer: ID) -> int:
        try:
            delivered = await pull(peer)
        except BaseException as exc:
            pulls.append((str(peer), repr(exc)))
            raise
        pulls.append((str(peer), delivered))
        return delivered
    late.sync.pull = recording_pull  # type: ignore[method-assign]
    with trio.fail_after(20):
        await net.nursery.start(late.run)
    net.nodes.append(late)
    await net.member(late, 20)
    timings["late python node admitted"] = time.monotonic() - started
    with trio.move_on_after(10):
        while not any(peer == str(js_id) and isinstance(n, int) for peer, n in pulls):
            await trio.sleep(0.1)
    assert any(peer == str(js_id) and isinstance(n, int) for peer, n in pulls), (
        f"the late node's pulls (JS is {js_id}): {pulls}")
    timings["late python node pulled from js"] = time.monotonic() - started

    # 6. Every event verified; the same delivered set and digest everywhere. (The same
    # digest alone does not mean the same set: acknowledgements do not extend it.)
    everyone = [*nodes, late]
    digest = ""
    with trio.move_on_after(30):
        while True:
            status = js.last("status")
            ids = {n.replica.digest_hex for n in everyone}
            sets = {frozenset(n.replica.applied_ids()) for n in everyone}
            if status and len(ids) == 1 and status["digest"] in ids and len(sets) == 1 \
                    and {bytes.fromhex(i) for i in status["ids"]} == next(iter(sets)):
                digest = status["digest"]
                break
            await js.changed.wait()
    status = js.last("status")
    python_ids = set(n0.replica.applied_ids())
    python_view = [(n.replica.digest_hex[:16], len(n.replica.applied_ids())) for n in everyone]
    assert digest, ("no common digest: JS "
                    f"{status and status['digest'][:16]} ({status and status['delivered']} events),"
                    f" Python {python_view};"
                    f" JS lacks {len(python_ids - {bytes.fromhex(i) for i in status['ids']})},"
                    f" JS extra {len({bytes.fromhex(i) for i in status['ids']} - python_ids)}")
    timings["same digest"] = time.monotonic() - started
    assert {bytes.fromhex(i) for i in status["ids"]} == python_ids
    stats = status["stats"]
    assert stats["rejected"] == {} and status["replica_rejected"] == {}, status
    own = len(n0.replica.events_of(js_id.to_bytes()))  # place, cancel, acknowledgements
    assert stats["events_verified"] >= len(python_ids) - own  # all but its own
    assert stats["heartbeats_verified"] > 0
    # ... including heartbeats that attest a checkpoint, each as the sender took it.
    assert stats["heartbeat_checkpoints"], stats
    for peer, (n, digest) in stats["heartbeat_checkpoints"].items():
        sender = next(node for node in everyone if str(node.peer_id) == peer)
        assert sender.replica.checkpoints.get(n, bytes(32)).hex() == digest, (peer, n)
    with trio.move_on_after(5):  # the JS peer prints its state every 0.5 s
        while str(late.peer_id) not in js.last("status")["stats"]["sync_served"]:
            await js.changed.wait()
    stats = js.last("status")["stats"]
    assert stats["sync_served"].get(str(late.peer_id), {}).get("requests", 0) > 0, stats
    assert sum(served["events"] for served in stats["sync_served"].values()) >= pulled_from_js
    assert market_events(n0) == 9
    # The JS reference's own view of the JS orders and of the history's trades.
    assert status["outcomes"] == {placed["event"]: ["resting"], cancelled["event"]: ["cancelled"]}
    assert status["trades"] == len(n0.replica.trades()) > 0
    assert status["books"]["BTC-USD"] == {
        side: [list(level) for level in levels] for side, levels in n0.book("BTC-USD", 100).items()}

    # 7. Finality everywhere, the late node's join included, and the JS peer's own final
    # frontier is the Python nodes' final_key.
    await _all_final(everyone, [place_id, cancel_id], 20)
    frontiers: list = []
    with trio.move_on_after(20):
        while True:
            keys = [_key(n.replica.final_key()) for n in everyone]
            js_final = js.last("status")["finality"]
            frontiers = [js_final["frontier"], *keys]
            if (all(k == keys[0] for k in frontiers) and not js_final["waiting_for"]
                    and all(not n.replica.finality().waiting_for for n in everyone)):
                break
            await js.changed.wait()
    js_final = js.last("status")["finality"]
    assert all(k == frontiers[1] for k in frontiers) and frontiers[1] is not None, (
        frontiers, js_final, [n.replica.finality() for n in everyone])
    assert js_final["final"] == everyone[0].replica.finality().final_events, js_final
    assert js_final["waiting_for"] == [], js_final
    status = js.last("status")
    assert status["acks"]["signed"] > 0, status["acks"]
    assert status["frontier_regressions"] == 0 and status["late_after_final"] == 0, status
    assert status["parked"] == 0 and status["replica_rejected"] == {}, status
    timings["same final frontier"] = time.monotonic() - started


def _key(key) -> list | None:
    """A Python OrderKey as the JS peer prints it: [lamport, rank, origin hex, seq]."""
    return None if key is None else [key[0], key[1], key[2].hex(), key[3]]


async def _all_final(nodes: list[Node], event_ids: list[bytes], timeout_s: float) -> None:
    """Wait until every node holds `event_ids` final, waits for nobody and has no
    pending trade."""
    def done(n: Node) -> bool:
        f = n.replica.finality()
        return (all(n.replica.is_final(e) for e in event_ids) and not f.waiting_for
                and f.pending_trades == 0)
    with trio.move_on_after(timeout_s):
        while not all(done(n) for n in nodes):
            await trio.sleep(0.1)
    stalled = {str(n.peer_id): (n.replica.finality(), [n.replica.is_final(e) for e in event_ids])
               for n in nodes if not done(n)}
    assert not stalled, f"finality stalled: {stalled}"


async def _pull_everything_from(js_id: ID, js_addr: str, reference: Node) -> int:
    """The Python sync client on a throwaway host, with an empty replica that knows the
    genesis, pulls from the JS peer only; it must deliver the reference node's events."""
    key_pair = create_new_key_pair()
    host = create_host(key_pair)
    replica = Replica(DEFAULT_MARKETS, key_pair.public_key and ID.from_pubkey(
        key_pair.public_key).to_bytes(), genesis=reference.replica.members()[:1])
    rejected: list[tuple[str, str]] = []
    sync = Sync(host, replica, lambda items: replica.receive_many([raw for raw, _, _ in items]),
                lambda what, code, peer: rejected.append((what, code)), peers=set,
                rng=random.Random(0))
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with trio.fail_after(15):
            assert await dial(host, peer_info(js_addr), 10)
            want = len(reference.replica.applied_ids())
            delivered = await sync.pull(js_id)
    assert rejected == [] and sync.completed == 1
    assert delivered >= want - 2 and len(replica.applied_ids()) == delivered, (delivered, want)
    assert set(replica.applied_ids()) <= set(reference.replica.applied_ids())
    if delivered == want:
        assert replica.digest == reference.replica.digest
    await host.close()
    return delivered


def test_js_reference_replays_the_conformance_vectors(js_peer_ready: pathlib.Path) -> None:
    """reference.mjs, replica.mjs and codec.mjs, written from protocols/ alone, agree with
    every step of protocols/vectors/conformance (receipts, digests, books, orders)."""
    result = subprocess.run(["node", "conformance.mjs"], cwd=js_peer_ready, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(result.stdout)
    assert summary["files"] >= 20 and summary["mismatches"] == [], summary
