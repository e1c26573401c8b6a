// Replays protocols/vectors/conformance/*.json through this folder's spec-only code
// (codec.mjs, replica.mjs, reference.mjs) and compares every step: the receipt
// (status and reject code), the final frontier, the digest, the books' levels and the orders named.
// Prints one JSON line { files, steps, mismatches: [...] }; exits 1 on any mismatch.

import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { Rejected, decodeEvent, hex } from './codec.mjs'
import { stateOf } from './reference.mjs'
import { Replica } from './replica.mjs'

const dir = process.argv[2] ?? new URL('../../protocols/vectors/conformance', import.meta.url).pathname
const mismatches = []
let steps = 0
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
for (const file of files) {
  const vector = JSON.parse(readFileSync(join(dir, file)))
  const replica = new Replica()
  if (vector.genesis) replica.adoptGenesis(vector.genesis.map((h) => Uint8Array.from(Buffer.from(h, 'hex'))))
  vector.steps.forEach((step, i) => {
    steps++
    const where = `${file} step ${i}`
    let receipt
    try {
      receipt = replica.receive(decodeEvent(Uint8Array.from(Buffer.from(step.event_hex, 'hex')), vector.markets))
    } catch (err) {
      if (!(err instanceof Rejected)) throw err
      receipt = { status: 'rejected', code: err.code }
    }
    if (receipt.status !== step.status || (receipt.code ?? null) !== step.code) {
      mismatches.push({ where, want: [step.status, step.code], got: [receipt.status, receipt.code ?? null] })
    }
    if ('final_key' in step && JSON.stringify(replica.finalKeyTuple()) !== JSON.stringify(step.final_key)) {
      mismatches.push({ where, final_key: step.final_key, got: replica.finalKeyTuple() })
    }
    const state = stateOf(replica.ordered(), vector.markets)
    if (hex(state.digest) !== step.digest) mismatches.push({ where, digest: true })
    for (const [market, want] of Object.entries(step.books ?? {})) {
      const got = state.books[market]
      if (JSON.stringify([got.bids, got.asks]) !== JSON.stringify([want.bids, want.asks])) {
        mismatches.push({ where, market, want: [want.bids, want.asks], got: [got.bids, got.asks] })
      }
    }
    for (const want of step.orders ?? []) {
      const got = state.orders.get(want.order_id)
      const same = got && got.status === want.status && got.filled === want.filled && got.reason === want.reason
      if (!same) mismatches.push({ where, order: want, got: got && { status: got.status, filled: got.filled, reason: got.reason } })
    }
    for (const want of step.applied ?? []) {
      const got = state.outcomes.get(want.event_id)
      if (JSON.stringify(got) !== JSON.stringify(want.outcomes)) mismatches.push({ where, event: want.event_id, want: want.outcomes, got })
    }
  })
}
console.log(JSON.stringify({ files: files.length, steps, mismatches }))
process.exit(mismatches.length ? 1 : 0)
