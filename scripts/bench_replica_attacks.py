"""Replica under attack: time and peak memory, this tree against an earlier commit, one run.

Three attacks from the "no message can crash, freeze or exhaust a node" audit
(tests/test_replica_limits.py holds them as structural regression tests):

1. release: one origin's chain of 8,000 events arrives in reverse; the time of the
   receive of seq 1, which delivers all 8,000, and that time minus the time the same
   8,000 (decoded) take to deliver in order: the cost of the release itself.
2. missing: clocks of buffered events (16 keys) name 200,000 invented origins, as many
   per event as a clock holds (255 in events v1, 127 in v2); the time of one more
   buffered receive naming as many more, and of one `missing()` call.
3. memory: the peak RSS of a process whose replica is fed 40 max-size events (1,000
   cancels, a full clock) from each of 16 throw-away keys, then 100,000 one-action
   events of one more such key, none of which can become deliverable (seq 1 withheld).

The inputs are signed into files by each tree's own code (a subprocess whose
PYTHONPATH names it), in that tree's event format (v1 clock entries are seqs, v2
entries [seq, id]); each measurement then runs in a fresh subprocess against the
code under test: this working tree (after), and a `git worktree` of the reference
commit (before; created if missing). Prints one JSON line with both figures and
before/after ratios. `--scale 0.05` shrinks every count (a quick check that it runs).

    .venv/bin/python scripts/bench_replica_attacks.py [--before 8c00d78] [--scale 1]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE_EVENTS = 8_000
INVENTED_ORIGINS = 200_000
INVENTED_KEYS = 16
MEMORY_EVENTS = 100_000
MAX_SIZE_KEYS = 16
MAX_SIZE_EVENTS_PER_KEY = 40
TARGET_TIME_S = 0.050
TARGET_RSS_MIB = 200


# -- inputs (signed by the code of the tree they are for, in its event format) ------------


def write_raws(path: pathlib.Path, raws: Iterator[bytes]) -> int:
    count = 0
    with path.open("wb") as out:
        for raw in raws:
            out.write(struct.pack(">I", len(raw)))
            out.write(raw)
            count += 1
    return count


def read_raws(path: pathlib.Path) -> Iterator[bytes]:
    with path.open("rb") as data:
        while header := data.read(4):
            yield data.read(struct.unpack(">I", header)[0])


def invented(count: int, tag: str) -> list[bytes]:
    return [f"{tag}-{i:08d}".encode().ljust(38, b".") for i in range(count)]


def make_inputs(folder: pathlib.Path, scale: float) -> dict[str, int]:
    """Sign the inputs with the code on sys.path (run in a child whose PYTHONPATH names
    the tree), in that tree's event format."""
    from p2pexchange.core import events as ev
    from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

    one = [ev.Place(ev.Side.BUY, ev.OrderType.LIMIT, 100, 1)]
    ids = getattr(ev, "PROTOCOL_VERSION", 1) >= 2  # v2: a clock entry is (seq, event id)
    per_event = ev.CLOCK_ORIGINS_MAX - 1  # invented origins, besides the origin's own entry
    no_such_event = bytes(32)
    withheld: dict[bytes, bytes] = {}  # origin -> id of its seq 1, which is never sent

    def sized(count: int) -> int:
        return max(2, int(count * scale))

    def key(name: str):
        pair = seeded_key_pair(f"bench-attacks-{name}")
        return pair.private_key, peer_id_bytes(pair)

    def entry(seq: int, event_id: bytes = no_such_event):
        return (seq, event_id) if ids else seq

    def sign(private, origin: bytes, seq: int, clock: dict, lamport: int, actions,
             previous=None):
        """An event naming its own previous seq: `previous` (an event), or seq 1 withheld."""
        clock = dict(clock)
        if seq > 1:
            if previous is None and origin not in withheld:
                withheld[origin] = sign(private, origin, 1, {}, 1, one).id
            clock[origin] = entry(seq - 1, previous.id if previous else withheld[origin])
        return ev.sign_event(private, origin, seq, clock, lamport, "BTC-USD", actions)

    def release() -> Iterator[bytes]:
        private, origin = key("release")
        events = [sign(private, origin, 1, {}, 1, one)]
        for seq in range(2, sized(RELEASE_EVENTS) + 1):
            events.append(sign(private, origin, seq, {}, seq, one, events[-1]))
        yield from reversed([e.raw for e in events])  # the last seq first, seq 1 last

    def missing() -> Iterator[bytes]:
        count = (sized(INVENTED_ORIGINS) + per_event - 1) // per_event + 1  # the last is timed
        names = invented(count * per_event, "invented")
        last: dict[bytes, object] = {}
        for i in range(count):
            private, origin = key(f"invented-{i % INVENTED_KEYS}")
            seq = i // INVENTED_KEYS + 2  # seq 1 withheld: nothing is ever delivered
            clock = {o: entry(5) for o in names[i * per_event:(i + 1) * per_event]}
            event = sign(private, origin, seq, clock, 10, one, last.get(origin))
            last[origin] = event
            yield event.raw

    def memory() -> Iterator[bytes]:
        cancels = [ev.Cancel(bytes([i % 256]) * 34) for i in range(1000)]
        clock = {o: entry(10**15) for o in invented(per_event, "max-size")}
        for k in range(MAX_SIZE_KEYS):  # first, so the reference's count bound admits them
            private, origin = key(f"max-size-{k}")
            previous = None
            for seq in range(2, MAX_SIZE_EVENTS_PER_KEY + 2):
                previous = sign(private, origin, seq, clock, 10**15 + 1, cancels, previous)
                yield previous.raw
        private, origin = key("memory")
        previous = None
        for seq in range(2, sized(MEMORY_EVENTS) + 2):
            previous = sign(private, origin, seq, {}, seq, one, previous)
            yield previous.raw

    return {name: write_raws(folder / f"{name}.bin", make())
            for name, make in (("release", release), ("missing", missing),
                               ("memory", memory))}


def make_inputs_in(tree: pathlib.Path, folder: pathlib.Path, scale: float) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--make", str(folder), "--scale", str(scale)],
                         env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"signing the inputs with {tree} failed:\n{out.stderr[-2000:]}")
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts.pop("tree") == str(tree), (out.stdout, tree)
    return counts


# -- measurements (run in a child process, against whichever tree PYTHONPATH names) -------


def peak_rss_mib() -> float:
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def new_replica(**wanted: int):
    """A replica with `wanted` options where this tree has them (the reference has none)."""
    from p2pexchange.core.market import DEFAULT_MARKETS
    from p2pexchange.core.replica import Replica
    known = inspect.signature(Replica).parameters
    return Replica(DEFAULT_MARKETS, **{k: v for k, v in wanted.items() if k in known})


def child_release(path: pathlib.Path) -> dict:
    from p2pexchange.core.events import decode_event
    from p2pexchange.core.market import DEFAULT_MARKETS
    raws = list(read_raws(path))
    in_order = [decode_event(raw, DEFAULT_MARKETS) for raw in reversed(raws)]
    replica = new_replica()
    start = time.perf_counter()
    for event in in_order:
        replica.admit(event)
    in_order_s = time.perf_counter() - start
    # Hold the whole chain, as the reference's count bound (100,000 events) did.
    replica = new_replica(buffer_origin_bytes_max=64 * 1024 * 1024)
    for raw in raws[:-1]:
        assert replica.receive(raw).status == "buffered"
    start = time.perf_counter()
    receipt = replica.receive(raws[-1])
    seconds = time.perf_counter() - start
    assert len(receipt.delivered) == len(raws), len(receipt.delivered)
    return {"seconds": seconds, "in_order_seconds": in_order_s,
            "delivered": len(receipt.delivered)}


def child_missing(path: pathlib.Path) -> dict:
    from p2pexchange.core.replica import Replica
    raws = list(read_raws(path))
    replica = new_replica()
    computed = Replica.missing
    Replica.missing = lambda self: {}  # setting up: the reference recomputes it per receipt
    try:
        statuses = [replica.receive(raw).status for raw in raws[:-1]]
    finally:
        Replica.missing = computed
    start = time.perf_counter()
    receipt = replica.receive(raws[-1])
    receive_s = time.perf_counter() - start
    start = time.perf_counter()
    ranges = replica.missing()
    missing_s = time.perf_counter() - start
    return {"receive_seconds": receive_s, "missing_seconds": missing_s,
            "ranges": len(ranges), "receipt_ranges": len(receipt.missing),
            "buffered": statuses.count("buffered") + (receipt.status == "buffered")}


def child_memory(path: pathlib.Path) -> dict:
    replica = new_replica()
    baseline = peak_rss_mib()
    statuses: dict[str, int] = {}
    for raw in read_raws(path):
        receipt = replica.receive(raw)
        key = receipt.code or receipt.status
        statuses[key] = statuses.get(key, 0) + 1
    stats = replica.stats()
    return {"peak_rss_mib": peak_rss_mib(), "baseline_rss_mib": baseline,
            "events_buffered": stats["events_buffered"], "outcomes": statuses}


CHILDREN = {"release": child_release, "missing": child_missing, "memory": child_memory}


def run_child(mode: str, tree: pathlib.Path, folder: pathlib.Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder / f"{mode}.bin")],
                         env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{mode} in {tree} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tree"] == str(tree), (result["tree"], tree)
    return result


def reference_tree(commit: str, path: pathlib.Path) -> pathlib.Path:
    if not (path / "p2pexchange").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT,
                       check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                          text=True, check=True).stdout.strip()
    want = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert head == want, f"{path} is at {head}, not {commit}"
    return path


def compare(before: float, after: float) -> dict:
    return {"before": round(before, 6), "after": round(after, 6),
            "before_over_after": round(before / after, 1) if after > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="8c00d78", help="reference commit")
    parser.add_argument("--worktree", default="/tmp/p2px-before", type=pathlib.Path)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the event counts (0.05: a quick check)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "INPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--make", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        from p2pexchange.core import events  # signed by the tree PYTHONPATH names
        counts = make_inputs(args.make, args.scale)
        print(json.dumps({**counts,
                          "tree": str(pathlib.Path(events.__file__).resolve().parents[2])}))
        return
    if args.child:
        from p2pexchange.core import replica  # p2pexchange is a namespace package
        mode, path = args.child
        result = CHILDREN[mode](pathlib.Path(path))
        result["tree"] = str(pathlib.Path(replica.__file__).resolve().parents[2])
        print(json.dumps(result))
        return
    before_tree = reference_tree(args.before, args.worktree)
    with tempfile.TemporaryDirectory(prefix="p2px-attacks-") as tmp:
        folders = {"before": pathlib.Path(tmp) / "before", "after": pathlib.Path(tmp) / "after"}
        trees = {"before": before_tree, "after": ROOT}
        counts = {k: make_inputs_in(trees[k], folders[k], args.scale) for k in trees}
        runs = {mode: {k: run_child(mode, trees[k], folders[k]) for k in trees}
                for mode in CHILDREN}
    release, missing, memory = runs["release"], runs["missing"], runs["memory"]
    report = {
        "before_commit": args.before,
        "inputs": counts,
        "release_reverse_chain_s": compare(release["before"]["seconds"],
                                           release["after"]["seconds"]),
        "release_overhead_s": compare(*(release[k]["seconds"] - release[k]["in_order_seconds"]
                                        for k in ("before", "after"))),
        "same_events_in_order_s": compare(release["before"]["in_order_seconds"],
                                          release["after"]["in_order_seconds"]),
        "missing_invented_origins": {
            "receive_s": compare(missing["before"]["receive_seconds"],
                                 missing["after"]["receive_seconds"]),
            "missing_s": compare(missing["before"]["missing_seconds"],
                                 missing["after"]["missing_seconds"]),
            "ranges": {k: missing[k]["ranges"] for k in ("before", "after")},
            "receipt_ranges": {k: missing[k]["receipt_ranges"] for k in ("before", "after")},
            "buffered": {k: missing[k]["buffered"] for k in ("before", "after")},
        },
        "memory_attack": {
            "peak_rss_mib": compare(memory["before"]["peak_rss_mib"],
                                    memory["after"]["peak_rss_mib"]),
            "baseline_rss_mib": {k: round(memory[k]["baseline_rss_mib"], 1)
                                 for k in ("before", "after")},
            "events_buffered": {k: memory[k]["events_buffered"] for k in ("before", "after")},
            "outcomes": {k: memory[k]["outcomes"] for k in ("before", "after")},
        },
    }
    report["targets_met"] = {
        "release_overhead_lt_50ms": (release["after"]["seconds"]
                                     - release["after"]["in_order_seconds"]) < TARGET_TIME_S,
        "receive_lt_50ms": missing["after"]["receive_seconds"] < TARGET_TIME_S,
        "missing_lt_50ms": missing["after"]["missing_seconds"] < TARGET_TIME_S,
        "peak_rss_lt_200mib": memory["after"]["peak_rss_mib"] < TARGET_RSS_MIB,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
