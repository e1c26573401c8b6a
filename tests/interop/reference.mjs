// Placeholder until protocols/state_machine.md lands: the digest without matching.
import { sha256, concat } from './codec.mjs'
export const GENESIS_DIGEST = sha256(new TextEncoder().encode('p2pexchange/digest/v1'))
export function stateOf (events) {
  let digest = GENESIS_DIGEST
  for (const e of events) digest = sha256(concat(digest, e.id))
  return { digest, outcomes: new Map(), books: {}, trades: [] }
}
