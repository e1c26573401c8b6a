"""Signed peer records in pubsub RPCs are built and checked once per peer (net/records.py),
and a record that fails py-libp2p's check still fails: the cache only skips the check
for the exact bytes that passed it for that peer."""

from __future__ import annotations

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.pubsub.pb import rpc_pb2

from p2pexchange.net import records
from p2pexchange.net.host import create_host

LISTEN = "/ip4/127.0.0.1/tcp/0"


def rpc_from(host) -> rpc_pb2.RPC:
    record, _ = pubsub_module.env_to_send_in_RPC(host)
    return rpc_pb2.RPC(senderRecord=record)


def test_the_patches_are_where_py_libp2p_looks_them_up():
    create_host(create_new_key_pair(), LISTEN)  # installs them
    for module in (pubsub_module, gossipsub_module):
        assert module.maybe_consume_signed_record.__module__ == records.__name__
        assert module.env_to_send_in_RPC.__module__ == records.__name__


def test_a_record_is_checked_once_per_peer_and_a_wrong_one_is_still_refused():
    calls = []

    def check(msg, host, peer_id):
        calls.append(peer_id)
        from libp2p.pubsub.utils import maybe_consume_signed_record
        return maybe_consume_signed_record(msg, host, peer_id)

    cached = records._rechecking(check)
    me = create_host(create_new_key_pair(), LISTEN)
    alice = create_host(create_new_key_pair(), LISTEN)
    mallory = create_host(create_new_key_pair(), LISTEN)
    from_alice = rpc_from(alice)

    assert cached(from_alice, me, alice.get_id()) is True
    assert cached(from_alice, me, alice.get_id()) is True
    assert calls == [alice.get_id()]  # the second time: the same bytes, not checked again

    # Alice's record presented by Mallory: checked, and refused as py-libp2p refuses it.
    assert cached(from_alice, me, mallory.get_id()) is False
    assert cached(from_alice, me, mallory.get_id()) is False
    assert calls[1:] == [mallory.get_id()] * 2  # a refusal is never cached

    # Other bytes from Alice (a corrupted signature) are checked again, and refused.
    bad = bytearray(from_alice.senderRecord)
    bad[-1] ^= 1
    assert cached(rpc_pb2.RPC(senderRecord=bytes(bad)), me, alice.get_id()) is False
    assert calls[-1] == alice.get_id() and len(calls) == 4
    assert cached(rpc_pb2.RPC(), me, alice.get_id()) is True  # no record: nothing to check


def test_a_host_reuses_its_record_bytes():
    built = []

    def build(host):
        built.append(host.get_id())
        return b"record of " + host.get_id().to_bytes(), True

    reusing = records._reusing(build)
    a = create_host(create_new_key_pair(), LISTEN)
    b = create_host(create_new_key_pair(), LISTEN)
    assert reusing(a) == (b"record of " + a.get_id().to_bytes(), True)
    assert reusing(a) == (b"record of " + a.get_id().to_bytes(), False)
    assert reusing(b)[0] == b"record of " + b.get_id().to_bytes()  # one per host
    assert built == [a.get_id(), b.get_id()]
