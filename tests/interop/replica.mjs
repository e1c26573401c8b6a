// Delivery of events, written from protocols/event.md ("Ordering", "Checks with
// state", "Membership"): causal delivery with a buffer, the state checks at arrival
// (equivocation) and at delivery (fork, bad_lamport, clock_regression, not_member),
// membership from a genesis plus delivered joins, the node's clock, and the events a
// sync requester lacks. The books and the digest are computed by reference.mjs from
// the delivered set alone, in the total order.

import { compareEvents, hex } from './codec.mjs'

export class Replica {
  constructor () {
    this.genesis = null // Set of peer id hex, once learned
    this.joined = new Map() // member hex -> the join event that first admitted it
    this.chains = new Map() // origin hex -> [event by seq - 1]
    this.buffered = new Map() // `${origin}:${seq}` -> event
    this.delivered = [] // in delivery order
    this.rejected = new Map() // code -> count
    this.equivocations = 0
  }

  adoptGenesis (members) {
    if (this.genesis === null) this.genesis = new Set(members.map(hex))
  }

  isMember (originHex) {
    return this.genesis !== null && (this.genesis.has(originHex) || this.joined.has(originHex))
  }

  members () {
    return this.genesis === null ? [] : [...new Set([...this.genesis, ...this.joined.keys()])].sort()
  }

  deliveredSeq (originHex) {
    return this.chains.get(originHex)?.length ?? 0
  }

  get (originHex, seq) {
    return this.chains.get(originHex)?.[seq - 1]
  }

  // origin hex -> { origin, seq, id } of its latest delivered event
  clock () {
    const clock = new Map()
    for (const [o, chain] of this.chains) {
      const last = chain[chain.length - 1]
      clock.set(o, { origin: last.origin, seq: last.seq, id: last.id })
    }
    return clock
  }

  lamport () {
    return this.delivered.reduce((l, e) => Math.max(l, e.lamport), 0)
  }

  _reject (code) {
    this.rejected.set(code, (this.rejected.get(code) ?? 0) + 1)
    return { status: 'rejected', code }
  }

  // -> { status: delivered | buffered | duplicate | rejected, code? }
  receive (event) {
    const held = this.get(event.originHex, event.seq) ?? this.buffered.get(`${event.originHex}:${event.seq}`)
    if (held) {
      if (held.idHex === event.idHex) return { status: 'duplicate' }
      this.equivocations++
      return this._reject('equivocation')
    }
    if (!this._ready(event)) {
      this.buffered.set(`${event.originHex}:${event.seq}`, event)
      return { status: 'buffered' }
    }
    const code = this._verdict(event)
    if (code) return this._reject(code)
    this._deliver(event)
    this._drainBuffer()
    return { status: 'delivered' }
  }

  _ready (event) {
    for (const [o, entry] of event.clock) {
      if (this.deliveredSeq(o) < entry.seq) return false
    }
    return true
  }

  // The delivery checks, judged from the event's causal past alone.
  _verdict (event) {
    let lamport = 0
    for (const [o, entry] of event.clock) {
      const cause = this.get(o, entry.seq)
      if (cause.idHex !== hex(entry.id)) return 'fork'
      lamport = Math.max(lamport, cause.lamport)
    }
    if (event.lamport !== lamport + 1) return 'bad_lamport'
    if (event.seq > 1) {
      const previous = this.get(event.originHex, event.seq - 1)
      for (const [o, entry] of previous.clock) {
        if ((event.clock.get(o)?.seq ?? 0) < entry.seq) return 'clock_regression'
      }
    }
    if (this.genesis !== null && event.seq === 1 && !this.genesis.has(event.originHex)) {
      // A join of the origin in its causal past: a delivered event with a join of it
      // whose (origin, seq) its clock covers (delivery is causal, so the clock covers
      // the whole causal past).
      const admitted = this.delivered.some((e) => e.market === '' &&
        e.actions.some((a) => hex(a.member) === event.originHex) &&
        (event.clock.get(e.originHex)?.seq ?? 0) >= e.seq)
      if (!admitted) return 'not_member'
    }
    return null
  }

  _deliver (event) {
    if (!this.chains.has(event.originHex)) this.chains.set(event.originHex, [])
    this.chains.get(event.originHex).push(event)
    this.delivered.push(event)
    for (const a of event.actions) {
      if (a.kind === 'join' && !this.joined.has(hex(a.member))) this.joined.set(hex(a.member), event)
    }
  }

  _drainBuffer () {
    let progress = true
    while (progress) {
      progress = false
      for (const [key, event] of this.buffered) {
        if (!this._ready(event)) continue
        this.buffered.delete(key)
        const code = this._verdict(event)
        if (code) this._reject(code)
        else this._deliver(event)
        progress = true
      }
    }
  }

  // What a requester with `theirClock` (origin hex -> { seq }) lacks, causes first.
  eventsFor (theirClock, limit) {
    const lacking = this.delivered.filter((e) => e.seq > (theirClock.get(e.originHex)?.seq ?? 0))
    lacking.sort(compareEvents)
    return lacking.slice(0, limit)
  }

  // Delivered events in the total order.
  ordered () {
    return [...this.delivered].sort(compareEvents)
  }
}
