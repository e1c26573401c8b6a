// A js-libp2p 2.x peer of a p2pexchange network (issue 14), driven by
// tests/test_interop.py. It knows the network only through protocols/: codec.mjs
// (wire formats), replica.mjs (delivery) and reference.mjs (books and digest).
//
// Scenario: listen on 127.0.0.1; dial the bootstrap node (TCP + noise + yamux,
// identify); ask the Kademlia DHT for the peers closest to its own id and dial those
// it learns of; subscribe to every topic with validators that decode and verify;
// learn the genesis from a heartbeat; pull history with /p2pexchange/sync/1.0.0 and
// serve it; ask a member to admit it (join request) until a join of it is delivered,
// then wait until its replica decides that join effective (finality.md: once the join
// is final); publish a place and then its cancel; acknowledge (an empty event on the
// membership market) at every tick when the commit rule wants it; admit newcomers that
// ask it; then keep heartbeating, syncing and reporting its state. Every step is a JSON line on stdout; errors go to stderr.
//
// Usage: node peer.mjs --bootstrap <multiaddr> [--market BTC-USD] [--side 0]
//        [--price 1000] [--qty 3] [--timeout-ms 60000]
// Node 20 has no Promise.withResolvers (js-libp2p's dependencies use it): provided below.

import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'

import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { privateKeyFromRaw } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { peerIdFromString } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from 'it-length-prefixed-stream'
import { createLibp2p } from 'libp2p'

import {
  Rejected, SYNC_EVENTS_MAX, SYNC_REQUEST_BYTES_MAX, SYNC_RESPONSE_BYTES_MAX, concat, decodeEvent,
  decodeHeartbeat, decodeJoinRequest, decodeSyncRequest, decodeSyncResponse, decodeTradeReport,
  encodeHeartbeat, encodeJoinRequest, encodeSyncRequest, encodeSyncResponse, hex, identityFromSeed,
  orderId, signEvent
} from './codec.mjs'
import { stateOf } from './reference.mjs'
import { Replica } from './replica.mjs'

if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const MARKETS = ['BTC-USD', 'ETH-USD']
const TOPIC_PREFIX = 'p2pexchange/v2'
const CONTROL_TOPIC = `${TOPIC_PREFIX}/control`
const JOIN_TOPIC = `${TOPIC_PREFIX}/join`
const TRADES_TOPIC = `${TOPIC_PREFIX}/trades`
const MEMBERSHIP_TOPIC = `${TOPIC_PREFIX}/membership`
const marketTopic = (m) => (m === '' ? MEMBERSHIP_TOPIC : `${TOPIC_PREFIX}/market/${m}`)
const SYNC_PROTOCOL = '/p2pexchange/sync/1.0.0'
const KAD_PROTOCOL = '/ipfs/kad/1.0.0'
const SYNC_ROUNDS_MAX = 64
const SYNC_TIMEOUT_MS = 10_000
const JOIN_RETRY_MS = 3_000
const HEARTBEAT_INTERVAL_MS = 1_000
const ANTI_ENTROPY_INTERVAL_MS = 2_000
const STATUS_INTERVAL_MS = 500
const ACK_TICK_MS = 150 // BATCH_INTERVAL_S: acknowledge (and admit) at most once a tick

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string' },
    market: { type: 'string', default: 'BTC-USD' },
    side: { type: 'string', default: '0' },
    price: { type: 'string', default: '1000' },
    qty: { type: 'string', default: '3' },
    'timeout-ms': { type: 'string', default: '60000' }
  }
})
if (!args.bootstrap) throw new Error('--bootstrap <multiaddr> is required')
const deadline = Date.now() + Number(args['timeout-ms'])

const say = (type, fields = {}) => process.stdout.write(JSON.stringify({ type, t_ms: Math.round(performance.now()), ...fields }) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
async function until (what, check, intervalMs = 100) {
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(intervalMs)
  }
}

// -- identity ------------------------------------------------------------------------

const identity = identityFromSeed(randomBytes(32))
const privateKey = privateKeyFromRaw(concat(identity.seed, identity.publicRaw))
const myHex = hex(identity.peerId)
const BASE58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
function peerName (bytes) { // a peer id's text form: base58btc of its bytes
  let n = BigInt('0x' + (hex(bytes) || '0'))
  let out = ''
  while (n > 0n) { out = BASE58[Number(n % 58n)] + out; n /= 58n }
  for (const b of bytes) { if (b !== 0) break; out = '1' + out }
  return out
}

// -- state -----------------------------------------------------------------------------

const replica = new Replica()
const waitingForGenesis = [] // events that arrived before the genesis was known
const due = new Map() // newcomer hex -> its peer id bytes, to admit in our next event
const admittedAt = new Map() // newcomer hex -> when we signed its join
const acks = { signed: 0, joins: 0 }
const stats = {
  events_verified: 0, // decoded, signature verified, id computed, re-encoded byte for byte
  events_by_source: { gossip: 0, sync: 0 },
  rejected: {}, // what:code -> count (messages refused by our validators)
  heartbeats_verified: 0,
  heartbeat_checkpoints: {}, // peer -> the latest checkpoint [n, hash hex] its heartbeats attest
  join_requests_verified: 0,
  trade_reports_verified: 0,
  sync_pulls: [], // { peer, rounds, events, delivered }
  sync_served: {}, // peer -> { requests, events }
  heartbeat_digests: {} // peer -> latest digest hex heard
}
const note = (what, code) => { stats.rejected[`${what}:${code}`] = (stats.rejected[`${what}:${code}`] ?? 0) + 1 }

function take (raw, source) {
  let event
  try {
    event = decodeEvent(raw, MARKETS)
  } catch (err) {
    note(`event from ${source}`, err instanceof Rejected ? err.code : 'malformed')
    return null
  }
  stats.events_verified++
  stats.events_by_source[source]++
  if (replica.genesis === null) {
    waitingForGenesis.push(event)
    return { status: 'waiting_for_genesis' }
  }
  const receipt = replica.receive(event)
  if (receipt.status === 'rejected') note(`event from ${source}`, receipt.code)
  return receipt
}

// -- the libp2p node -------------------------------------------------------------------

const node = await createLibp2p({
  privateKey,
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionGater: { denyDialMultiaddr: () => false }, // loopback peers are allowed
  services: {
    identify: identify(),
    ping: ping(), // kad-dht needs it to check routing-table peers
    dht: kadDHT({ protocol: KAD_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper }),
    pubsub: gossipsub({
      allowPublishToZeroTopicPeers: true,
      emitSelf: false,
      globalSignaturePolicy: 'StrictSign',
      heartbeatInterval: 1000,
      D: 8,
      Dlo: 4,
      Dhi: 64,
      fallbackToFloodsub: false
    })
  }
})
const pubsub = node.services.pubsub
const dht = node.services.dht
say('listening', { peer: node.peerId.toString(), peer_hex: myHex, addrs: node.getMultiaddrs().map(String) })

// -- gossip ------------------------------------------------------------------------------

function validator (what, check) {
  return (_peer, msg) => {
    try {
      check(msg)
      return 'accept'
    } catch (err) {
      note(what, err instanceof Rejected ? err.code : 'malformed')
      return 'reject'
    }
  }
}

function eventCheck (market) {
  return (msg) => {
    if (msg.type !== 'signed') throw new Rejected('unsigned')
    const event = decodeEvent(msg.data, MARKETS)
    if (event.market !== market) throw new Rejected('wrong_topic')
    if (hex(msg.from.toMultihash().bytes) !== event.originHex) throw new Rejected('not_origin')
  }
}

for (const market of [...MARKETS, '']) {
  pubsub.topicValidators.set(marketTopic(market), validator('event', eventCheck(market)))
}
pubsub.topicValidators.set(CONTROL_TOPIC, validator('heartbeat', (msg) => decodeHeartbeat(msg.data)))
pubsub.topicValidators.set(JOIN_TOPIC, validator('join request', (msg) => decodeJoinRequest(msg.data)))
pubsub.topicValidators.set(TRADES_TOPIC, validator('trade report', (msg) => decodeTradeReport(msg.data)))

pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  try {
    if (msg.topic === CONTROL_TOPIC) {
      const hb = decodeHeartbeat(msg.data)
      stats.heartbeats_verified++
      stats.trade_reports_verified += hb.reports.length
      stats.heartbeat_digests[msg.from.toString()] = hex(hb.digest)
      if (hb.checkpoint !== null) stats.heartbeat_checkpoints[msg.from.toString()] = [hb.checkpoint.n, hex(hb.checkpoint.hash)]
      if (replica.genesis === null && hb.genesis.length > 0) {
        replica.adoptGenesis(hb.genesis)
        say('genesis', { from: msg.from.toString(), members: hb.genesis.map(peerName) })
        for (const event of waitingForGenesis.splice(0)) replica.receive(event)
      }
    } else if (msg.topic === JOIN_TOPIC) {
      const sponsor = decodeJoinRequest(msg.data)
      stats.join_requests_verified++
      onJoinRequest(hex(msg.from.toMultihash().bytes), sponsor)
    } else if (msg.topic === TRADES_TOPIC) {
      decodeTradeReport(msg.data)
      stats.trade_reports_verified++
    } else {
      take(msg.data, 'gossip')
    }
  } catch (err) {
    note(`message on ${msg.topic}`, err instanceof Rejected ? err.code : 'malformed')
  }
})
for (const topic of [...MARKETS.map(marketTopic), MEMBERSHIP_TOPIC, CONTROL_TOPIC, JOIN_TOPIC, TRADES_TOPIC]) {
  pubsub.subscribe(topic)
}

// -- sync: server and client ----------------------------------------------------------------

await node.handle(SYNC_PROTOCOL, async ({ stream, connection }) => {
  const peer = connection.remotePeer.toString()
  const served = (stats.sync_served[peer] ??= { requests: 0, events: 0 })
  const lp = lpStream(stream, { maxDataLength: SYNC_REQUEST_BYTES_MAX })
  try {
    for (let round = 0; round < SYNC_ROUNDS_MAX; round++) {
      let request
      try {
        request = (await lp.read()).subarray()
      } catch {
        break // the requester is done
      }
      const { clock, limit } = decodeSyncRequest(request)
      const events = replica.eventsFor(clock, limit + 1)
      const more = events.length > limit
      const answer = events.slice(0, limit)
      await lp.write(encodeSyncResponse(answer.map((e) => e.raw), more))
      served.requests++
      served.events += answer.length
    }
    await stream.close()
  } catch (err) {
    note('sync request', err instanceof Rejected ? err.code : 'failed')
    stream.abort(err)
  }
}, { runOnLimitedConnection: false })

async function pull (peerId) {
  const peer = peerId.toString()
  const record = { peer, rounds: 0, events: 0, delivered: 0 }
  const stream = await node.dialProtocol(peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(SYNC_TIMEOUT_MS) })
  const lp = lpStream(stream, { maxDataLength: SYNC_RESPONSE_BYTES_MAX })
  try {
    for (let round = 0; round < SYNC_ROUNDS_MAX; round++) {
      await lp.write(encodeSyncRequest(replica.clock(), 128))
      const { events, more } = decodeSyncResponse((await lp.read({ signal: AbortSignal.timeout(SYNC_TIMEOUT_MS) })).subarray())
      record.rounds++
      record.events += events.length
      for (const raw of events) {
        if (take(raw, 'sync')?.status === 'delivered') record.delivered++
      }
      if (!more || events.length === 0) break
    }
  } finally {
    await stream.close().catch(() => {})
  }
  stats.sync_pulls.push(record)
  return record
}

// `promise`, or a rejection after `ms` (a pull stuck on one peer must not stall the rest).
function bounded (promise, ms) {
  promise.catch(() => {}) // a late failure after the race is lost is not unhandled
  return Promise.race([promise, sleep(ms).then(() => { throw new Error(`no answer in ${ms} ms`) })])
}

const connectedPeers = () => node.getConnections().map((c) => c.remotePeer).filter((p, i, all) => all.findIndex((q) => q.equals(p)) === i)

// -- bootstrap and discovery ------------------------------------------------------------

const bootstrapAddr = multiaddr(args.bootstrap)
const bootstrapId = peerIdFromString(bootstrapAddr.getPeerId())
const dialStarted = performance.now()
const connection = await node.dial(bootstrapAddr)
say('connected', {
  peer: connection.remotePeer.toString(),
  encryption: connection.encryption,
  multiplexer: connection.multiplexer,
  remote_addr: connection.remoteAddr.toString(),
  dial_ms: Math.round(performance.now() - dialStarted)
})
await until('identify of the bootstrap peer', async () => {
  const protocols = (await node.peerStore.get(bootstrapId)).protocols
  return protocols.includes(KAD_PROTOCOL)
})
say('identified', { peer: bootstrapId.toString(), protocols: (await node.peerStore.get(bootstrapId)).protocols })

// Who the DHT tells us about: the closer peers named in each FIND_NODE answer.
const dhtFound = new Map() // peer id -> { from, addrs }
async function queryDht () {
  for await (const ev of dht.getClosestPeers(node.peerId.toMultihash().bytes, { signal: AbortSignal.timeout(10_000) })) {
    if (ev.name === 'PEER_RESPONSE') {
      for (const p of ev.closer) {
        if (p.id.equals(node.peerId) || p.id.equals(ev.from)) continue
        if (!dhtFound.has(p.id.toString())) {
          dhtFound.set(p.id.toString(), { from: ev.from.toString(), addrs: p.multiaddrs.map(String) })
        }
      }
    }
  }
}
await until('the DHT to name other peers', async () => {
  try {
    await queryDht()
  } catch (err) {
    console.error('DHT query failed:', err.message)
  }
  return dhtFound.size > 0
}, 500)
for (const [peer, found] of dhtFound) {
  try {
    const c = await node.dial(peerIdFromString(peer))
    found.connected = { encryption: c.encryption, multiplexer: c.multiplexer }
  } catch (err) {
    found.error = err.message
  }
}
say('dht', { found: Object.fromEntries(dhtFound), routing_table: (await dht.routingTable.kb?.toArray?.() ?? []).length })

// -- genesis, history, admission ------------------------------------------------------------

await until('a heartbeat naming the genesis', () => replica.genesis !== null)
for (const peer of connectedPeers()) {
  try {
    say('pulled', await pull(peer))
  } catch (err) {
    console.error(`sync from ${peer} failed:`, err.message)
  }
}

let asked = 0
while (!replica.isMember(myHex)) {
  if (Date.now() > deadline) throw new Error('timed out waiting to be admitted')
  if (replica.joined.has(myHex)) { // a candidate: wait until its join is decided
    // Anti-entropy meanwhile: an acknowledgement missed on gossip would keep our join
    // from ever being final here.
    if (asked++ % 5 === 0) {
      say('candidate', { delivered: replica.delivered.length, buffered: replica.buffered.size, parked: replica.parked.size, finality: replica.finality() })
      for (const peer of connectedPeers()) await bounded(pull(peer), SYNC_TIMEOUT_MS / 2).catch(() => {})
    }
    await sleep(200)
    continue
  }
  const members = connectedPeers().filter((p) => replica.isMember(hex(p.toMultihash().bytes))).sort((a, b) => (a.toString() < b.toString() ? -1 : 1))
  if (members.length > 0) {
    const sponsor = members[asked++ % members.length]
    await pubsub.publish(JOIN_TOPIC, encodeJoinRequest(sponsor.toMultihash().bytes))
    say('join_request', { sponsor: sponsor.toString() })
  }
  const retryAt = Date.now() + JOIN_RETRY_MS
  while (!replica.joined.has(myHex) && Date.now() < retryAt) {
    await sleep(200)
    if (Date.now() + 200 >= retryAt) {
      for (const peer of connectedPeers()) await bounded(pull(peer), SYNC_TIMEOUT_MS / 2).catch(() => {})
    }
  }
}
const joinEvent = replica.joined.get(myHex)
say('admitted', { join_event: joinEvent.idHex, by: peerName(joinEvent.origin), join_final: replica.isFinal(joinEvent) })

// -- own events -------------------------------------------------------------------------------

let seq = 0
async function publishOwn (market, actions) {
  const clock = replica.clock()
  let lamport = 0
  for (const entry of clock.values()) lamport = Math.max(lamport, replica.get(hex(entry.origin), entry.seq).lamport)
  const event = signEvent(identity, { seq: ++seq, clock, lamport: lamport + 1, market, actions })
  const receipt = replica.receive(event)
  if (receipt.status !== 'delivered') throw new Error(`own event not delivered: ${JSON.stringify(receipt)}`)
  await pubsub.publish(marketTopic(market), event.raw)
  return event
}

// Acknowledgements (finality.md): at every tick, joins to sign for newcomers that asked
// us, else an empty event on the membership market when the commit rule wants one.
function onJoinRequest (newcomerHex, sponsor) {
  if (hex(sponsor) !== myHex || !replica.isMember(myHex)) return
  if (replica.waitedFor().includes(newcomerHex) || replica.refused.has(newcomerHex)) return
  if (replica.waitedFor().length + due.size >= 64) return
  if (Date.now() - (admittedAt.get(newcomerHex) ?? -Infinity) < JOIN_RETRY_MS) return
  due.set(newcomerHex, Uint8Array.from(Buffer.from(newcomerHex, 'hex')))
}
let ticking = false
setInterval(async () => {
  if (ticking || seq === 0) return // our first event is the place (it covers our join)
  ticking = true
  try {
    const joins = [...due].filter(([h]) => !replica.waitedFor().includes(h))
    due.clear()
    if (joins.length > 0) {
      for (const [h] of joins) admittedAt.set(h, Date.now())
      await publishOwn('', joins.map(([, member]) => ({ kind: 'join', member })))
      acks.joins += joins.length
      say('admitting', { newcomers: joins.map(([, m]) => peerName(m)) })
    } else if (replica.wantsAck(myHex)) {
      await publishOwn('', [])
      acks.signed++
    }
  } catch (err) {
    console.error('ack tick:', err.message)
  } finally {
    ticking = false
  }
}, ACK_TICK_MS)

const place = await publishOwn(args.market, [{ kind: 'place', side: Number(args.side), type: 0, price: Number(args.price), qty: Number(args.qty), stp: 0 }])
const placedOrder = orderId(place.id, 0)
say('placed', { event: place.idHex, order: hex(placedOrder), seq: place.seq, lamport: place.lamport, covers_join: (place.clock.get(joinEvent.originHex)?.seq ?? 0) >= joinEvent.seq })
await sleep(1500)
const cancel = await publishOwn(args.market, [{ kind: 'cancel', orderId: placedOrder }])
say('cancelled', { event: cancel.idHex, seq: cancel.seq, lamport: cancel.lamport })

// -- steady state: heartbeats, anti-entropy, status -----------------------------------------

function state () {
  return stateOf(replica.ordered())
}

setInterval(async () => {
  const s = state()
  const hb = encodeHeartbeat({ clock: replica.clock(), lamport: replica.lamport(), digest: s.digest, events: replica.delivered.length, genesis: [...replica.genesis].map((h) => Uint8Array.from(Buffer.from(h, 'hex'))) })
  await pubsub.publish(CONTROL_TOPIC, hb).catch((err) => console.error('heartbeat:', err.message))
}, HEARTBEAT_INTERVAL_MS)

setInterval(async () => {
  for (const peer of connectedPeers()) await pull(peer).catch((err) => console.error('anti-entropy:', err.message))
}, ANTI_ENTROPY_INTERVAL_MS)

setInterval(() => {
  const s = state()
  say('status', {
    digest: hex(s.digest),
    delivered: replica.delivered.length,
    buffered: replica.buffered.size,
    ids: replica.delivered.map((e) => e.idHex),
    members: replica.members().map((h) => peerName(Uint8Array.from(Buffer.from(h, 'hex')))),
    finality: { ...replica.finality(), waiting_for: replica.finality().waiting_for.map((h) => peerName(Uint8Array.from(Buffer.from(h, 'hex')))) },
    acks,
    parked: replica.parked.size,
    frontier_regressions: replica.frontierRegressions,
    late_after_final: replica.lateAfterFinal,
    outcomes: { [place.idHex]: s.outcomes.get(place.idHex), [cancel.idHex]: s.outcomes.get(cancel.idHex) },
    books: s.books,
    trades: s.trades.length,
    connections: node.getConnections().map((c) => ({ peer: c.remotePeer.toString(), encryption: c.encryption, multiplexer: c.multiplexer, direction: c.direction })),
    replica_rejected: Object.fromEntries(replica.rejected),
    stats
  })
}, STATUS_INTERVAL_MS)

const stop = async () => {
  await node.stop().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.resume()
setTimeout(() => { console.error('peer.mjs: overall timeout'); process.exit(3) }, Math.max(0, deadline - Date.now())).unref()
