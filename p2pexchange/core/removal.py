"""Removing a member that no longer speaks: statements in the log, rounds, the cut.

Theory of operation (the rule and its safety argument: protocols/finality.md,
"Removing a member"). The commit rule waits for every member, so a member that
crashed for good would stall finality for ever. Members remove it by statements,
each a `Vote` action alone in an event on the membership market, judged at delivery
from that event's causal past alone (so every replica judges it the same):

- `Vote(m, r, E)`: remove member m in round r among E, the effective members of the
  statement's causal past (`known_members`); `Vote(b"", r, E)`: a refusal, this
  member removes nobody in round r of E. A refusal may also join a round among former
  members already opened in its causal past (nobody can vote there any more).
- One statement per member per (E, r) (`double_vote`); no new vote for m while the
  member's previous vote for m stands (`vote_open`). Votes for several members may
  stand at once (the node's policy keeps one).
- Judged in a causal past P (`Past`): a removal is *decided* in P when a full set of
  votes (all of E but m voted m) lies in P and the commit rule over the voters, with
  P's latest events as heads, commits it (and it counts no void vote: one beyond the
  cut of another committed removal of its voter); a round is *dead* when for every t
  in E a member other than t made a statement other than `Vote(t)` there (members that
  left, or were removed without a statement up to their cut, count as refusing); a
  round dead or decided is *closed*; a vote stands while its round is not closed.
- Frozen coverage: while a member's vote for m stands, its events name no more of m
  than the votes for m of that round counted in their causal past (`unfrozen`).

A replica's removals are those decided in everything it delivered. The cut is the
highest seq of m any vote of the set covers; m's events beyond it are void on every
replica (delivered, counted as empty: ledger.py). Every notion above only grows with
the causal past, which is what keeps judgements and decisions alike everywhere.
Nothing here reads a clock or a timeout: when to vote is the shell's choice
(`Suspicion`; liveness only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .clock import covered_seq, covers, witnesses
from .events import ROUND_MAX, Event, Vote

Members = tuple[bytes, ...]


class Past:
    """A causal past: an event's (its own included), or everything a replica delivered
    (`event` None). `seq(o)` is the highest seq of origin o in it, `head(o)` that event."""

    __slots__ = ("event", "events")

    def __init__(self, events: Mapping[bytes, Sequence[Event]], event: Event | None = None
                 ) -> None:
        self.events = events
        self.event = event

    def seq(self, origin: bytes) -> int:
        if self.event is None:
            chain = self.events.get(origin)
            return len(chain) if chain else 0
        return covered_seq(self.event, origin)

    def has(self, origin: bytes, seq: int) -> bool:
        return self.seq(origin) >= seq

    def head(self, origin: bytes) -> Event | None:
        event = self.event
        if event is not None and origin == event.origin:
            return event  # not delivered yet while it is judged
        s = self.seq(origin)
        return self.events[origin][s - 1] if s else None


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
        self.votes: dict[bytes, dict[bytes, Event]] = {}  # voter -> target -> its latest vote
        self._full: list[tuple[Members, int, bytes]] = []  # (E, r, target): full vote sets
        self.decided: dict[bytes, Removal] = {}  # removed member -> its removal
        # Whether a member's leave lies in a causal past (set by finality.Membership):
        # a member that left states nothing more, so it counts as refusing every round.
        self.left_in: Callable[[bytes, Past], bool] = lambda member, past: False

    # -- judging from a causal past -------------------------------------------------------

    def decided_in(self, past: Past) -> dict[bytes, Removal]:
        """The removals decided in the causal past `past`: the full sets of votes that
        lie in it and are committed by the rule over their voters with its latest events
        as heads (one per target, the earliest round; with one honest voter there is
        only one), less any set that counts a vote of a member another committed set
        removes, cast beyond that set's cut (a void vote). Such a set cannot be committed
        before the other one is: their common voters stay frozen on that member until
        its removal is decided in their past. So this only grows as the past grows, and
        so does everything judged from it below."""
        committed: dict[bytes, Removal] = {}
        for members, rnd, target in sorted(self._full, key=lambda k: (k[1], k[0], k[2])):
            if target in committed:
                continue
            said = self.rounds[(members, rnd)]
            voters = [v for v in members if v != target]
            votes = [said[v] for v in voters]
            if (all(past.has(e.origin, e.seq) for e in votes)
                    and _all_committed(voters, past, votes)):
                committed[target] = Removal(target, max(covered_seq(e, target) for e in votes),
                                            rnd, members, tuple(votes))
        return {t: r for t, r in committed.items()
                if not any(e.seq > committed[e.origin].cut
                           for e in r.votes if e.origin in committed)}

    def _said(self, members: Members, rnd: int, past: Past,
              decided: Mapping[bytes, Removal]) -> dict[bytes, bytes]:
        """voter -> target (b"": refusal) of round `rnd` of `members` in `past`, where
        `decided` is `decided_in(past)`. A member removed there counts only with what it
        stated up to its cut, and as refusing if it stated nothing by then; a member
        whose leave lies in `past` and stated nothing counts as refusing."""
        said = {}
        for voter, e in self.rounds.get((members, rnd), {}).items():
            removal = decided.get(voter)
            if past.has(voter, e.seq) and (removal is None or e.seq <= removal.cut):
                said[voter] = statement(e).target  # type: ignore[union-attr]
        for m in members:
            if m not in said and (m in decided or self.left_in(m, past)):
                said[m] = b""
        return said

    def closed(self, members: Members, rnd: int, past: Past,
               decided: Mapping[bytes, Removal] | None = None) -> bool:
        """Whether round `rnd` of `members` is over in `past`: dead, or its removal
        decided there."""
        if decided is None:
            decided = self.decided_in(past)
        if any(r.round == rnd and r.members == members for r in decided.values()):
            return True
        said = self._said(members, rnd, past, decided)
        return all(any(voter != t and target != t for voter, target in said.items())
                   for t in members)

    def frozen_at(self, vote: Vote, past: Past, decided: Mapping[bytes, Removal]) -> int:
        """While a vote `Vote(m, r, E)` stands, how much of m its voter's events may name:
        the most any vote for m in round r of E in `past` covers (the voter's own
        included). Every such vote is in the decision if the round decides, so the cut
        is at least that."""
        target = vote.target
        said = self.rounds.get((vote.members, vote.round), {})
        return max((covered_seq(said[v], target)
                    for v, t in self._said(vote.members, vote.round, past, decided).items()
                    if t == target and v in said), default=0)

    def open_votes(self, voter: bytes, past: Past) -> dict[bytes, int]:
        """target -> how much of it `voter`'s events may name, for each vote of `voter`
        that stands in `past`."""
        votes = self.votes.get(voter)
        if not votes:
            return {}
        decided = self.decided_in(past)
        removal = decided.get(voter)
        cut = None if removal is None else removal.cut
        bounds = {}
        for target, e in votes.items():
            vote = statement(e)
            assert vote is not None
            if cut is not None and e.seq > cut:
                continue  # its voter is removed and the vote void: it binds nothing
            if not self.closed(vote.members, vote.round, past, decided):
                bounds[target] = self.frozen_at(vote, past, decided)
        return bounds

    def verdict(self, event: Event, known: Members, past: Past) -> tuple[str, str] | None:
        """Why `event` (its causes delivered) breaks a statement rule, or None. `known`
        is `known_members` of its causal past `past`."""
        origin = event.origin
        vote = statement(event)
        if origin in self.votes:
            for target, bound in self.open_votes(origin, past).items():
                if vote is not None and vote.target == target:
                    return "vote_open", (f"its earlier vote for {target.hex()[-12:]} stands: a "
                                         "new one needs that round dead or decided")
                if covered_seq(event, target) > bound:
                    return "unfrozen", ("names more of a member it voted to remove than the "
                                        "votes of that round did, while its vote stands")
        if vote is None:
            return None
        if vote.members != known and (vote.target or not any(
                past.has(v, e.seq)
                for v, e in self.rounds.get((vote.members, vote.round), {}).items())):
            return "bad_vote", ("its members are not the effective members of its causal "
                                "past (only a refusal may join a round opened among others)")
        if origin not in vote.members or vote.target == origin or (
                vote.target and vote.target not in vote.members):
            return "bad_vote", "voter and target must be members, and differ"
        if origin in self.rounds.get((vote.members, vote.round), {}):
            return "double_vote", f"a second statement in round {vote.round}"
        return None

    def removed_in(self, member: bytes, past: Past) -> bool:
        return member in self.decided_in(past)

    # -- what was delivered -------------------------------------------------------------

    def on_delivered(self, event: Event) -> None:
        vote = statement(event)
        if vote is None:
            return
        key = (vote.members, vote.round)
        said = self.rounds.setdefault(key, {})
        said[event.origin] = event
        if vote.target:
            self.votes.setdefault(event.origin, {})[vote.target] = event
            target = vote.target
            if (all(v in said and statement(said[v]).target == target  # type: ignore[union-attr]
                    for v in vote.members if v != target)
                    and (vote.members, vote.round, target) not in self._full):
                self._full.append((vote.members, vote.round, target))

    def undecided_sets(self) -> list[tuple[bytes, list[bytes], list[Event]]]:
        """(target, voters, votes) of each full set of votes whose target is not removed
        here."""
        out = []
        for members, rnd, target in self._full:
            if target not in self.decided:
                said = self.rounds[(members, rnd)]
                voters = [v for v in members if v != target]
                out.append((target, voters, [said[v] for v in voters]))
        return out

    def undecided(self) -> bool:
        """Whether a full set of votes is delivered whose target is not removed yet."""
        return any(t not in self.decided for _, _, t in self._full)

    def decide(self, events: Mapping[bytes, Sequence[Event]]) -> list[Removal]:
        """Removals newly decided here (in everything delivered)."""
        new = []
        for member, removal in self.decided_in(Past(events)).items():
            if member not in self.decided:
                self.decided[member] = removal
                new.append(removal)
        return new

    # -- what a member should say next (the shell decides when) --------------------------

    def next_statement(self, me: bytes, known: Members, past: Past,
                       suspects: Iterable[bytes], may_open: Iterable[bytes] | None = None
                       ) -> Vote | None:
        """The statement `me` should make now given `suspects` (members it has not heard
        from while finality waited for them, for the shell's timeout), or None. In
        order: refuse in a live round among other members than ours (nobody can vote
        there any more); nothing more if we suspect several members (we are probably
        the ones cut off, and a removal needs every member but one); in the earliest
        live round among ours that others opened, vote for our suspect if it is a
        target there, else refuse (we hear from its targets); open a new round for our
        suspect, unless a vote of ours stands: one vote at a time (a voter frozen on two
        members may need one's statement to unfreeze from the other) (and the target in
        `may_open`, if given:
        the shell opens at most one round per suspect and timeout)."""
        decided = self.decided_in(past)
        standing = self.open_votes(me, past)
        for members, rnd in sorted(self.rounds, key=lambda k: (k[1], k[0])):
            said = self.rounds[(members, rnd)]
            if (members != known and me in members and me not in said
                    and any(statement(e).target for e in said.values())  # type: ignore[union-attr]
                    and any(past.has(v, e.seq) for v, e in said.items())
                    and not self.closed(members, rnd, past, decided)):
                return Vote(b"", rnd, members)
        if len(known) < 3 or me not in known:
            return None
        suspected = sorted(s for s in suspects if s in known and s != me)
        if len(suspected) > 1:
            return None  # we may be the ones cut off: a removal needs all but one
        rounds = sorted(r for (members, r) in self.rounds if members == known)
        for rnd in rounds:
            said = self.rounds[(known, rnd)]
            if me in said or self.closed(known, rnd, past, decided):
                continue
            targets = {statement(e).target for v, e in said.items()  # type: ignore[union-attr]
                       if past.has(v, e.seq)} - {b""}
            if not targets:
                continue
            if suspected and suspected[0] in targets:
                if not standing:
                    return Vote(suspected[0], rnd, known)
                continue
            return Vote(b"", rnd, known)  # we hear from its targets
        if (suspected and not standing
                and (may_open is None or suspected[0] in may_open)
                and (not rounds or rounds[-1] < ROUND_MAX)):
            return Vote(suspected[0], rounds[-1] + 1 if rounds else 0, known)
        return None


class Suspicion:
    """Whom a member suspects: members finality waits for (`waiting_for`) that it has
    not heard from (no event, no heartbeat, no sync) for at least `after`, in the
    caller's unit of time (the node's seconds, the simulation's ticks); and for which
    of them it may open a new round (at most one per `after`). The only input of
    removal that reads time, and it decides only when to vote (liveness)."""

    def __init__(self, after: float) -> None:
        self.after = after
        self._heard: dict[bytes, float] = {}  # member -> when we last heard from it
        self._opened: dict[bytes, float] = {}  # member -> when we last opened a round

    def heard(self, member: bytes, now: float) -> None:
        self._heard[member] = now

    def suspects(self, now: float, waiting: Iterable[bytes]) -> set[bytes]:
        heard = self._heard
        return {m for m in waiting if now - heard.setdefault(m, now) >= self.after}

    def may_open(self, now: float, suspects: Iterable[bytes]) -> set[bytes]:
        opened = self._opened
        return {m for m in suspects if now - opened.get(m, now - self.after) >= self.after}

    def stated(self, vote: Vote, opened: bool, now: float) -> None:
        """Note a statement we signed; `opened`: it opened a new round."""
        if opened and vote.target:
            self._opened[vote.target] = now


def _all_committed(members: Sequence[bytes], past: Past, targets: Sequence[Event]) -> bool:
    """Whether the two-round rule over `members`, with the latest events of `past` as
    heads, commits every event of `targets`: every witness w(p) (p's highest event all
    heads cover) covers each of them."""
    heads = []
    for member in members:
        head = past.head(member)
        if head is None:
            return False
        heads.append(head)
    found = witnesses(members, heads,  # the judged event itself is its origin's head
                      lambda p, w: past.head(p) if w == past.seq(p) else past.events[p][w - 1])
    return found is not None and all(covers(w, t.origin, t.seq)  # type: ignore[union-attr]
                                     for w in found for t in targets)
