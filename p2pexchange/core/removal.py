"""Removing a member that no longer speaks: statements in the log, rounds, the cut.

Theory of operation (the rule and its safety argument: protocols/finality.md,
"Removing a silent member"). The commit rule waits for every member, so a member that
crashed for good would stall finality for ever. Members remove it by statements,
each a `Vote` action alone in an event on the membership market, judged at delivery
from that event's causal past alone (so every replica judges it the same):

- `Vote(m, r, E)`: remove member m in round r among E, the effective members of the
  statement's causal past (`known_members`); `Vote(b"", r, E)`: a refusal, this
  member removes nobody in round r of E (it hears from whoever was named).
- One statement per member per (E, r) (`double_vote`), and a new statement only once
  the member's previous one lies in a dead round of its causal past (`vote_open`).
- Frozen coverage: while a member's vote for m stands (its round is not dead in the
  causal past), its events name no more of m than the votes for m of that round in
  their causal past did (`unfrozen`).
- Round r of E is *dead* once, for every t in E, a member of E other than t made a
  round-r statement other than `Vote(t)`: no target can gather its votes any more.

The decision: round r of E removes m once every member of E \\ {m} voted `Vote(m, r,
E)` and those votes are committed by the commit rule run over E \\ {m} (both rounds:
every voter's latest event covers a witness of every voter, and every witness covers
every vote). The cut is the highest seq of m any vote covers; m's events beyond it
are void on every replica (delivered, counted as empty: ledger.py). Nothing here
reads a clock or a timeout: when to vote is the shell's choice (liveness only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .clock import covered_seq, covers
from .events import ROUND_MAX, Event, Vote

Members = tuple[bytes, ...]
Has = Callable[[bytes, int], bool]  # whether (origin, seq) lies in a causal past


def has_in(event: Event) -> Has:
    """The causal past of `event`, as a predicate."""
    return lambda origin, seq: covers(event, origin, seq)


@dataclass(frozen=True)
class Removal:
    member: bytes
    cut: int  # the member's events beyond this seq are void
    round: int
    members: Members  # E: the voters are E less the member
    votes: tuple[Event, ...]


def statement(event: Event) -> Vote | None:
    actions = event.actions
    if len(actions) == 1 and actions[0].__class__ is Vote:
        return actions[0]  # type: ignore[return-value]
    return None


class Removals:
    """The statements delivered so far, and the removals they decide."""

    def __init__(self) -> None:
        self.rounds: dict[tuple[Members, int], dict[bytes, Event]] = {}  # (E, r) -> statements
        self.last: dict[bytes, Event] = {}  # member -> its latest statement
        self._complete: dict[bytes, list[tuple[Members, int]]] = {}  # target -> full vote sets
        self.decided: dict[bytes, Removal] = {}  # removed member -> its removal

    # -- judging an event from its causal past ------------------------------------------

    def dead(self, members: Members, rnd: int, has: Has) -> bool:
        """Whether round `rnd` of `members` is dead in the causal past `has`."""
        said = [(voter, statement(e).target)  # type: ignore[union-attr]
                for voter, e in self.rounds.get((members, rnd), {}).items()
                if has(voter, e.seq)]
        return all(any(voter != t and target != t for voter, target in said)
                   for t in members)

    def frozen_at(self, vote: Vote, has: Has) -> int:
        """While a vote `Vote(m, r, E)` stands, how much of m its voter's events may name:
        the most any vote for m in round r of E in the causal past `has` covers (the
        voter's own included). Every such vote is in the decision if the round decides,
        so the cut is at least that."""
        target = vote.target
        return max((covered_seq(e, target)
                    for v, e in self.rounds.get((vote.members, vote.round), {}).items()
                    if has(v, e.seq) and statement(e).target == target),  # type: ignore[union-attr]
                   default=0)

    def removed_in(self, member: bytes, has: Has) -> bool:
        """Whether a full set of votes to remove `member` lies in the causal past `has`."""
        return any(all(has(v, e.seq) for v, e in self.rounds[key].items())
                   for key in self._complete.get(member, ()))

    def verdict(self, event: Event, known: Members) -> tuple[str, str] | None:
        """Why `event` (its causes delivered) breaks a statement rule, or None. `known`
        is `known_members` of its causal past (needed for statements only)."""
        has = has_in(event)
        origin = event.origin
        last = self.last.get(origin)
        vote = statement(event)
        if last is not None:
            before = statement(last)
            assert before is not None
            if not self.dead(before.members, before.round, has):
                if vote is not None:
                    return "vote_open", (f"its statement in round {before.round} stands: "
                                         "a new one needs that round dead")
                if before.target and covered_seq(event, before.target) > self.frozen_at(
                        before, has):
                    return "unfrozen", ("names more of the member it voted to remove than "
                                        "the votes of its round did, while its vote stands")
        if vote is None:
            return None
        if vote.members != known:
            return "bad_vote", "its members are not the effective members of its causal past"
        if origin not in vote.members or vote.target == origin or (
                vote.target and vote.target not in vote.members):
            return "bad_vote", "voter and target must be members, and differ"
        if origin in self.rounds.get((vote.members, vote.round), {}):
            return "double_vote", f"a second statement in round {vote.round}"
        return None

    # -- what was delivered -------------------------------------------------------------

    def on_delivered(self, event: Event) -> None:
        vote = statement(event)
        if vote is None:
            return
        key = (vote.members, vote.round)
        said = self.rounds.setdefault(key, {})
        said[event.origin] = event
        self.last[event.origin] = event
        for target in {statement(e).target for e in said.values()}:  # type: ignore[union-attr]
            if target and all(v in said and statement(said[v]).target == target  # type: ignore[union-attr]
                              for v in vote.members if v != target):
                if key not in self._complete.setdefault(target, []):
                    self._complete[target].append(key)

    def undecided(self) -> bool:
        """Whether a full set of votes is delivered whose target is not removed yet."""
        return any(t not in self.decided for t in self._complete)

    def decide(self, events: Mapping[bytes, Sequence[Event]]) -> list[Removal]:
        """Removals newly decided: full vote sets committed by the rule over the voters."""
        new = []
        for target in sorted(self._complete):
            if target in self.decided:
                continue
            for members, rnd in sorted(self._complete[target], key=lambda k: (k[1], k[0])):
                votes = self.rounds[(members, rnd)]
                voters = [v for v in members if v != target]
                if _all_committed(voters, events, [votes[v] for v in voters]):
                    removal = Removal(target, max(covered_seq(votes[v], target)
                                                  for v in voters),
                                      rnd, members, tuple(votes[v] for v in voters))
                    self.decided[target] = removal
                    new.append(removal)
                    break
        return new

    # -- what a member should say next (the shell decides when) --------------------------

    def next_statement(self, me: bytes, known: Members, has: Has,
                       suspects: Iterable[bytes]) -> Vote | None:
        """The statement `me` should make now given `suspects` (members it has not heard
        from while finality waited for them, for the shell's timeout), or None: join the
        earliest live round of `known` others opened (vote its target if we suspect it,
        else our own suspect, else refuse), or open a new round for our lowest suspect."""
        last = self.last.get(me)
        if last is not None:
            before = statement(last)
            assert before is not None
            if not self.dead(before.members, before.round, has):
                return None  # our statement stands
        if len(known) < 3 or me not in known:
            return None
        suspected = sorted(s for s in suspects if s in known and s != me)
        rounds = sorted(r for (members, r) in self.rounds if members == known)
        for rnd in rounds:
            said = self.rounds[(known, rnd)]
            if me in said or self.dead(known, rnd, has):
                continue
            targets = sorted({statement(e).target for e in said.values()} - {b""})  # type: ignore[union-attr]
            if not targets:
                continue
            ours = [t for t in targets if t in suspected] or suspected
            return Vote(ours[0] if ours else b"", rnd, known)
        if suspected and (not rounds or rounds[-1] < ROUND_MAX):
            return Vote(suspected[0], rounds[-1] + 1 if rounds else 0, known)
        return None


def _all_committed(members: Sequence[bytes], events: Mapping[bytes, Sequence[Event]],
                   targets: Sequence[Event]) -> bool:
    """Whether the two-round rule over `members` commits every event of `targets`:
    every witness w(p) (p's highest event all heads cover) covers each of them."""
    heads = []
    for member in members:
        chain = events.get(member)
        if not chain:
            return False
        heads.append(chain[-1])
    for p in members:
        w = min(covered_seq(h, p) for h in heads)
        if w == 0:
            return False
        witness = events[p][w - 1]
        if not all(covers(witness, t.origin, t.seq) for t in targets):
            return False
    return True
