"""The snapshot protocol `/p2pexchange/snapshot/1.0.0`: start from a checkpoint instead of
the history (docs/snapshot_design.md, step 4; protocols/sync.md, "Snapshot").

A newcomer asks a member for checkpoint n, the one that more than half of the members
attest in their heartbeats (net/control.py `attested_checkpoint`). The member answers
with S_N in parts and the events of the chain segments the newcomer needs
(`Replica.snapshot_segments`, settled ones read from the store), in messages of at most
`SNAPSHOT_RESPONSE_BYTES_MAX` bytes, or with n = 0 if it does not hold n as its latest
checkpoint (or cannot serve one: removal votes in the prefix). The newcomer checks
S_N's hash against the attested one, decodes and checks S_N (core/checkpoint.py) and
every event (signature included, as any event), and the replica checks the segments
against S_N when it installs them (`Replica.install`). Anything wrong is a
`SnapshotFailed` with a code, attributed to the peer that served it; the newcomer then
asks another attester, or replays the history.

Hostile input: at most `SNAPSHOT_SERVE_STREAMS_MAX` streams are served at once; a
malformed request is a counted rejection; an answer beyond `CHECKPOINT_BYTES_MAX` or
`SNAPSHOT_EVENTS_MAX` is refused as it is read; every exchange is bounded by
`SNAPSHOT_TIMEOUT_S`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import MessageTooLarge
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from ..core.checkpoint import CheckpointRejected, Snapshot, decode_checkpoint
from ..core.events import Event, EventRejected, decode_event
from ..core.params import SNAPSHOT_SERVE_STREAMS_MAX, SNAPSHOT_TIMEOUT_S
from ..core.replica import Replica
from . import wire
from .gossip import Reject
from .host import short_peer

log = logging.getLogger("p2pexchange.node")

SNAPSHOT_PROTOCOL = TProtocol("/p2pexchange/snapshot/1.0.0")
DECODE_STEP_EVENTS = 256  # events decoded between two yields to the event loop


class SnapshotFailed(Exception):
    """The exchange gave no checkpoint to start from; `code` names why."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


class Snapshots:
    """Server and client of the snapshot protocol."""

    def __init__(self, host: Any, replica: Replica, reject: Reject,
                 stored: Callable[[list], list[bytes]],
                 markets: Mapping[str, object]) -> None:
        self.host = host
        self.replica = replica
        self._reject = reject
        self._stored = stored
        self._markets = markets
        self._peers: set[ID] = set()  # being served now: one stream each
        self.served = 0  # snapshots served in full
        host.set_stream_handler(SNAPSHOT_PROTOCOL, self.serve)

    # -- server ----------------------------------------------------------------------

    async def serve(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        if peer in self._peers or len(self._peers) >= SNAPSHOT_SERVE_STREAMS_MAX:
            if peer in self._peers:  # its own second stream: its doing
                self._reject("snapshot request", "too_many_streams", peer)
            with trio.move_on_after(1):  # (busy with others: nobody's fault)
                await stream.reset()
            return
        self._peers.add(peer)
        try:
            with trio.fail_after(SNAPSHOT_TIMEOUT_S):
                await self._answer(stream, peer)
        except SnapshotFailed as exc:
            self._reject("snapshot request", exc.code, peer)
        except Exception as exc:  # a peer that vanished or stalled mid-stream
            log.debug("serving a snapshot to %s ended: %r", short_peer(peer), exc)
        finally:
            self._peers.discard(peer)
            with trio.move_on_after(1):
                await stream.close()

    async def _answer(self, stream: Any, peer: ID) -> None:
        try:
            n = wire.decode_snapshot_request(await _read(stream, wire.SNAPSHOT_REQUEST_BYTES_MAX))
        except wire.WireError as exc:
            raise SnapshotFailed(exc.code) from None
        latest = self.replica.checkpoint
        offer = self.replica.snapshot_segments() if latest is not None and latest.n == n \
            else f"our latest checkpoint is {None if latest is None else latest.n}"
        raws: list[bytes] = []
        if type(offer) is not str:
            wanted = self.replica.segment_events(offer[1])
            if len(wanted) > wire.SNAPSHOT_EVENTS_MAX:  # (a member that left long ago)
                offer = f"segments of {len(wanted)} events, over the limit"
            elif len(raws := self._stored(wanted)) != len(wanted):
                offer = "the store lacks an event of the segments"
            elif sum(map(len, raws)) > wire.SNAPSHOT_EVENT_BYTES_MAX:
                offer = "segments over the byte limit"
        if type(offer) is str:
            log.info("no snapshot %d for %s: %s", n, short_peer(peer), offer)
            await stream.write(encode_varint_prefixed(
                wire.encode_snapshot_response(0, b"", [], False)))
            return
        checkpoint = offer[0]
        encoded, part, chunk = checkpoint.encoded, wire.SNAPSHOT_PART_BYTES, wire.SYNC_EVENTS_MAX
        messages = max(-(-len(encoded) // part), -(-len(raws) // chunk), 1)
        for i in range(messages):
            await stream.write(encode_varint_prefixed(wire.encode_snapshot_response(
                n, encoded[i * part:(i + 1) * part], raws[i * chunk:(i + 1) * chunk],
                i + 1 < messages)))
        self.served += 1
        log.info("served snapshot %d to %s: %d bytes and %d events", n, short_peer(peer),
                 len(encoded), len(raws))

    # -- client ----------------------------------------------------------------------

    async def fetch(self, peer: ID, n: int, digest: bytes) -> tuple[Snapshot, list[Event]]:
        """Checkpoint `n` with hash `digest` from `peer`, and its segments' events, all
        checked (the module docstring); raises `SnapshotFailed` otherwise."""
        with trio.fail_after(SNAPSHOT_TIMEOUT_S):
            stream = await self.host.new_stream(peer, [SNAPSHOT_PROTOCOL])
            try:
                await stream.write(encode_varint_prefixed(wire.encode_snapshot_request(n)))
                parts, raws, size, event_bytes, more = [], [], 0, 0, True
                while more:
                    try:
                        got, part, events, more = wire.decode_snapshot_response(
                            await _read(stream, wire.SNAPSHOT_RESPONSE_BYTES_MAX))
                    except wire.WireError as exc:
                        raise SnapshotFailed(exc.code) from None
                    if got != n:
                        raise SnapshotFailed("not_served", f"the peer does not serve {n}")
                    size += len(part)
                    event_bytes += sum(map(len, events))
                    parts.append(part)
                    raws += events
                    if (size > wire.CHECKPOINT_BYTES_MAX or len(raws) > wire.SNAPSHOT_EVENTS_MAX
                            or event_bytes > wire.SNAPSHOT_EVENT_BYTES_MAX):
                        raise SnapshotFailed("oversize")
            finally:
                with trio.move_on_after(1):
                    await stream.close()
        encoded = b"".join(parts)
        if hashlib.sha256(encoded).digest() != digest:
            raise SnapshotFailed("wrong_checkpoint", "S_N does not hash to the attested hash")
        try:
            snapshot = decode_checkpoint(encoded, self._markets)
        except CheckpointRejected as exc:
            raise SnapshotFailed("bad_checkpoint", str(exc)) from None
        if snapshot.n != n:
            raise SnapshotFailed("bad_checkpoint", f"S_N is checkpoint {snapshot.n}")
        decoded = []
        for i, raw in enumerate(raws):
            try:
                decoded.append(decode_event(raw, self._markets))
            except EventRejected as exc:
                raise SnapshotFailed(exc.code, "an event of the segments") from None
            if i % DECODE_STEP_EVENTS == DECODE_STEP_EVENTS - 1:
                await trio.sleep(0)  # (signatures: about 50 µs each)
        return snapshot, decoded


async def _read(stream: Any, size_max: int) -> bytes:
    try:
        return await read_varint_prefixed_bytes_limited(stream, size_max)
    except MessageTooLarge:
        raise SnapshotFailed("oversize") from None
