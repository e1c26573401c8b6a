// The p2pexchange wire formats, written from protocols/ (README.md, event.md,
// heartbeat.md, topics.md, sync.md) with cborg and node:crypto only: no code of the
// Python implementation is read or shared.
//
// Every message is canonical CBOR (length-first map-key order, shortest integers,
// definite lengths, no tags, no floats). A message is decoded strictly, its structure
// checked, and it is re-encoded: only a message whose bytes come back identical is
// accepted (`non_canonical` otherwise). Failures throw `Rejected` with the spec's code.

import { createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto'
import { decode, encode } from 'cborg'

export const VERSION = 2
export const EVENT_BYTES_MAX = 65536
export const EVENT_ACTIONS_MAX = 1000
export const CLOCK_ORIGINS_MAX = 128
export const ORIGIN_BYTES_MAX = 64
export const SEQ_MAX = (1n << 63n) - 1n
export const PRICE_MAX = 2 ** 48 - 1
export const QTY_MAX = 2 ** 48 - 1
export const NESTING_MAX = 4
export const SIGNATURE_DOMAIN = new TextEncoder().encode('p2pexchange/event/v2\0')
export const HEARTBEAT_BYTES_MAX = 32 * 1024
export const JOIN_REQUEST_BYTES_MAX = 256
export const SYNC_REQUEST_BYTES_MAX = 32 * 1024
export const SYNC_EVENTS_MAX = 256
export const SYNC_RESPONSE_BYTES_MAX = SYNC_EVENTS_MAX * EVENT_BYTES_MAX + 1024
export const MEMBERSHIP_MARKET = ''
export const ROUND_MAX = 2 ** 32 - 1 // a vote's round (event.md, "Actions")
export const VOTE_MEMBERS_MIN = 3
export const VOTE_MEMBERS_MAX = 64

export class Rejected extends Error {
  constructor (code, detail = '') {
    super(detail ? `${code}: ${detail}` : code)
    this.code = code
  }
}

// -- canonical CBOR ------------------------------------------------------------------

function compareBytes (a, b) {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i]
  }
  return a.length - b.length
}

// Length-first, then bytewise, over each key's own encoding (protocols/README.md).
function lengthFirst (e1, e2) {
  const k1 = encode(e1[0].value)
  const k2 = encode(e2[0].value)
  return k1.length !== k2.length ? k1.length - k2.length : compareBytes(k1, k2)
}

export function canonical (value) {
  return encode(value, { mapSorter: lengthFirst, float64: false })
}

const STRICT = {
  strict: true, // shortest integer and length encodings only
  allowIndefinite: false,
  allowUndefined: false,
  allowNaN: false,
  allowInfinity: false,
  allowBigInt: true,
  useMaps: true, // clock keys are byte strings
  rejectDuplicateMapKeys: true,
  tags: [] // every tag is refused
}

function depth (value) {
  if (value instanceof Map) {
    let d = 0
    for (const [k, v] of value) d = Math.max(d, depth(k), depth(v))
    return d + 1
  }
  if (Array.isArray(value)) return 1 + value.reduce((d, v) => Math.max(d, depth(v)), 0)
  return 0
}

// Decodes the protocol's CBOR subset; the caller still checks the re-encoding.
export function strictDecode (bytes, sizeMax) {
  if (!(bytes instanceof Uint8Array)) throw new Rejected('bad_type', 'not bytes')
  if (bytes.length > sizeMax) throw new Rejected('oversize', `${bytes.length} bytes`)
  let value
  try {
    value = decode(bytes, STRICT)
  } catch (err) {
    throw new Rejected('bad_cbor', err.message)
  }
  if (depth(value) > NESTING_MAX) throw new Rejected('bad_cbor', 'nested too deep')
  for (const k of (value instanceof Map ? deepKeys(value) : [])) {
    if (typeof k !== 'string' && !(k instanceof Uint8Array)) {
      throw new Rejected('bad_cbor', 'map keys must be text or bytes')
    }
  }
  return value
}

function * deepKeys (value) {
  if (value instanceof Map) {
    for (const [k, v] of value) { yield k; yield * deepKeys(v) }
  } else if (Array.isArray(value)) {
    for (const v of value) yield * deepKeys(v)
  }
}

function requireCanonical (value, bytes) {
  const again = canonical(value)
  if (compareBytes(again, bytes) !== 0) throw new Rejected('non_canonical', 'does not re-encode')
}

function schema (msg, keys) {
  if (!(msg instanceof Map)) throw new Rejected('bad_schema', 'not a map')
  const have = [...msg.keys()]
  if (have.length !== keys.length || !keys.every((k) => msg.has(k))) {
    throw new Rejected('bad_schema', `keys ${have.join(',')}`)
  }
  const v = msg.get('v')
  if (v !== VERSION) throw new Rejected('bad_version', String(v))
}

// A uint in [lo, hi] as a JS number (the protocol's 2^63-1 limits are accepted as
// BigInt and refused here only if they do not fit a safe integer: this peer's limit).
function uint (value, name, lo, hi) {
  if (typeof value === 'bigint') {
    if (value < BigInt(lo) || value > BigInt(hi)) throw new Rejected('out_of_range', name)
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Rejected('out_of_range', `${name} beyond this peer's safe integers`)
    return Number(value)
  }
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new Rejected('bad_type', `${name} must be an integer`)
  if (value < lo || value > hi) throw new Rejected('out_of_range', `${name}=${value}`)
  return value
}

function peerIdBytes (value, name) {
  if (!(value instanceof Uint8Array) || value.length < 1 || value.length > ORIGIN_BYTES_MAX) {
    throw new Rejected('bad_type', `${name} must be peer id bytes`)
  }
  return value
}

export const hex = (b) => Buffer.from(b).toString('hex')
export const sha256 = (b) => new Uint8Array(createHash('sha256').update(b).digest())
export const concat = (...parts) => new Uint8Array(Buffer.concat(parts))

// -- keys ------------------------------------------------------------------------------

// An Ed25519 peer id inlines its key: identity multihash (0x00, length 36) of the
// libp2p PublicKey protobuf {Type: Ed25519 (1), Data: 32 bytes}.
const ED25519_PEER_ID_PREFIX = Uint8Array.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const keyCache = new Map()

export function publicKeyOf (origin) {
  const h = hex(origin)
  let key = keyCache.get(h)
  if (key) return key
  if (origin.length !== 38 || compareBytes(origin.subarray(0, 6), ED25519_PEER_ID_PREFIX) !== 0) {
    throw new Rejected('bad_origin', 'peer id does not inline an Ed25519 key')
  }
  key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, origin.subarray(6)]), format: 'der', type: 'spki' })
  keyCache.set(h, key)
  return key
}

// A fresh identity: the raw 32-byte seed and public key, the peer id bytes, a signer.
export function identityFromSeed (seed) {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' })
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' })
  const publicRaw = new Uint8Array(spki.subarray(spki.length - 32))
  return {
    seed,
    publicRaw,
    peerId: concat(ED25519_PEER_ID_PREFIX, publicRaw),
    sign: (data) => new Uint8Array(sign(null, data, privateKey))
  }
}

// -- events (event.md) -----------------------------------------------------------------

const EVENT_KEYS = ['v', 'o', 's', 'c', 'l', 'm', 'a', 'g']

function decodeAction (wire, index) {
  if (!Array.isArray(wire) || wire.length === 0) throw new Rejected('bad_action', `action ${index}`)
  const kind = wire[0]
  if (kind === 0) {
    if (wire.length !== 6) throw new Rejected('bad_action', `place ${index} needs 6 fields`)
    const side = uint(wire[1], 'side', 0, 1)
    const type = uint(wire[2], 'type', 0, 4)
    const price = type === 4 ? uint(wire[3], 'price', 0, 0) : uint(wire[3], 'price', 1, PRICE_MAX)
    const qty = uint(wire[4], 'qty', 1, QTY_MAX)
    const stp = uint(wire[5], 'stp', 0, 2)
    return { kind: 'place', side, type, price, qty, stp }
  }
  if (kind === 1) {
    if (wire.length !== 2 || !(wire[1] instanceof Uint8Array) || wire[1].length !== 34) {
      throw new Rejected('bad_action', `cancel ${index}: a 34-byte order id`)
    }
    return { kind: 'cancel', orderId: wire[1] }
  }
  if (kind === 2) {
    if (wire.length !== 2 || !(wire[1] instanceof Uint8Array) || wire[1].length < 1 || wire[1].length > ORIGIN_BYTES_MAX) {
      throw new Rejected('bad_action', `join ${index}: member peer id bytes`)
    }
    return { kind: 'join', member: wire[1] }
  }
  if (kind === 3) {
    if (wire.length !== 1) throw new Rejected('bad_action', `leave ${index} needs 1 field`)
    return { kind: 'leave' }
  }
  if (kind === 4) return decodeVote(wire, index)
  throw new Rejected('bad_action', `action ${index} of unknown kind`)
}

// A vote [4, target, round, members]: `target` peer id bytes, or empty for a refusal;
// `round` 0..2^32-1 (bad_type, out_of_range like every integer field); `members` 3..64
// peer ids, strictly ascending. Every other wrong shape is bad_action.
function decodeVote (wire, index) {
  if (wire.length !== 4) throw new Rejected('bad_action', `vote ${index} needs 4 fields`)
  const [, target, round, members] = wire
  if (!(target instanceof Uint8Array) || target.length > ORIGIN_BYTES_MAX) {
    throw new Rejected('bad_action', `vote ${index}: target must be peer id bytes or empty`)
  }
  const r = uint(round, 'round', 0, ROUND_MAX)
  if (!Array.isArray(members) || members.length < VOTE_MEMBERS_MIN || members.length > VOTE_MEMBERS_MAX) {
    throw new Rejected('bad_action', `vote ${index}: members must be ${VOTE_MEMBERS_MIN} to ${VOTE_MEMBERS_MAX} peer ids`)
  }
  for (const m of members) {
    if (!(m instanceof Uint8Array) || m.length < 1 || m.length > ORIGIN_BYTES_MAX) {
      throw new Rejected('bad_action', `vote ${index}: members must be peer id bytes`)
    }
  }
  for (let i = 1; i < members.length; i++) {
    if (compareBytes(members[i - 1], members[i]) >= 0) {
      throw new Rejected('bad_action', `vote ${index}: members must be strictly ascending`)
    }
  }
  return { kind: 'vote', target, round: r, members }
}

function actionToWire (a) {
  if (a.kind === 'place') return [0, a.side, a.type, a.price, a.qty, a.stp]
  if (a.kind === 'cancel') return [1, a.orderId]
  if (a.kind === 'leave') return [3]
  if (a.kind === 'vote') return [4, a.target, a.round, a.members]
  return [2, a.member]
}

// Decode and verify one event: everything that needs no state (event.md).
export function decodeEvent (raw, markets) {
  const msg = strictDecode(raw, EVENT_BYTES_MAX)
  if (!(msg instanceof Map)) throw new Rejected('bad_type', 'event must be a map')
  const keys = [...msg.keys()]
  if (keys.length !== 8 || !EVENT_KEYS.every((k) => msg.has(k))) throw new Rejected('bad_schema', keys.join(','))
  if (msg.get('v') !== VERSION) throw new Rejected('bad_version', String(msg.get('v')))
  const origin = msg.get('o')
  if (!(origin instanceof Uint8Array) || origin.length < 1 || origin.length > ORIGIN_BYTES_MAX) throw new Rejected('bad_origin')
  const seq = uint(msg.get('s'), 'seq', 1, SEQ_MAX)
  const lamport = uint(msg.get('l'), 'lamport', 1, SEQ_MAX)
  const market = msg.get('m')
  if (typeof market !== 'string' || Buffer.byteLength(market) > 32) throw new Rejected('bad_type', 'market')
  if (market !== MEMBERSHIP_MARKET && !markets.includes(market)) throw new Rejected('unknown_market', market)
  const wireClock = msg.get('c')
  if (!(wireClock instanceof Map) || wireClock.size > CLOCK_ORIGINS_MAX) throw new Rejected('bad_clock')
  const clock = new Map() // origin hex -> { origin, seq, id }
  for (const [o, entry] of wireClock) {
    if (!(o instanceof Uint8Array) || o.length < 1 || o.length > ORIGIN_BYTES_MAX) throw new Rejected('bad_clock', 'key')
    if (!Array.isArray(entry) || entry.length !== 2) throw new Rejected('bad_clock', 'entry')
    const s = uint(entry[0], 'clock entry', 1, SEQ_MAX)
    if (!(entry[1] instanceof Uint8Array) || entry[1].length !== 32) throw new Rejected('bad_clock', 'entry id')
    clock.set(hex(o), { origin: o, seq: s, id: entry[1] })
  }
  if ((clock.get(hex(origin))?.seq ?? 0) !== seq - 1) throw new Rejected('bad_clock', 'clock[origin] != seq - 1')
  const wireActions = msg.get('a')
  if (!Array.isArray(wireActions) || wireActions.length > EVENT_ACTIONS_MAX) throw new Rejected('bad_actions')
  const actions = wireActions.map(decodeAction)
  // A membership event carries joins only, one leave or one vote alone, or nothing (an
  // acknowledgement); a market event 1..1000 places and cancels.
  const fits = market === MEMBERSHIP_MARKET
    ? actions.every((a) => a.kind === 'join') || (actions.length === 1 && (actions[0].kind === 'leave' || actions[0].kind === 'vote'))
    : actions.length > 0 && actions.every((a) => a.kind === 'place' || a.kind === 'cancel')
  if (!fits) throw new Rejected('bad_actions', 'actions do not fit the market')
  const signature = msg.get('g')
  if (!(signature instanceof Uint8Array) || signature.length > 128) throw new Rejected('bad_signature')
  requireCanonical(msg, raw)
  const body = new Map([...msg].filter(([k]) => k !== 'g'))
  const key = publicKeyOf(origin)
  if (!verify(null, concat(SIGNATURE_DOMAIN, canonical(body)), key, signature)) {
    throw new Rejected('bad_signature', 'does not verify')
  }
  return makeEvent({ origin, seq, clock, lamport, market, actions, signature, raw })
}

function makeEvent (e) {
  const id = sha256(e.raw)
  const rank = e.market === MEMBERSHIP_MARKET ? 2 : (e.actions.some((a) => a.kind === 'place') ? 1 : 0)
  return { ...e, id, idHex: hex(id), originHex: hex(e.origin), rank }
}

// Build and sign an event; `clock` maps origin hex -> { origin, seq, id }.
export function signEvent (identity, { seq, clock, lamport, market, actions }) {
  const wireClock = new Map([...clock.values()].map((c) => [c.origin, [c.seq, c.id]]))
  const body = new Map([
    ['v', VERSION], ['o', identity.peerId], ['s', seq], ['c', wireClock],
    ['l', lamport], ['m', market], ['a', actions.map(actionToWire)]
  ])
  const signature = identity.sign(concat(SIGNATURE_DOMAIN, canonical(body)))
  body.set('g', signature)
  const raw = canonical(body)
  return makeEvent({ origin: identity.peerId, seq, clock, lamport, market, actions, signature, raw })
}

// The total order (event.md "Ordering"): (lamport, rank, origin bytes, seq).
export function compareEvents (a, b) {
  return (a.lamport - b.lamport) || (a.rank - b.rank) ||
    compareBytes(a.origin, b.origin) || (a.seq - b.seq)
}

export const orderId = (eventId, index) => concat(eventId, Uint8Array.from([index >> 8, index & 0xff]))

// -- heartbeat (heartbeat.md) ------------------------------------------------------------

function clockOfSeqs (value) {
  if (!(value instanceof Map) || value.size > CLOCK_ORIGINS_MAX) throw new Rejected('bad_clock')
  const out = new Map()
  for (const [o, s] of value) {
    peerIdBytes(o, 'clock key')
    out.set(hex(o), { origin: o, seq: uint(s, 'clock entry', 0, SEQ_MAX) })
  }
  return out
}

export function decodeHeartbeat (bytes) {
  const msg = strictDecode(bytes, HEARTBEAT_BYTES_MAX)
  // `k` (the sender's latest checkpoint) and `r` (its trade reports) are optional
  const optional = msg instanceof Map ? ['k', 'r'].filter((key) => msg.has(key)) : []
  schema(msg, ['v', 'c', 'l', 'd', 'n', 'g', ...optional])
  const d = msg.get('d')
  if (!(d instanceof Uint8Array) || d.length !== 32) throw new Rejected('bad_type', 'digest')
  const g = msg.get('g')
  if (!Array.isArray(g) || g.length > CLOCK_ORIGINS_MAX) throw new Rejected('bad_schema', 'g')
  g.forEach((m) => peerIdBytes(m, 'genesis member'))
  for (let i = 1; i < g.length; i++) {
    if (compareBytes(g[i - 1], g[i]) >= 0) throw new Rejected('bad_schema', 'g not sorted and distinct')
  }
  let checkpoint = null
  if (msg.has('k')) {
    const k = msg.get('k')
    if (!Array.isArray(k) || k.length !== 2 || !(k[1] instanceof Uint8Array) || k[1].length !== 32) {
      throw new Rejected('bad_type', 'k must be [n, the 32-byte checkpoint hash]')
    }
    checkpoint = { n: uint(k[0], 'checkpoint n', 1, SEQ_MAX), hash: k[1] }
  }
  const hb = { clock: clockOfSeqs(msg.get('c')), lamport: uint(msg.get('l'), 'l', 0, SEQ_MAX), digest: d, events: uint(msg.get('n'), 'n', 0, SEQ_MAX), genesis: g, checkpoint }
  hb.reports = msg.has('r') ? heartbeatReports(msg.get('r')) : []
  requireCanonical(msg, bytes)
  return hb
}

// A heartbeat's `r`: 1..128 trade reports [event id, trades, hash], no event id twice.
function heartbeatReports (r) {
  if (!Array.isArray(r) || r.length < 1 || r.length > 128) throw new Rejected('bad_schema', 'r')
  const reports = r.map((entry) => {
    if (!Array.isArray(entry) || entry.length !== 3 || !(entry[0] instanceof Uint8Array) || entry[0].length !== 32 ||
        !(entry[2] instanceof Uint8Array) || entry[2].length !== 32) {
      throw new Rejected('bad_type', 'a trade report must be [event id, trades, hash]')
    }
    return { event: entry[0], trades: uint(entry[1], 'trades', 0, SEQ_MAX), hash: entry[2] }
  })
  if (new Set(reports.map((x) => hex(x.event))).size !== reports.length) throw new Rejected('bad_schema', 'r names an event twice')
  return reports
}

export function encodeHeartbeat ({ clock, lamport, digest, events, genesis }) {
  const c = new Map([...clock.values()].map((e) => [e.origin, e.seq]))
  const g = [...genesis].sort(compareBytes)
  return canonical(new Map([['v', VERSION], ['c', c], ['l', lamport], ['d', digest], ['n', events], ['g', g]]))
}

// -- join request (topics.md) ------------------------------------------------------------

export function encodeJoinRequest (sponsor) {
  return canonical(new Map([['v', VERSION], ['s', sponsor]]))
}

export function decodeJoinRequest (bytes) {
  const msg = strictDecode(bytes, JOIN_REQUEST_BYTES_MAX)
  schema(msg, ['v', 's'])
  const sponsor = peerIdBytes(msg.get('s'), 'sponsor')
  requireCanonical(msg, bytes)
  return sponsor
}

// -- trade report (trade_report.md): checked for schema and canonical form only -----------

export function decodeTradeReport (bytes) {
  const msg = strictDecode(bytes, 4096)
  schema(msg, ['v', 'e', 't', 'h'])
  for (const k of ['e', 'h']) {
    if (!(msg.get(k) instanceof Uint8Array) || msg.get(k).length !== 32) throw new Rejected('bad_type', k)
  }
  const report = { event: msg.get('e'), trades: uint(msg.get('t'), 't', 0, SEQ_MAX), hash: msg.get('h') }
  requireCanonical(msg, bytes)
  return report
}

// -- sync (sync.md) ------------------------------------------------------------------------

export function encodeSyncRequest (clock, limit) {
  const c = new Map([...clock.values()].map((e) => [e.origin, e.seq]))
  return canonical(new Map([['v', VERSION], ['c', c], ['m', limit]]))
}

export function decodeSyncRequest (bytes) {
  const msg = strictDecode(bytes, SYNC_REQUEST_BYTES_MAX)
  schema(msg, ['v', 'c', 'm'])
  const clock = clockOfSeqs(msg.get('c'))
  const limit = Math.min(uint(msg.get('m'), 'm', 0, SEQ_MAX), SYNC_EVENTS_MAX)
  requireCanonical(msg, bytes)
  return { clock, limit }
}

export function encodeSyncResponse (events, more) {
  return canonical(new Map([['v', VERSION], ['e', events], ['more', more]]))
}

export function decodeSyncResponse (bytes) {
  const msg = strictDecode(bytes, SYNC_RESPONSE_BYTES_MAX)
  schema(msg, ['v', 'e', 'more'])
  const events = msg.get('e')
  const more = msg.get('more')
  if (!Array.isArray(events) || events.length > SYNC_EVENTS_MAX || typeof more !== 'boolean') throw new Rejected('bad_schema')
  if (!events.every((e) => e instanceof Uint8Array)) throw new Rejected('bad_type', 'events must be bytes')
  requireCanonical(msg, bytes)
  return { events, more }
}
