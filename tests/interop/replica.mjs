// Delivery of events, written from protocols/event.md ("Ordering", "Checks with
// state", "Membership") and protocols/finality.md: causal delivery with a buffer, the
// state checks at arrival (equivocation) and at delivery (fork, bad_lamport,
// clock_regression, left, not_member, then the removal statements' vote_open, unfrozen,
// bad_vote, double_vote), membership from a genesis plus delivered joins (candidates,
// decided in the final order: effective while fewer than MEMBERS_MAX are, else
// refused; a newcomer's first event parked until its join is decided), leaves (a
// member whose leave is final is no longer waited for) and removals (finality.md,
// "Removing a member": statements judged in a causal past, rounds closed when dead or
// decided there, a decision by the commit rule over the voters with that past's heads
// less sets counting a void vote, votes standing per target, frozen coverage, the cut;
// a removed member is waited for nowhere and its events beyond the cut are void), the
// commit rule (the final frontier), when to acknowledge, the node's clock, and the
// events a sync requester lacks. The books and the digest are computed by
// reference.mjs from the delivered set alone, in the total order (void events marked
// by `ordered()`).

import { compareEvents, hex } from './codec.mjs'

export const MEMBERS_MAX = 64
export const PARKED_MAX = 256

// (origin hex, seq) is `head` or in its causal past.
function coveredSeq (head, originHex) {
  if (!head) return 0
  if (head.originHex === originHex) return head.seq
  return head.clock.get(originHex)?.seq ?? 0
}
export const covers = (head, originHex, seq) => coveredSeq(head, originHex) >= seq

// Elementwise, then shorter first: the order of two member lists (hex, ascending).
function compareLists (x, y) {
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1
  }
  return x.length - y.length
}

// The two-round rule over `members` (hex), bounded by the event `bound` (null: none):
// the highest committed event, or null. Events of `others` (removed members, hex) count
// too when every witness covers them: a removed member is waited for nowhere, but its
// committed events still raise the frontier (finality.md, "Decision, cut, void events").
function committed (members, chains, bound, others = []) {
  const heads = []
  for (const m of members) {
    const chain = chains.get(m)
    if (!chain || chain.length === 0) return null
    heads.push(chain[chain.length - 1])
  }
  const witnesses = []
  for (const p of members) {
    const w = Math.min(...heads.map((h) => coveredSeq(h, p)))
    if (w === 0) return null
    witnesses.push(chains.get(p)[w - 1])
  }
  let best = null
  for (const o of [...members, ...others.filter((o) => chains.get(o)?.length)]) {
    let c = Math.min(...witnesses.map((w) => coveredSeq(w, o)))
    const chain = chains.get(o)
    if (bound) {
      let lo = 0; let hi = c
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if (compareEvents(chain[mid], bound) <= 0) lo = mid + 1
        else hi = mid
      }
      c = lo
    }
    if (c > 0 && (best === null || compareEvents(chain[c - 1], best) > 0)) best = chain[c - 1]
  }
  return best
}

// -- removal statements (finality.md, "Removing a member") ----------------------------

// The statement an event makes: its vote, when it is a membership event carrying
// exactly one (event.md), with hex peer ids; null otherwise. `key` names the round:
// (E, r), E the vote's members.
const statementCache = new WeakMap()
function statementOf (event) {
  if (event.actions.length !== 1 || event.actions[0].kind !== 'vote') return null
  let s = statementCache.get(event)
  if (!s) {
    const vote = event.actions[0]
    const members = vote.members.map(hex)
    s = { target: hex(vote.target), round: vote.round, members, key: `${vote.round}/${members.join(',')}` }
    statementCache.set(event, s)
  }
  return s
}

// A causal past: an event's, the event itself included (it need not be delivered yet:
// it is the head of its own origin there), or everything delivered (`event` null).
class Past {
  constructor (chains, event = null) {
    this.chains = chains
    this.event = event
  }

  // The highest seq of `origin` (hex) in this past.
  seq (origin) {
    if (this.event === null) return this.chains.get(origin)?.length ?? 0
    return coveredSeq(this.event, origin)
  }

  has (origin, seq) {
    return this.seq(origin) >= seq
  }

  // `origin`'s latest event in this past, or null.
  head (origin) {
    if (this.event !== null && this.event.originHex === origin) return this.event
    const s = this.seq(origin)
    return s ? this.chains.get(origin)[s - 1] : null
  }
}

// The commit rule over `members` (hex) with the latest events of `past` as heads:
// whether every witness w(p) (p's highest event all heads cover) covers every event of
// `targets`.
function allCommitted (members, past, targets) {
  const heads = []
  for (const m of members) {
    const head = past.head(m)
    if (!head) return false
    heads.push(head)
  }
  for (const p of members) {
    const w = Math.min(...heads.map((h) => coveredSeq(h, p)))
    if (w === 0) return false
    const witness = w === past.seq(p) ? past.head(p) : past.chains.get(p)[w - 1]
    if (!targets.every((t) => covers(witness, t.originHex, t.seq))) return false
  }
  return true
}

// The statements delivered so far, and the removals they decide. Everything is judged
// in a causal past (`Past`), so every replica judges an event alike whenever it does.
class Removals {
  constructor () {
    this.rounds = new Map() // round key -> { members, round, said: Map voter hex -> statement event }
    this.votes = new Map() // voter hex -> Map target hex -> its latest vote for that target
    this.full = [] // { key, members, round, target }: rounds in which all but the target voted it
    this.decided = new Map() // removed member hex -> { member, cut, round, members, votes }
    // Whether a member's leave lies in a past (set by the replica): a member that left
    // states nothing more, so it counts as refusing.
    this.leftIn = () => false
  }

  // The removals decided in `past`: the full vote sets that lie in it and that the
  // commit rule over their voters commits with its latest events as heads, one per
  // target (the earliest by round, then members), less any set that counts a void vote
  // (a vote of a member another such set removes, cast beyond that set's cut).
  decidedIn (past) {
    const committedSets = new Map()
    const ordered = [...this.full].sort((x, y) => (x.round - y.round) || compareLists(x.members, y.members) ||
      (x.target < y.target ? -1 : x.target > y.target ? 1 : 0))
    for (const { key, members, round, target } of ordered) {
      if (committedSets.has(target)) continue
      const { said } = this.rounds.get(key)
      const voters = members.filter((v) => v !== target)
      const votes = voters.map((v) => said.get(v))
      if (votes.every((e) => past.has(e.originHex, e.seq)) && allCommitted(voters, past, votes)) {
        const cut = Math.max(...votes.map((e) => coveredSeq(e, target)))
        committedSets.set(target, { member: target, cut, round, members, votes })
      }
    }
    const decided = new Map()
    for (const [target, r] of committedSets) {
      const counted = r.votes.every((e) => !committedSets.has(e.originHex) || e.seq <= committedSets.get(e.originHex).cut)
      if (counted) decided.set(target, r)
    }
    return decided
  }

  // voter -> target ('' for a refusal) of round `key` of `members` in `past`, where
  // `decided` is `decidedIn(past)`: a member removed there counts only with what it
  // stated up to its cut, and as refusing if it stated nothing by then; a member whose
  // leave lies in `past` and that stated nothing counts as refusing.
  said (members, key, past, decided) {
    const said = new Map()
    for (const [voter, e] of this.rounds.get(key)?.said ?? []) {
      const removal = decided.get(voter)
      if (past.has(voter, e.seq) && (!removal || e.seq <= removal.cut)) said.set(voter, statementOf(e).target)
    }
    for (const m of members) {
      if (!said.has(m) && (decided.has(m) || this.leftIn(m, past))) said.set(m, '')
    }
    return said
  }

  // Whether round `key` (`round` of `members`) is closed in `past`: its removal decided
  // there, or the round dead (for every t in E, some member other than t made a
  // statement other than Vote(t), or counts as refusing).
  closed (members, round, key, past, decided) {
    for (const r of decided.values()) {
      if (r.round === round && compareLists(r.members, members) === 0) return true
    }
    const said = [...this.said(members, key, past, decided)]
    return members.every((t) => said.some(([voter, target]) => voter !== t && target !== t))
  }

  // While `s` (a vote for m) stands: how much of m its voter's events may name, the
  // highest coverage of m among that round's votes for m counted in `past`.
  frozenAt (s, past, decided) {
    const raw = this.rounds.get(s.key)?.said ?? new Map()
    let most = 0
    for (const [voter, target] of this.said(s.members, s.key, past, decided)) {
      if (target === s.target && raw.has(voter)) most = Math.max(most, coveredSeq(raw.get(voter), s.target))
    }
    return most
  }

  // target -> how much of it `voter`'s events may name, for each vote of `voter` that
  // stands in `past` (a vote cast beyond its voter's own cut binds nothing).
  openVotes (voter, past) {
    const bounds = new Map()
    const votes = this.votes.get(voter)
    if (!votes) return bounds
    const decided = this.decidedIn(past)
    const removal = decided.get(voter)
    for (const [target, e] of votes) {
      if (removal && e.seq > removal.cut) continue
      const s = statementOf(e)
      if (!this.closed(s.members, s.round, s.key, past, decided)) bounds.set(target, this.frozenAt(s, past, decided))
    }
    return bounds
  }

  // Why `event` (its causes delivered) breaks a statement rule, or null; `known` is the
  // effective members of its causal past `past` (hex, ascending). In the order of
  // rejections.md §1.5: vote_open / unfrozen (per standing vote, in the order of the
  // voter's first vote for each target), then bad_vote, double_vote.
  verdict (event, known, past) {
    const origin = event.originHex
    const vote = statementOf(event)
    if (this.votes.has(origin)) {
      for (const [target, bound] of this.openVotes(origin, past)) {
        if (vote && vote.target === target) return 'vote_open'
        if (coveredSeq(event, target) > bound) return 'unfrozen'
      }
    }
    if (!vote) return null
    if (compareLists(vote.members, known) !== 0) {
      // Only a refusal may join a round among other members, and only one of which a
      // statement lies in its causal past.
      const opened = [...(this.rounds.get(vote.key)?.said ?? [])].some(([v, e]) => past.has(v, e.seq))
      if (vote.target || !opened) return 'bad_vote'
    }
    if (!vote.members.includes(origin) || vote.target === origin || (vote.target && !vote.members.includes(vote.target))) return 'bad_vote'
    if (this.rounds.get(vote.key)?.said.has(origin)) return 'double_vote'
    return null
  }

  onDelivered (event) {
    const s = statementOf(event)
    if (!s) return
    if (!this.rounds.has(s.key)) this.rounds.set(s.key, { members: s.members, round: s.round, said: new Map() })
    const { said } = this.rounds.get(s.key)
    said.set(event.originHex, event)
    if (!s.target) return
    if (!this.votes.has(event.originHex)) this.votes.set(event.originHex, new Map())
    this.votes.get(event.originHex).set(s.target, event)
    const full = s.members.every((v) => v === s.target || (said.has(v) && statementOf(said.get(v)).target === s.target))
    if (full && !this.full.some((f) => f.key === s.key && f.target === s.target)) {
      this.full.push({ key: s.key, members: s.members, round: s.round, target: s.target })
    }
  }

  // Whether a full set of votes is delivered whose target is not removed yet.
  undecided () {
    return this.full.some((f) => !this.decided.has(f.target))
  }

  // Removals newly decided here: those decided in everything delivered. The cut is the
  // highest seq of the target any vote of its set covers.
  decide (chains) {
    const fresh = []
    for (const [member, removal] of this.decidedIn(new Past(chains))) {
      if (this.decided.has(member)) continue
      this.decided.set(member, removal)
      fresh.push(removal)
    }
    return fresh
  }
}

export class Replica {
  constructor () {
    this.genesis = null // Set of peer id hex, once learned
    this.joined = new Map() // member hex -> its earliest delivered join event (by key)
    this.joinsOf = new Map() // member hex -> [{ sponsor hex, seq, event }] of its joins
    this.candidates = [] // members whose join is delivered, not decided (hex)
    this.effective = new Set() // genesis and decided effective members (hex)
    this.refused = new Set()
    this.leftAt = new Map() // member hex -> its delivered leave event
    this.gone = new Set() // members whose leave is final: the rule no longer waits for them
    this.removals = new Removals() // statements, and the members they removed
    this.removals.leftIn = (m, past) => this._leftIn(m, past)
    this.chains = new Map() // origin hex -> [event by seq - 1]
    this.buffered = new Map() // `${origin}:${seq}` -> event
    this.parked = new Map() // newcomer hex -> its first event, until its join is decided
    this.delivered = [] // in delivery order
    this.rejected = new Map() // code -> count
    this.equivocations = 0
    this.finalSeen = null // highest frontier ever computed (an event)
    this.finalAt = [-1, null] // (events delivered, frontier) of the last computation
    this.frontierRegressions = 0
    this.lateAfterFinal = 0
  }

  adoptGenesis (members) {
    if (this.genesis !== null) return
    this.genesis = new Set(members.map(hex))
    for (const m of this.genesis) this.effective.add(m)
  }

  // An effective member whose leave, if it left, is not final yet, and not removed.
  isMember (originHex) {
    if (this.genesis === null) return false
    this.finalKey() // joins, leaves and removals are decided as they become final
    return this.effective.has(originHex) && !this.gone.has(originHex) && !this.removals.decided.has(originHex)
  }

  // The effective members that have not left for good nor been removed (hex, sorted).
  members () {
    this.finalKey() // joins, leaves and removals are decided as they become final
    return [...this.effective].filter((m) => !this.gone.has(m) && !this.removals.decided.has(m)).sort()
  }

  // Whom the rule waits for: genesis, effective and candidate members, less those whose
  // leave is final and those removed.
  waitedFor () {
    return [...new Set([...this.effective, ...this.candidates])]
      .filter((m) => !this.gone.has(m) && !this.removals.decided.has(m)).sort()
  }

  // An event of a removed member beyond its cut: delivered, but it counts as empty.
  isVoid (event) {
    const removal = this.removals.decided.get(event.originHex)
    return removal !== undefined && event.seq > removal.cut
  }

  // Whether `member`'s leave (delivered here) lies in the causal past `past`.
  _leftIn (member, past) {
    const leave = this.leftAt.get(member)
    return leave !== undefined && past.has(member, leave.seq)
  }

  // The effective members of the causal past `past` (a `Past`), hex ascending: the
  // genesis and every member whose first event lies in it, less those whose leave lies
  // in it and those whose removal is decided in it. What a statement in that past must
  // name as its members.
  knownMembers (past) {
    const decided = this.removals.decidedIn(past)
    const known = []
    for (const m of new Set([...this.genesis, ...this.effective, ...this.candidates])) {
      if (!this.genesis.has(m) && !past.has(m, 1)) continue
      if (this._leftIn(m, past) || decided.has(m)) continue
      known.push(m)
    }
    return known.sort()
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
    const before = this.delivered.length
    const code = this._verdict(event)
    let rejected = null
    if (code === 'undecided') this._park(event)
    else if (code) rejected = this._reject(code)
    else {
      this._deliver(event)
      this._drainBuffer()
      this._settleRemovals()
    }
    this._releaseParked()
    if (this.delivered.length > before) return { status: 'delivered' }
    return rejected ?? { status: 'buffered' }
  }

  _ready (event) {
    for (const [o, entry] of event.clock) {
      if (this.deliveredSeq(o) < entry.seq) return false
    }
    return true
  }

  // The delivery checks, judged from the event's causal past alone; 'undecided': the
  // newcomer's join is not decided yet (park it).
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
    if (this.genesis === null) return null
    // After a leave in its origin's chain an event may carry no actions.
    if (event.actions.length > 0 && this.leftAt.has(event.originHex)) return 'left'
    if (event.seq === 1 && !this.genesis.has(event.originHex)) {
      // A join of the origin in its causal past: a delivered join of it whose
      // (sponsor, seq) its clock covers (delivery is causal: the clock covers the past).
      const joins = this.joinsOf.get(event.originHex) ?? []
      // it covers a join of its origin, and that join's clock (event.md)
      const has = (o, s) => (event.clock.get(o)?.seq ?? 0) >= s
      if (!joins.some(({ sponsor, seq, event: join }) => has(sponsor, seq) &&
          [...join.clock].every(([o, entry]) => has(o, entry.seq)))) return 'not_member'
      if (!this.effective.has(event.originHex)) return this.refused.has(event.originHex) ? 'not_member' : 'undecided'
    }
    // The removal statements' rules, for a statement and for any event of a member
    // with a vote that may still stand, judged in the event's causal past (itself
    // included, the head of its own origin there).
    if (!statementOf(event) && !this.removals.votes.has(event.originHex)) return null
    const past = new Past(this.chains, event)
    return this.removals.verdict(event, statementOf(event) ? this.knownMembers(past) : [], past)
  }

  _park (event) {
    if (this.parked.has(event.originHex) || this.parked.size < PARKED_MAX) this.parked.set(event.originHex, event)
  }

  _deliver (event) {
    if (!this.chains.has(event.originHex)) this.chains.set(event.originHex, [])
    this.chains.get(event.originHex).push(event)
    this.delivered.push(event)
    // The rule says an event with actions cannot sort at or before the frontier (one
    // without can: a member whose leave is final acknowledges no more, and whatever it
    // still signs changes nothing).
    if (event.actions.length > 0 && this.finalSeen && compareEvents(event, this.finalSeen) <= 0 && !this.isVoid(event)) this.lateAfterFinal++
    if (this.genesis === null || event.market !== '') return
    this.removals.onDelivered(event) // statements count wherever they are, void or not
    if (event.actions[0]?.kind === 'leave') {
      // A leave in the origin's chain, void or not (`left`: "its origin's chain holds
      // a leave before it", judged from the chain alone).
      if (!this.leftAt.has(event.originHex)) this.leftAt.set(event.originHex, event)
      return
    }
    if (this.isVoid(event)) return // its joins admit nobody
    for (const a of event.actions) {
      if (a.kind !== 'join') continue
      const m = hex(a.member)
      if (this.genesis.has(m) || this.refused.has(m)) continue
      if (!this.joinsOf.has(m)) this.joinsOf.set(m, [])
      this.joinsOf.get(m).push({ sponsor: event.originHex, seq: event.seq, event })
      if (!this.effective.has(m) && !this.candidates.includes(m)) this.candidates.push(m)
      const earliest = this.joined.get(m)
      if (!earliest || compareEvents(event, earliest) < 0) this.joined.set(m, event)
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
        if (code === 'undecided') this._park(event)
        else if (code) this._reject(code)
        else this._deliver(event)
        progress = true
      }
    }
  }

  // Deliver the parked first events whose join is now decided effective; refuse those
  // whose join was refused.
  _releaseParked () {
    while (this.parked.size > 0) {
      this.finalKey() // decides the joins that are final
      const ready = [...this.parked.keys()].filter((o) => this.effective.has(o))
      for (const o of [...this.parked.keys()]) {
        if (this.refused.has(o)) {
          this.parked.delete(o)
          this._reject('not_member')
        }
      }
      if (ready.length === 0) return
      for (const o of ready) { // delivering them may make further joins final
        const event = this.parked.get(o)
        this.parked.delete(o)
        const code = this._verdict(event)
        if (code === 'undecided') this._park(event)
        else if (code) this._reject(code)
        else {
          this._deliver(event)
          this._drainBuffer()
          this._settleRemovals()
        }
      }
    }
  }

  // A full set of votes was delivered: decide the removal as soon as it can be (its
  // events beyond the cut are void from then on).
  _settleRemovals () {
    if (this.genesis !== null && this.removals.undecided()) this.finalKey()
  }

  // Decide the removals the delivered statements commit. Joins in the removed member's
  // events beyond the cut no longer count (none was final anywhere, so none was
  // decided): a candidate admitted by no other join is a candidate no more.
  _decideRemovals () {
    for (const removal of this.removals.decide(this.chains)) {
      for (const [m, joins] of [...this.joinsOf]) {
        if (this.refused.has(m)) continue // decided for good
        const kept = joins.filter((j) => !(j.sponsor === removal.member && j.seq > removal.cut))
        if (kept.length === joins.length) continue
        if (kept.length > 0) {
          this.joinsOf.set(m, kept)
          this.joined.set(m, kept.map((j) => j.event).sort(compareEvents)[0])
        } else {
          this.joinsOf.delete(m)
          this.joined.delete(m)
          if (this.candidates.includes(m)) this.candidates.splice(this.candidates.indexOf(m), 1)
        }
      }
    }
  }

  // -- finality (protocols/finality.md) ------------------------------------------------

  // The rule's frontier over the delivered events. The boundaries are the earliest join
  // of each candidate or effective member and the leaves known to be final, in the
  // total order; one run per stretch between two boundaries, over the members that
  // count there (a joiner from its join on, a leaver up to its leave), each bounded by
  // the next boundary. A removed member is waited for nowhere (every event of it that
  // counts, up to its cut, is delivered wherever its removal is decided), but its
  // events that every witness covers still count. A leave at or below the result is
  // final: it becomes a boundary and the runs are done again, until no further leave
  // is found final. Removals are decided first.
  _frontier () {
    this._decideRemovals()
    const removed = this.removals.decided
    for (;;) {
      const boundaries = [
        ...[...this.joined].filter(([m]) => !this.refused.has(m) && !removed.has(m)).map(([m, e]) => ({ event: e, leaving: false, member: m })),
        ...[...this.leftAt].filter(([m]) => this.gone.has(m) && !removed.has(m)).map(([m, e]) => ({ event: e, leaving: true, member: m }))
      ].sort((x, y) => compareEvents(x.event, y.event) || (x.leaving - y.leaving) || (x.member < y.member ? -1 : x.member > y.member ? 1 : 0))
      const required = [...this.genesis].filter((m) => !removed.has(m)).sort()
      let best = null
      for (let k = 0; k <= boundaries.length; k++) {
        const bound = k < boundaries.length ? boundaries[k].event : null
        const found = committed(required, this.chains, bound, [...removed.keys()])
        if (found && (best === null || compareEvents(found, best) > 0)) best = found
        if (k < boundaries.length) {
          const { leaving, member } = boundaries[k]
          if (!leaving) required.push(member)
          else if (required.includes(member)) required.splice(required.indexOf(member), 1)
        }
      }
      const newlyGone = [...this.leftAt].filter(([m, e]) => !this.gone.has(m) && best !== null && compareEvents(e, best) <= 0)
      if (newlyGone.length === 0) return best
      for (const [m] of newlyGone) this.gone.add(m)
    }
  }

  // Decide the candidates whose earliest join is final, in the total order; returns
  // how many were refused.
  _decide (frontier) {
    if (!frontier) return 0
    const due = this.candidates.filter((m) => compareEvents(this.joined.get(m), frontier) <= 0)
      .sort((a, b) => compareEvents(this.joined.get(a), this.joined.get(b)))
    let refused = 0
    for (const m of due) {
      this.candidates.splice(this.candidates.indexOf(m), 1)
      if (this.effective.size < MEMBERS_MAX) this.effective.add(m)
      else {
        this.refused.add(m)
        this.joined.delete(m)
        refused++
      }
    }
    return refused
  }

  // The highest final event (everything at or before it is final), or null.
  finalKey () {
    if (this.genesis === null) return null
    if (this.finalAt[0] !== this.delivered.length) {
      let frontier
      do frontier = this._frontier()
      while (this._decide(frontier) > 0)
      const seen = this.finalSeen
      if (seen && (frontier === null || compareEvents(frontier, seen) < 0)) {
        this.frontierRegressions++
        frontier = seen
      }
      this.finalAt = [this.delivered.length, frontier]
      this.finalSeen = frontier
    }
    return this.finalAt[1]
  }

  // [lamport, rank, origin hex, seq] of the frontier, as the vectors print it.
  finalKeyTuple () {
    const f = this.finalKey()
    return f ? [f.lamport, f.rank, f.originHex, f.seq] : null
  }

  isFinal (event) {
    const f = this.finalKey()
    return f !== null && compareEvents(event, f) <= 0
  }

  // Final versus pending events, and whom finality waits for.
  finality () {
    const ordered = this.ordered()
    const frontier = this.finalKey()
    const final = frontier ? ordered.filter((e) => compareEvents(e, frontier) <= 0).length : 0
    const pending = ordered.slice(final).find((e) => e.actions.length > 0 && !e.void) ?? null
    return { frontier: this.finalKeyTuple(), final, pending: ordered.length - final, waiting_for: this._waitingFor(pending) }
  }

  _waitingFor (pending) {
    if (!pending) return []
    const heads = new Map(this.waitedFor().map((m) => [m, this.chains.get(m)?.at(-1) ?? null]))
    const first = [...heads].filter(([, h]) => !h || !covers(h, pending.originHex, pending.seq)).map(([m]) => m)
    if (first.length) {
      // A candidate cannot speak before its join is decided, which waits for the
      // effective members: one of them lagging in either round is named, not it.
      const effective = first.filter((m) => this.effective.has(m))
      if (effective.length) return effective
      for (const m of [...heads.keys()]) if (!this.effective.has(m)) heads.delete(m)
    }
    const acks = [...heads.values()].filter((h) => h)
    const second = [...heads].filter(([, h]) => !h || !acks.every((a) => covers(h, a.originHex, a.seq))).map(([m]) => m)
    return second.length ? second : first
  }

  // The seq of `member`'s first delivered event that covers `event`, or null.
  _firstCovering (member, event) {
    const chain = this.chains.get(member) ?? []
    if (member === event.originHex) return chain.length >= event.seq ? event.seq : null
    const i = chain.findIndex((e) => coveredSeq(e, event.originHex) >= event.seq)
    return i < 0 ? null : i + 1
  }

  // Whether `me` should sign an acknowledgement (an empty membership event) now: its
  // latest event does not cover a pending event with actions, or does not cover some
  // member's first acknowledgement of the earliest or latest such event.
  wantsAck (me) {
    if (!this.isMember(me)) return false
    const own = this.chains.get(me)
    const head = own?.at(-1) ?? null
    const frontier = this.finalKey()
    for (const [o, chain] of this.chains) {
      for (const e of chain.slice(coveredSeq(head, o))) {
        if (e.actions.length && (frontier === null || compareEvents(e, frontier) > 0) && !this.isVoid(e)) return true
      }
    }
    const ordered = this.ordered()
    const pending = frontier ? ordered.filter((e) => compareEvents(e, frontier) > 0) : ordered
    const withActions = pending.filter((e) => e.actions.length > 0 && !e.void)
    if (withActions.length === 0 || head === null) return false
    const earliest = withActions[0]
    const latest = withActions[withActions.length - 1]
    for (const member of this.waitedFor()) {
      for (const p of [earliest, latest]) {
        const first = this._firstCovering(member, p)
        if (first !== null && !covers(head, member, first)) return true
      }
    }
    return false
  }

  // What a requester with `theirClock` (origin hex -> { seq }) lacks, causes first.
  eventsFor (theirClock, limit) {
    const lacking = this.delivered.filter((e) => e.seq > (theirClock.get(e.originHex)?.seq ?? 0))
    lacking.sort(compareEvents)
    return lacking.slice(0, limit)
  }

  // Delivered events in the total order; a void one (a removed member's event beyond
  // its cut) as a copy marked `void: true`, which reference.mjs applies as empty.
  ordered () {
    return this.delivered.map((e) => (this.isVoid(e) ? { ...e, void: true } : e)).sort(compareEvents)
  }
}
