"""Signed peer records in py-libp2p's pubsub and DHT messages: built and checked once.

py-libp2p 0.8 attaches the sender's signed peer record (an Envelope: its addresses,
signed by its key) to every pubsub RPC and DHT message. Sending rebuilds the record's
bytes each time (listing the host's addresses, re-serializing); receiving parses it,
verifies its Ed25519 signature and stores it in the peerstore, for every message,
though a peer sends the same bytes again and again. Profiled on a node of ten under
load (scripts/bench_cluster.py, py-spy): 5.5% of the node's CPU building records and
6.8% checking them.

`install()` replaces the two functions where py-libp2p's modules look them up:
- sending reuses the host's record bytes for `RECORD_REUSE_S`, then asks py-libp2p
  again (which issues a new record if the host's addresses changed);
- receiving skips the check when a peer sends exactly the bytes that last passed it
  for that peer on that host, for `RECORD_RECHECK_S` (the check is a function of the
  bytes and the peer id, so the answer is the same; the peerstore entry it refreshes
  lives two hours). Anything else goes to py-libp2p's own check.
Memory: one entry per (host, peer) that sent a record, at most `RECORDS_MAX`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

RECORD_REUSE_S = 5.0
RECORD_RECHECK_S = 60.0
RECORDS_MAX = 4096

# Where py-libp2p looks the two functions up (each module imported them by name).
_SENDERS = ("libp2p.pubsub.pubsub", "libp2p.pubsub.gossipsub", "libp2p.pubsub.floodsub",
            "libp2p.kad_dht.kad_dht", "libp2p.kad_dht.peer_routing",
            "libp2p.kad_dht.provider_store", "libp2p.kad_dht.value_store")
_PUBSUB_CHECKERS = ("libp2p.pubsub.pubsub", "libp2p.pubsub.gossipsub",
                    "libp2p.pubsub.floodsub")

_installed = False


def install() -> None:
    """Patch py-libp2p's modules (once per process; idempotent)."""
    global _installed
    if _installed:
        return
    from libp2p.peer import peerstore
    from libp2p.pubsub import utils
    send = _reusing(peerstore.env_to_send_in_RPC)
    check = _rechecking(utils.maybe_consume_signed_record)
    for name in _SENDERS:
        module = importlib.import_module(name)
        if hasattr(module, "env_to_send_in_RPC"):
            module.env_to_send_in_RPC = send
    for name in _PUBSUB_CHECKERS:
        module = importlib.import_module(name)
        if hasattr(module, "maybe_consume_signed_record"):
            module.maybe_consume_signed_record = check
    _installed = True


def _reusing(build: Callable[[Any], tuple[bytes, bool]]) -> Callable[[Any], tuple[bytes, bool]]:
    built: dict[Any, tuple[float, bytes]] = {}  # host's peer id -> (when, record bytes)

    def env_to_send_in_RPC(host: Any) -> tuple[bytes, bool]:  # noqa: N802 (py-libp2p's name)
        me = host.get_id()
        now = time.monotonic()
        cached = built.get(me)
        if cached is not None and now - cached[0] < RECORD_REUSE_S:
            return cached[1], False
        record, fresh = build(host)
        if len(built) >= RECORDS_MAX:
            built.clear()
        built[me] = (now, record)
        return record, fresh

    return env_to_send_in_RPC


def _rechecking(check: Callable[[Any, Any, Any], bool]) -> Callable[[Any, Any, Any], bool]:
    passed: dict[tuple[Any, Any], tuple[float, bytes]] = {}  # (host, peer) -> (when, bytes)

    def maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        key = (host.get_id(), peer_id)
        now = time.monotonic()
        seen = passed.get(key)
        if seen is not None and seen[1] == record and now - seen[0] < RECORD_RECHECK_S:
            return True
        ok = check(msg, host, peer_id)
        if ok:
            if len(passed) >= RECORDS_MAX:
                passed.clear()
            passed[key] = (now, record)
        return ok

    return maybe_consume_signed_record
