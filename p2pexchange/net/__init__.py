"""The network shell: trio + py-libp2p, one protocol a module (host, discovery, gossip,
sync, control) and the CBOR of its messages (wire)."""
