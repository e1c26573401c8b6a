"""Production parameters: the one place the node and the simulation read them from.

Times that the pure core compares (heartbeats, liveness) are integers in milliseconds;
times that only the shell sleeps on are seconds. Units come last in every name. The
simulation (`sim/simulation.py`) reads these too and states each one it overrides.
Timeouts here govern liveness only (how long the node waits, when it retries); no
safety decision may depend on one.
"""

from __future__ import annotations

# -- own actions ---------------------------------------------------------------------
BATCH_INTERVAL_S = 0.15  # own actions are signed and published as one event per tick
BATCH_ACTIONS_MAX = 500  # actions per signed event (the wire allows EVENT_ACTIONS_MAX)
PENDING_ACTIONS_MAX = 10_000  # submitted, not yet signed; beyond this submit refuses
# Backpressure: the API refuses new orders (503 node_busy) while the node lags behind.
INBOX_BUSY_EVENTS = 256  # more events than one batch waiting to be applied
LOOP_LAG_BUSY_MS = 250  # the event loop woke a timer this late last time
PEERS_BEHIND_BUSY_S = 1.5  # a live peer still lacks an event of ours signed this long ago

# -- heartbeats, membership and finality ---------------------------------------------
# Finality (core/finality.py) reads no time at all; these govern liveness only.
HEARTBEAT_INTERVAL_MS = 1_000  # clock and digest announced on the control topic (sync hints)
HEARTBEAT_IDLE_S = 3.0  # ... but only this often while the clock has not changed
JOIN_RETRY_S = 3.0  # a newcomer asks again for admission after this long without a join
CATCH_UP_TIMEOUT_S = 10.0  # a restarted member trades after this even if no sync answered
FOLLOW_EVENTS_AFTER_S = 30.0  # a node with --bootstrap reads event gossip and queries the DHT
# A member votes to remove a member finality has waited for this long with nothing
# delivered from it (core/removal.py; liveness only, no safety decision reads it).
REMOVE_AFTER_S = 120.0  # longer than the 60 s faults of docs/faults.md
#                               after this at the latest, even if no sync has completed
#                               (Admission.synced_once)
TRADE_REPORTS_PENDING_MAX = 10_000  # peers' reports waiting for their event to be final
TRADE_REPORTS_PEER_MAX = 1_000  # of those, from one peer
TRADE_REPORT_WAIT_S = 300.0  # a report whose event is still unknown then is dropped
OWN_TRADE_REPORTS_SCAN = 256  # own recent events checked for a report each heartbeat

# -- what a replica holds on behalf of the network (core/replica.py) ------------------
# Everything here grows with peers' input, not with the delivered history; each is a
# hard bound that a hostile peer can fill but not exceed.
BUFFER_BYTES_MAX = 64 * 1024 * 1024  # events waiting for their causes, accounted bytes
BUFFER_ORIGIN_BYTES_MAX = 8 * 1024 * 1024  # of those, signed by one origin

# -- gossip mesh (net/gossip.py) -----------------------------------------------------------
GOSSIP_DEGREE = 4  # mesh peers a node aims for per topic
GOSSIP_DEGREE_LOW = 3  # below this it grafts more at its next gossipsub heartbeat
GOSSIP_DEGREE_HIGH = 6  # above this it prunes back to GOSSIP_DEGREE (only with 7+ peers)
GOSSIP_WINDOW = 1  # gossipsub heartbeats whose message ids are offered (IHAVE) to peers
#                   outside the mesh (py-libp2p's 3: ten nodes spent their time on them)
GOSSIP_PRUNE_BACKOFF_S = 5  # a pruned peer may graft again this soon (py-libp2p's 60 s
#                             default left a pruned node without a mesh for a minute)

# -- discovery -----------------------------------------------------------------------
DISCOVERY_INTERVAL_S = 1.0
DHT_REFRESH_INTERVAL_S = 5.0  # while the connected peers change; doubling while they don't
DHT_REFRESH_INTERVAL_MAX_S = 60.0
DIAL_TIMEOUT_S = 5.0  # every peer of the routing table is dialed at once, each this long
KEEPALIVE_INTERVAL_S = 5.0  # every connected peer is pinged this often
KEEPALIVE_TIMEOUT_S = 5.0  # a ping not answered within this fails
KEEPALIVE_FAILURES_MAX = 3  # a peer silent for this many timeouts is dropped (a busy
# peer, applying a large sync, can miss a few pings: dropping it would only churn)
PUBLISH_TIMEOUT_S = 5.0  # a gossip publish stuck longer (a peer that stopped reading) ends

# -- sync ----------------------------------------------------------------------------
ANTI_ENTROPY_INTERVAL_S = 3.0  # pull from a random peer this often, gaps or not
ANTI_ENTROPY_IDLE_MAX_S = 24.0  # ... doubling up to this while nothing is delivered
SYNC_TIMEOUT_S = 10.0  # one whole sync exchange, server or client side
SYNC_ROUNDS_MAX = 64  # request/response rounds per exchange
SYNC_CHUNK_EVENTS = 256  # events asked for per round (wire.SYNC_EVENTS_MAX)
SYNC_ROUND_TIMEOUT_S = 3.0  # one answer; a peer that stalls is backed off
SYNC_BACKOFF_MAX_S = 30.0  # longest pause before pulling again from a failing peer
SYNC_GAP_PULL_INTERVAL_S = 1.0  # pull from a random peer this often while gaps are known
SYNC_SERVE_STREAMS_MAX = 2  # concurrent sync streams served to one peer
# A newcomer starts from a checkpoint (net/snapshot.py) that more than half the members
# attest in their heartbeats; it waits this long for such attestations before it
# replays the whole history instead.
SNAPSHOT_WAIT_S = 5.0  # over one idle heartbeat interval (HEARTBEAT_IDLE_S)
SNAPSHOT_TIMEOUT_S = 60.0  # one whole snapshot exchange, server or client side
SNAPSHOT_SERVE_STREAMS_MAX = 4  # snapshot streams served at once, one per peer

# -- memory --------------------------------------------------------------------------
COMPACT_EVERY_EVENTS = 1_000  # stored events between two compactions (core/settled.py)
# ... or stored actions, whichever comes first: a compaction frees the orders that closed
# in what became final, and its work follows how much became final since the last one
# (about 4 us of CPU per action). Under load one ran in the step that stored an event:
# every 10,000 actions it took 30 to 45 ms of CPU, 100 to 130 ms wall-clock on five
# loaded nodes (the slowest steps of all); every 2,500, at most 18 ms of CPU.
COMPACT_EVERY_ACTIONS = 2_500
# ... and each of the node's compaction steps settles this many actions at most (a step of
# the event loop of its own, intake.py; when finality moves on in a leap, several steps).
COMPACT_STEP_ACTIONS = 1_000

# -- checkpoints (core/checkpoint.py) ---------------------------------------------------
# A checkpoint at the 4,096th final event that acts since the previous one, or sooner at
# the first that brings their actions to 65,536: what is final is forgotten checkpoint by
# checkpoint, so under load (10,000 orders a second in events of hundreds of orders) the
# second bound keeps what is held between two of them to seconds of trading, not minutes.
CHECKPOINT_EVERY = 4096
CHECKPOINT_ACTIONS = 65_536
CHECKPOINTS_KEPT = 16  # the latest checkpoints' hashes a replica keeps (the last in full)

# -- status --------------------------------------------------------------------------
STATUS_INTERVAL_S = 30.0

assert BATCH_ACTIONS_MAX <= 1000, "an event carries at most EVENT_ACTIONS_MAX actions"
assert 4 * BUFFER_ORIGIN_BYTES_MAX <= BUFFER_BYTES_MAX, "one origin cannot fill the buffer"
