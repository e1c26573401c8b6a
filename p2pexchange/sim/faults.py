"""The fault schedule of one simulated run, drawn from its seed before the run starts.

Theory of operation. Nodes are numbered: the genesis members 0..n-1, then the
newcomer (if this run admits one), then the second persona of an equivocating member
(if this run has one). A schedule is a handful of windows of ticks, each drawn or
not by the seed: a partition (two groups, or one node isolated from the rest), a
pause of one node (it neither sends nor receives nor acknowledges), a kill of one node
(down, then restarted from its store), a load burst (everyone trades big batches),
the admission of the newcomer, and one dishonest member's behaviour. Every window
closes before trading ends, so the healing phase runs without any fault. There is no
timeout in the finality rule, so windows are many ticks long; their length only
decides how long finality waits. `up` and `reachable` are the whole network model
apart from loss, duplication, delay and reordering (network.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DISHONEST_KINDS = ("backdate", "regression", "equivocation")
DISHONEST_P = 0.35  # of the seeds have one dishonest member


@dataclass(frozen=True)
class Window:
    start: int
    end: int  # exclusive

    def __contains__(self, tick: int) -> bool:
        return self.start <= tick < self.end


@dataclass
class Schedule:
    members_n: int  # genesis members
    ticks: int  # trading ticks; healing follows
    partition: Window | None = None
    sides: dict[int, int] = field(default_factory=dict)  # node -> side, in a partition
    pause: Window | None = None
    paused: int = -1
    kill: Window | None = None
    killed: int = -1
    burst: Window | None = None
    newcomer: int | None = None  # node index of the newcomer
    join_tick: int = -1
    sponsor: int = -1
    dishonest: int | None = None
    kind: str = ""  # one of DISHONEST_KINDS
    attack: Window | None = None
    persona: int | None = None  # node index of the equivocator's second persona
    halves: dict[int, int] = field(default_factory=dict)  # node -> which version it gets
    leaver: int | None = None  # an honest member that leaves for good
    leave_tick: int = -1
    gone: set[int] = field(default_factory=set)  # leavers that sign nothing more
    crashed: int | None = None  # a member that stops for good (the others remove it)
    crash_tick: int = -1

    @property
    def nodes_n(self) -> int:
        return self.members_n + (self.newcomer is not None) + (self.persona is not None)

    def up(self, node: int, tick: int) -> bool:
        if node == self.crashed and tick >= self.crash_tick:
            return False
        if node == self.persona:
            return self.attack is not None and tick in self.attack
        if self.pause is not None and node == self.paused and tick in self.pause:
            return False
        return not (self.kill is not None and node == self.killed and tick in self.kill)

    def reachable(self, a: int, b: int, tick: int) -> bool:
        if not (self.up(a, tick) and self.up(b, tick)):
            return False
        if self.attack is not None and tick in self.attack and self.persona is not None:
            side_of = {self.dishonest: 0, self.persona: 1}
            if a in side_of and b in side_of:
                return False
            if a in side_of or b in side_of:
                other, side = (b, side_of[a]) if a in side_of else (a, side_of[b])
                return self.halves.get(other) == side
        if self.partition is not None and tick in self.partition:
            return self.sides.get(a, 0) == self.sides.get(b, 0)
        return True

    def describe(self) -> list[str]:
        lines = []
        if self.partition:
            groups = [sorted(n for n, s in self.sides.items() if s == side) for side in (0, 1)]
            lines.append(f"partition {groups[0]}|{groups[1]} ticks {self.partition.start}.."
                         f"{self.partition.end}")
        if self.pause:
            lines.append(f"pause node {self.paused} ticks {self.pause.start}..{self.pause.end}")
        if self.kill:
            lines.append(f"kill node {self.killed} at {self.kill.start}, "
                         f"restart at {self.kill.end}")
        if self.burst:
            lines.append(f"burst ticks {self.burst.start}..{self.burst.end}")
        if self.newcomer is not None:
            lines.append(f"join node {self.newcomer} by node {self.sponsor} at {self.join_tick}")
        if self.dishonest is not None:
            lines.append(f"dishonest node {self.dishonest}: {self.kind} ticks "
                         f"{self.attack.start}..{self.attack.end}")
        if self.leaver is not None:
            lines.append(f"node {self.leaver} leaves at {self.leave_tick}")
        if self.crashed is not None:
            lines.append(f"node {self.crashed} crashes for good at {self.crash_tick}")
        return lines


def _window(rng: random.Random, ticks: int, length_min: int, length_max: int) -> Window:
    length = rng.randint(length_min, length_max)
    start = rng.randrange(1, max(2, ticks - length))
    return Window(start, min(start + length, ticks - 1))


def draw_schedule(rng: random.Random, members_n: int, ticks: int,
                  kinds: tuple[str, ...] | None = None) -> Schedule:
    """Which faults this run has, when, and whom they hit; all from `rng`. With
    `kinds`, the run always has a dishonest member, of one of those kinds."""
    s = Schedule(members_n, ticks)
    nodes = list(range(members_n))
    if rng.random() < 0.4:
        s.newcomer = members_n
        s.join_tick = rng.randrange(ticks // 8, ticks // 2)
        nodes.append(s.newcomer)
    if rng.random() < DISHONEST_P or kinds:
        s.dishonest = rng.randrange(members_n)
        s.kind = rng.choice(kinds or DISHONEST_KINDS)
        if s.kind == "equivocation" and len(nodes) < 3:
            s.kind = "backdate"  # two halves need two honest nodes
        s.attack = _window(rng, ticks, ticks // 8, ticks // 3)
    honest = [n for n in nodes if n != s.dishonest]
    s.sponsor = rng.choice([n for n in honest if n < members_n])
    if rng.random() < 0.6:
        s.partition = _window(rng, ticks, ticks // 4, ticks // 2)
        if rng.random() < 0.5:
            alone = rng.choice(nodes)
            s.sides = {n: int(n == alone) for n in nodes}
        else:
            shuffled = rng.sample(nodes, len(nodes))
            cut = rng.randint(1, len(nodes) - 1)
            s.sides = {n: int(i < cut) for i, n in enumerate(shuffled)}
    if rng.random() < 0.4:
        s.pause, s.paused = _window(rng, ticks, ticks // 6, ticks // 2), rng.choice(honest)
    if rng.random() < 0.4:
        s.kill, s.killed = _window(rng, ticks, 1, ticks // 4), rng.choice(honest)
    if rng.random() < 0.5:
        s.burst = _window(rng, ticks, 2, ticks // 6)
    if s.kind == "equivocation":
        s.persona = len(nodes)
        shuffled = rng.sample(honest, len(honest))
        cut = rng.randint(1, len(honest) - 1)
        s.halves = {n: int(i < cut) for i, n in enumerate(shuffled)}
        s.sides[s.persona] = s.sides.get(s.dishonest, 0)
    return s


LEAVE_P = 0.3  # of the seeds have an honest genesis member leave for good


def draw_leave(rng: random.Random, s: Schedule) -> None:
    """On some seeds an honest genesis member (not the newcomer's sponsor) leaves: it
    signs its leave, acknowledges until the leave is final at its own replica, and then
    signs nothing ever again (it still answers pulls, as a node that left keeps serving
    its history until its peers have it). Drawn from its own generator, so every other
    draw of a seed stays what it was before leaves existed."""
    candidates = [n for n in range(s.members_n) if n not in (s.dishonest, s.sponsor)]
    if rng.random() < LEAVE_P and len(candidates) > 1:
        s.leaver = rng.choice(candidates)
        s.leave_tick = rng.randrange(s.ticks // 4, 3 * s.ticks // 4)


CRASH_P = 0.25  # of the seeds without a dishonest member have a member crash for good


def draw_crash(rng: random.Random, s: Schedule) -> None:
    """On some seeds an honest genesis member (not the sponsor, not the leaver) stops
    for good: the others must remove it for finality to resume. Drawn from its own
    generator, so every other draw of a seed stays what it was."""
    candidates = [n for n in range(s.members_n) if n not in (s.sponsor, s.leaver)]
    if rng.random() < CRASH_P and s.dishonest is None and len(candidates) > 1 and (
            s.members_n - (s.leaver is not None) >= 4):
        s.crashed = rng.choice(candidates)
        s.crash_tick = rng.randrange(s.ticks // 4, s.ticks - 1)
