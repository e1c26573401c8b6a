"""The libp2p host: the node's identity key, its transports, and dialing.

TCP, then noise (the only security protocol offered: no TLS, secio or plaintext), then
yamux (the only muxer: mplex was ~15x slower for bulk transfers here, LIBP2P_NOTES).
py-libp2p's yamux by default returns receive-window credit after every read, one
WINDOW_UPDATE frame (encrypted, one socket write) per gossip message read; a node sets
`PY_YAMUX_RELEASE_ON_READ=0` (unless its environment says otherwise) so credit goes back
in batches of half a window, as go-yamux does: 90-101 against 116-117 µs of CPU per
order per node (scripts/bench_cluster.py, 5 nodes, 4,000 orders/s, alternating runs).

The identity is an Ed25519 key kept in the data dir (`identity.key`, mode 0600), so a
restarted node keeps its peer id. A node listening on one specific address also dials
from it (`BoundTCP`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP

from . import records

os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")  # read at each use by py-libp2p

IDENTITY_FILE = "identity.key"
PEER_NAMES_MAX = 4096


def load_or_create_key(data_dir: str) -> KeyPair:
    """The node's Ed25519 identity, created once and kept in the data dir."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    if os.path.exists(path):
        with open(path, "rb") as f:
            private = Ed25519PrivateKey.from_bytes(f.read())
        return KeyPair(private, private.get_public_key())
    key_pair = create_new_key_pair()
    os.makedirs(data_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(key_pair.private_key.to_bytes())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key_pair


class BoundTCP(TCP):
    """TCP whose outgoing connections leave from the node's own listen address.

    py-libp2p dials from whatever address the kernel picks (127.0.0.1 on loopback),
    so nodes on their own addresses (127.0.0.2, .3, …) would all look like 127.0.0.1
    to each other and per-address firewall rules would miss their connections.
    Binding the source address (port 0: any free port) keeps each node's traffic on
    its own address in both directions."""

    def __init__(self, source_ip: str) -> None:
        super().__init__()
        self.source_ip = source_ip

    async def dial(self, maddr: multiaddr.Multiaddr) -> Any:
        return await self.dial_with_source(maddr, (self.source_ip, 0))


def create_host(key_pair: KeyPair, listen: str = "/ip4/127.0.0.1/tcp/0") -> Any:
    """A py-libp2p host for `key_pair`: TCP, noise only, yamux only; dialing from the
    listen address when that is one specific IPv4 address."""
    addr = multiaddr.Multiaddr(listen)
    ip = addr.value_for_protocol("ip4") if "ip4" in [p.name for p in addr.protocols()] else None
    transports = [BoundTCP(ip)] if ip and ip != "0.0.0.0" else None
    # Only noise and only yamux are offered: py-libp2p's defaults would also accept
    # TLS, secio and plaintext (unencrypted) peers, and mplex.
    security = {NOISE_PROTOCOL_ID: NoiseTransport(
        key_pair, noise_privkey=create_new_x25519_key_pair().private_key)}
    muxers = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    records.install()  # signed peer records built and checked once, not per message
    return new_host(key_pair=key_pair, sec_opt=security, muxer_opt=muxers,
                    transports=transports)


def peer_info(addr: str) -> PeerInfo:
    """The peer id and address of a full multiaddr ending in /p2p/<peer id>."""
    return info_from_p2p_addr(multiaddr.Multiaddr(addr))


async def dial(host: Any, info: PeerInfo, timeout_s: float) -> bool:
    """Connect to `info`; True once connected. Dial errors propagate to the caller."""
    with trio.move_on_after(timeout_s):
        await host.connect(info)
    return info.peer_id in host.get_connected_peers()


@functools.lru_cache(maxsize=PEER_NAMES_MAX)
def peer_name(peer_id: bytes) -> str:
    """The base58 text of a peer id's bytes, cached: logs, rejections and the API name
    the same few peers over and over, and base58 costs ~10 µs each time."""
    return str(ID(peer_id))


def short_peer(peer: ID) -> str:
    """A short handle for a peer id in logs: its last 8 characters."""
    return peer_name(peer.to_bytes())[-8:]


async def abort_connections(host: Any, peer: ID) -> int:
    """Close the TCP sockets under every connection to `peer` at once; returns how many.
    A connection to a peer that stopped reading (a partition, a paused process) cannot
    be closed politely: py-libp2p's close writes a frame that blocks behind the stuck
    writes, and the kernel keeps the socket for as long as TCP retransmits. Closing
    the socket ends what blocked on it with an error, py-libp2p tears the connection
    down, and the peer can be dialed afresh. The path to the socket follows py-libp2p
    0.8's objects (swarm connection, yamux, noise session, raw connection, trio
    stream); anything else is left alone."""
    closed = 0
    for conn in list(host.get_network().connections.get(peer, [])):
        stream: Any = conn
        for attr in ("muxed_conn", "secured_conn", "conn", "conn", "stream", "stream"):
            stream = getattr(stream, attr, None)
        if isinstance(stream, trio.SocketStream):
            with trio.move_on_after(1):
                await stream.aclose()
            closed += 1
    return closed
