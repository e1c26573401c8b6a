// A small reference of the replicated state machine, written from
// protocols/state_machine.md alone: books per market, matching (every order type, the
// FOK feasibility rule, self-trade prevention, the per-event fill budget), outcomes,
// trades and the digest fold.
//
// The state is a fold in total order (state_machine.md §8): `stateOf(events)` starts
// from empty books and D_0 and applies the given delivered events, which the caller
// passes sorted by (lamport, rank, origin, seq). Rebuilding from scratch is what §8
// allows instead of rollback; it is simple and the test's histories are short.
// An event marked `void: true` (a removed member's event beyond its cut, event.md
// "Membership"; replica.mjs marks them in `ordered()`) counts as empty: no book
// change, no trades, outcome "void" per action; like an event without actions, it
// leaves the digest as it was.
// Levels are plain arrays (O(levels) per step): clarity over speed.

import { concat, hex, orderId, sha256 } from './codec.mjs'

export const EVENT_FILLS_MAX = 5000
export const FOK_LEVELS_MAX = 64
export const MARKETS = ['BTC-USD', 'ETH-USD']
export const GENESIS_DIGEST = sha256(new TextEncoder().encode('p2pexchange/digest/v2'))

const BUY = 0
const [LIMIT, IOC, FOK, POST_ONLY, MARKET] = [0, 1, 2, 3, 4]
const [EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH] = [0, 1, 2]
const OPEN = new Set(['resting', 'partially_filled'])

class Book {
  constructor (market) {
    this.market = market
    this.orders = new Map() // order id hex -> order (every order ever placed)
    this.bids = [] // levels best first: { price, orders: [oldest first] }
    this.asks = []
  }

  static crosses (taker, level) {
    if (taker.type === MARKET) return true
    return taker.side === BUY ? level.price <= taker.price : level.price >= taker.price
  }

  // §5.1
  place (taker, budget, trades) {
    if (this.orders.has(taker.idHex)) {
      taker.status = 'rejected'
      taker.reason = 'duplicate_order_id'
      return
    }
    this.orders.set(taker.idHex, taker)
    const opposite = taker.side === BUY ? this.asks : this.bids
    if (opposite.length > 0 && Book.crosses(taker, opposite[0])) {
      if (taker.type === POST_ONLY) {
        taker.status = 'rejected'
        taker.reason = 'post_only_would_take'
        return
      }
      if (taker.type === FOK) {
        const refusal = this.fokRefusal(taker, opposite, budget.left)
        if (refusal) {
          taker.status = 'cancelled'
          taker.reason = refusal
          return
        }
      }
      this.take(taker, opposite, budget, trades)
      if (taker.status === 'cancelled') return
    }
    if (taker.qty - taker.filled === 0) {
      taker.status = 'filled'
    } else if (taker.type === LIMIT || taker.type === POST_ONLY) {
      taker.status = taker.filled > 0 ? 'partially_filled' : 'resting'
      this.rest(taker)
    } else {
      taker.status = 'cancelled'
      taker.reason = taker.type === MARKET ? 'market_no_liquidity' : taker.type === FOK ? 'fok_unfillable' : 'ioc_remainder'
    }
  }

  rest (order) {
    const side = order.side === BUY ? this.bids : this.asks
    const better = (p) => (order.side === BUY ? p > order.price : p < order.price)
    let i = 0
    while (i < side.length && better(side[i].price)) i++
    if (i < side.length && side[i].price === order.price) side[i].orders.push(order)
    else side.splice(i, 0, { price: order.price, orders: [order] })
  }

  static leave (side, level, order) {
    level.orders.splice(level.orders.indexOf(order), 1)
    if (level.orders.length === 0) side.splice(side.indexOf(level), 1)
  }

  // §5.2
  take (taker, opposite, budget, trades) {
    while (taker.qty - taker.filled > 0 && opposite.length > 0 && Book.crosses(taker, opposite[0])) {
      const level = opposite[0]
      const maker = level.orders[0]
      if (budget.left === 0) {
        taker.status = 'cancelled'
        taker.reason = 'match_budget'
        return
      }
      if (maker.origin === taker.originHex) {
        if (taker.stp === EXPIRE_TAKER) {
          taker.status = 'cancelled'
          taker.reason = 'stp_expired_taker'
          return
        }
        budget.left--
        Book.leave(opposite, level, maker)
        maker.status = 'cancelled'
        maker.reason = 'stp_expired_maker'
        if (taker.stp === EXPIRE_BOTH) {
          taker.status = 'cancelled'
          taker.reason = 'stp_expired_taker'
          return
        }
        continue
      }
      budget.left--
      const q = Math.min(maker.qty - maker.filled, taker.qty - taker.filled)
      trades.push({ makerOrder: maker.id, takerOrder: taker.id, price: maker.price, qty: q })
      maker.filled += q
      taker.filled += q
      if (maker.qty === maker.filled) {
        maker.status = 'filled'
        Book.leave(opposite, level, maker)
      } else {
        maker.status = 'partially_filled'
      }
    }
  }

  // §5.3, FOK feasibility from level totals
  fokRefusal (taker, opposite, left) {
    let need = taker.qty
    let makers = 0
    for (let k = 0; k < opposite.length; k++) {
      const level = opposite[k]
      if (!Book.crosses(taker, level)) return 'fok_unfillable'
      if (k === FOK_LEVELS_MAX) return 'fok_too_deep'
      let total = 0
      let own = 0
      for (const o of level.orders) {
        total += o.qty - o.filled
        if (o.origin === taker.originHex) own += o.qty - o.filled
      }
      if (own > 0 && taker.stp !== EXPIRE_MAKER) return 'fok_unfillable'
      const available = total - own
      if (available >= need) {
        makers += Math.min(level.orders.length, need + own)
        return makers <= left ? null : 'match_budget'
      }
      need -= available
      makers += level.orders.length
    }
    return 'fok_unfillable'
  }

  // §4, cancel
  cancel (idHex, originHex) {
    const order = this.orders.get(idHex)
    if (!order || !OPEN.has(order.status)) return 'not_open'
    if (order.origin !== originHex) return 'not_owner'
    const side = order.side === BUY ? this.bids : this.asks
    Book.leave(side, side.find((l) => l.price === order.price), order)
    order.status = 'cancelled'
    order.reason = 'cancelled_by_origin'
    return 'cancelled'
  }

  depth () {
    const levels = (side) => side.map((l) => [l.price, l.orders.reduce((n, o) => n + o.qty - o.filled, 0)])
    return { bids: levels(this.bids), asks: levels(this.asks) }
  }
}

function u64 (n) {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}

// The state after applying `events` (sorted in total order) to empty books.
export function stateOf (events, markets = MARKETS) {
  const books = new Map(markets.map((m) => [m, new Book(m)]))
  const outcomes = new Map() // event id hex -> [outcome strings]
  const allTrades = []
  const digests = []
  let digest = GENESIS_DIGEST
  for (const event of events) {
    const out = []
    const trades = []
    if (event.void) {
      for (let i = 0; i < event.actions.length; i++) out.push('void')
    } else if (event.market === '') {
      const seen = new Set()
      for (const a of event.actions) {
        if (a.kind === 'leave') {
          out.push('left')
          continue
        }
        if (a.kind === 'vote') {
          out.push(a.target.length > 0 ? 'voted' : 'refused')
          continue
        }
        out.push(seen.has(hex(a.member)) ? 'duplicate' : 'joined')
        seen.add(hex(a.member))
      }
    } else {
      const book = books.get(event.market)
      const budget = { left: EVENT_FILLS_MAX }
      event.actions.forEach((a, index) => {
        if (a.kind === 'place') {
          const id = orderId(event.id, index)
          const order = {
            id, idHex: hex(id), origin: event.originHex, originHex: event.originHex,
            side: a.side, type: a.type, price: a.price, qty: a.qty, stp: a.stp,
            filled: 0, status: '', reason: ''
          }
          book.place(order, budget, trades)
          out.push(order.status)
        } else {
          out.push(book.cancel(hex(a.orderId), event.originHex))
        }
      })
    }
    if (!event.void && event.actions.length > 0) { // only events that act extend it (§7)
      digest = sha256(concat(digest, event.id, ...trades.flatMap((t) => [t.makerOrder, t.takerOrder, u64(t.price), u64(t.qty)])))
    }
    outcomes.set(event.idHex, out)
    allTrades.push(...trades)
    digests.push(hex(digest))
  }
  const orders = new Map()
  for (const book of books.values()) for (const [k, o] of book.orders) orders.set(k, o)
  return {
    digest,
    digests,
    outcomes,
    trades: allTrades,
    orders,
    books: Object.fromEntries([...books].map(([m, b]) => [m, b.depth()]))
  }
}
