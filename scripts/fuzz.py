"""A time-bounded fuzz of every decoder and every entry point of the replica.

    .venv/bin/python scripts/fuzz.py --seconds 300 --seed 7
    .venv/bin/python scripts/fuzz.py --seconds 60 --engine builtin

Every input goes to `decode_event`, to each `wire.decode_*` (what decodes is fed on
to `Replica.on_heartbeat`, `events_for` or `receive`, as the shell does) and to
`Replica.receive`; now and then `on_heartbeat`, `events_for`, `is_final`, `is_member`
and `finality` are also called with hostile Python values. Anything other than an
acceptance or a rejection with a known code is a crash, and so is a rejection by a
decoder's last net (`malformed`: an exception no explicit check foresaw). The run
prints the inputs tried, the outcomes of each target by code, and each distinct
crash (target, exception, innermost frame of p2pexchange) with its first input,
saved into tests/crashers/ (`wire_<kind>_*.bin` when a wire decoder crashed); the
exit status is 1 when a crash was found.

Engines (the first line of the output says which one ran):
- `atheris` (used by `--engine auto` when `import atheris` works): libFuzzer,
  coverage-guided over the instrumented p2pexchange modules, with a custom mutator
  that alternates libFuzzer's byte mutations with the structure-aware mutations of
  tests/test_fuzz.py. `pip install atheris` installs a prebuilt wheel for CPython
  3.11 on x86-64 Linux (atheris 3.0.0, no clang needed); it is not a dependency of
  the project.
- `builtin` (the fallback): a seeded mutational loop over the valid vectors of
  protocols/vectors/events.json, a simulated history, valid wire messages and the
  crasher corpus, mixing structure-aware mutations (a field replaced by a huge
  bignum, a float, a tag, a nested container, bytes of the wrong length, unknown
  keys, a clock of hundreds of origins, duplicate keys, non-canonical encodings,
  re-signing so mutations reach the checks behind the signature) with byte-level
  ones (flips, interesting bytes, inserts, deletes, splices). An input whose
  outcomes across all targets were never seen before joins the corpus. Same seed,
  same inputs.

The generators and oracles are those of tests/test_fuzz.py (imported from there),
so a crash found here is also reachable by the CI properties.

Freezes: a call slower than `--slow-ms` (1 s) is reported like a crash. A freeze
inside C code (cbor2 hashing a DAG of shared references, say) holds the GIL, so the
fuzz runs in a worker process that writes the input in flight, and the target it
is in, to a shared file; the parent watches it, and an input still running after
`--stall-s` (30 s) is saved as a crasher named after that target, the worker's
stacks are dumped (faulthandler, SIGUSR1) and the run ends with status 3.

`--lift-int-limit` calls sys.set_int_max_str_digits(0) first: a diagnostic that hides
the int-to-str crash class so the classes behind it show.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import hashlib
import mmap
import os
import pathlib
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings

import cbor2

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

STATUS_INTERVAL_S = 10.0
REPLICA_INPUTS_MAX = 2000  # inputs before the shared replica is rebuilt (bounds its growth)
CORPUS_MAX = 5000
NAME_CHARS_MAX = 72
RECIPES_MAX = 10_000  # recipes of recent structure-aware mutations (atheris engine)
BEACON_BYTES = 32 * 1024 * 1024  # the input in flight, shared with the watching parent
BEACON_HEAD = struct.Struct("<QQII64s")  # inputs started, start (ns), sizes, target
RECIPE_BYTES_MAX = 4096


def _refuse(*_: object) -> object:
    raise ValueError("shared references are not mutated")


NO_SHARED_REFERENCES = {28: _refuse, 29: _refuse}


class Beacon:
    """The input the worker is running, in a shared file the parent reads when the worker
    stops making progress (a freeze inside C code holds the GIL, so no thread of the
    worker could report it)."""

    def __init__(self, path: pathlib.Path) -> None:
        self._file = open(path, "r+b")  # open for the life of the process
        self._map = mmap.mmap(self._file.fileno(), BEACON_BYTES)
        self._count = 0

    @staticmethod
    def create() -> pathlib.Path:
        fd, name = tempfile.mkstemp(prefix="p2px-fuzz-beacon-")
        os.ftruncate(fd, BEACON_BYTES)
        os.close(fd)
        return pathlib.Path(name)

    def started(self, raw: bytes, recipe: tuple[str, ...]) -> None:
        text = "\x1f".join(recipe).encode()[:RECIPE_BYTES_MAX]
        raw = raw[:BEACON_BYTES - BEACON_HEAD.size - RECIPE_BYTES_MAX]
        offset = BEACON_HEAD.size
        self._map[offset:offset + len(text)] = text
        self._map[offset + len(text):offset + len(text) + len(raw)] = raw
        self._count += 1
        self._map[:BEACON_HEAD.size] = BEACON_HEAD.pack(self._count, time.monotonic_ns(),
                                                        len(text), len(raw), b"")

    def calling(self, target: str) -> None:
        """Which target the input is in now (the last field of the head)."""
        self._map[BEACON_HEAD.size - 64:BEACON_HEAD.size] = target.encode()[:64].ljust(64, b"\0")

    def read(self) -> tuple[int, int, str, tuple[str, ...], bytes]:
        count, started_ns, text_size, raw_size, target = BEACON_HEAD.unpack(
            self._map[:BEACON_HEAD.size])
        offset = BEACON_HEAD.size
        text = self._map[offset:offset + text_size].decode(errors="replace")
        raw = self._map[offset + text_size:offset + text_size + raw_size]
        return (count, started_ns, target.rstrip(b"\0").decode(errors="replace"),
                tuple(text.split("\x1f")), raw)


def crasher_path(directory: pathlib.Path, target: str, error: str, where: str,
                 recipe: tuple[str, ...], raw: bytes) -> pathlib.Path:
    """A descriptive name: wire_<kind>_ for a wire decoder's crash, the recipe, the error."""
    wire_kind = re.match(r"wire\.decode_(\w+)", target)
    prefix = f"wire_{wire_kind.group(1)}_" if wire_kind else "fuzz_"
    what = "_".join(recipe[1:3]) or recipe[0]
    exc = error.split(":")[0]
    func = where.rsplit(" in ", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "_", f"{what}_{exc}_in_{func}".lower()).strip("_")
    digest = hashlib.sha256(raw).hexdigest()[:8]
    return directory / f"{prefix}{slug[:NAME_CHARS_MAX]}_{digest}.bin"


class Run:
    """Counts, the corpus and the distinct crashes of one fuzz run."""

    def __init__(self, fz, rng: random.Random, crashers: pathlib.Path | None,
                 beacon: Beacon | None) -> None:
        self.fz = fz
        self.beacon = beacon
        self.rng = rng
        self.ch = fz.RandomChoices(rng)
        self.crashers = crashers
        self.tried = 0
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self.crashes: dict[tuple, tuple[object, int, pathlib.Path | None]] = {}
        self.seen: set[tuple] = set()
        self.corpus: list[bytes] = list(fz.BYTE_POOL)
        for path in sorted(fz.CRASHERS.glob("*.bin")):
            self.corpus.append(path.read_bytes())
        self.replica = None
        self.replica_inputs = 0
        self.generator_errors = 0  # a corpus entry the structure mutator cannot handle

    def fresh_replica(self):
        if self.replica is None or self.replica_inputs >= REPLICA_INPUTS_MAX:
            self.replica = self.fz._loaded_replica(fresh=True)
            self.replica_inputs = 0
        self.replica_inputs += 1
        return self.replica

    # -- one input ------------------------------------------------------------

    def run_one(self, raw: bytes, recipe: tuple[str, ...]) -> None:
        fz = self.fz
        self.tried += 1
        if self.beacon is not None:
            self.beacon.started(raw, recipe)
        outcomes, crashes = fz.check_everywhere(
            raw, self.fresh_replica(), recipe[0],
            self.beacon.calling if self.beacon is not None else None)
        for target, outcome in outcomes.items():
            self.outcomes[target][outcome] += 1
        key = (tuple(sorted(outcomes.items())), recipe[1:2])
        if key not in self.seen and len(self.corpus) < CORPUS_MAX:
            self.seen.add(key)
            self.corpus.append(raw)
        for crash in crashes:
            self.crashed(crash, recipe)

    def run_calls(self) -> None:
        """Entry points that take Python values: arbitrary heartbeats and queries."""
        fz, ch = self.fz, self.ch
        replica = self.fresh_replica()
        value = fz.hostile_value
        origin = fz.pick(ch, (fz.ATTACKER, fz.OBSERVER, value(ch)))
        clock = fz.pick(ch, ({fz.pick(ch, (*fz.KEYS, fz.OBSERVER)): value(ch)},
                             {fz.hostile_key(ch) if fz.chance(ch, 50) else fz.fake_peer(1): 1},
                             value(ch)))
        key = fz.hostile_key(ch)  # hashable, as an event id or a peer id would be
        calls = [
            ("Replica.on_heartbeat", lambda: replica.on_heartbeat(origin, clock)),
            ("Replica.events_for", lambda: replica.events_for(
                clock if isinstance(clock, dict) else {}, fz.huge_int(ch))),
            ("Replica.is_final", lambda: replica.is_final(key)),
            ("Replica.is_member", lambda: replica.is_member(key)),
            ("Replica.finality", replica.finality),
            ("Replica.wants_ack", replica.wants_ack),
            ("Replica.missing", replica.missing),
        ]
        shown = fz.safe_repr((origin, clock), 2000).encode()
        for target, call in calls:
            self.tried += 1
            if self.beacon is not None:
                self.beacon.started(shown, ("python values", target))
                self.beacon.calling(target)
            try:
                call()
                self.outcomes[target]["returned"] += 1
            except Exception as exc:
                self.crashed(fz._crash(target, shown, exc), ("python values",))

    def crashed(self, crash, recipe: tuple[str, ...]) -> None:
        sig = crash.signature
        if sig in self.crashes:
            first, count, path = self.crashes[sig]
            self.crashes[sig] = (first, count + 1, path)
            return
        path = self.save(crash, recipe) if crash.raw and recipe != ("python values",) else None
        self.crashes[sig] = (crash, 1, path)
        print(f"CRASH {crash.target}: {crash.error[:120]} at {crash.where}"
              + (f" -> {path}" if path else ""), flush=True)

    def save(self, crash, recipe: tuple[str, ...]) -> pathlib.Path | None:
        if self.crashers is None:
            return None
        path = crasher_path(self.crashers, crash.target, crash.error, crash.where, recipe,
                            crash.raw)
        self.crashers.mkdir(parents=True, exist_ok=True)
        path.write_bytes(crash.raw)
        return path

    # -- generation -------------------------------------------------------------

    def next_input(self) -> tuple[bytes, tuple[str, ...]]:
        fz, ch, rng = self.fz, self.ch, self.rng
        roll = rng.random()
        if roll < 0.35:
            sample = fz.mutated_event(ch)
        elif roll < 0.6:
            sample = fz.mutated_wire(ch)
        elif roll < 0.9:
            base = rng.choice(self.corpus)
            return fz.byte_mutated(ch, base), ("bytes", "byte mutation")
        else:
            return self.structured_from_corpus()
        return sample.raw, sample.recipe

    def structured_from_corpus(self, data: bytes | None = None) -> tuple[bytes, tuple[str, ...]]:
        """Structure-aware mutation of a corpus entry, whatever message it decodes as."""
        fz, ch = self.fz, self.ch
        data = data if data is not None else self.rng.choice(self.corpus)
        if self.beacon is not None:  # a freeze here is the mutator's, not a target's
            self.beacon.started(data, ("mutator", "decoding a corpus entry"))
            self.beacon.calling("the structure mutator")
        try:  # shared references would let re-encoding walk 2^levels leaves
            msg = cbor2.loads(data, semantic_decoders=NO_SHARED_REFERENCES)
        except Exception:
            msg = None
        if type(msg) is dict and set(msg) == set("vosclmag"):
            sample = fz.mutated_event(ch, base=data)
        elif type(msg) is dict:
            kind = next((k for k, ms in fz.WIRE_CORPUS.items() if set(ms[0]) == set(msg)),
                        None)
            sample = fz.mutated_wire(ch, kind, base=msg if kind else None)
        else:
            return fz.byte_mutated(ch, data), ("bytes", "byte mutation")
        return sample.raw, sample.recipe

    # -- report -------------------------------------------------------------------

    def report(self, engine: str, elapsed_s: float) -> int:
        print(f"\nengine: {engine}")
        print(f"inputs tried: {self.tried} in {elapsed_s:.1f} s "
              f"({self.tried / max(elapsed_s, 1e-9):.0f}/s); corpus {len(self.corpus)}; "
              f"inputs the structure mutator skipped {self.generator_errors}")
        print("outcomes by target:")
        for target in sorted(self.outcomes):
            counts = ", ".join(f"{code} {n}" for code, n in self.outcomes[target].most_common())
            print(f"  {target}: {counts}")
        print(f"distinct crashes: {len(self.crashes)}")
        for crash, count, path in self.crashes.values():
            print(f"  {crash.target}: {crash.error[:160]}\n    at {crash.where}; seen {count}x"
                  + (f"; saved {path.relative_to(ROOT) if ROOT in path.parents else path}"
                     if path else ""))
        return 1 if self.crashes else 0


def watch(argv: list[str], stall_s: float, crashers: pathlib.Path | None) -> int:
    """Run the fuzz in a worker process and watch its beacon: an input still running after
    `stall_s` is a freeze, saved as a crasher (`fuzz_freeze_*.bin`), and ends the run."""
    path = Beacon.create()
    try:
        beacon = Beacon(path)
        worker = subprocess.Popen([sys.executable, __file__, *argv, "--beacon", str(path)])
        last = (0, 0)
        while worker.poll() is None:
            time.sleep(0.5)
            count, started_ns, target, recipe, raw = beacon.read()
            if count == 0 or (count, started_ns) != last:
                last, seen_ns = (count, started_ns), time.monotonic_ns()
                continue
            if (time.monotonic_ns() - seen_ns) / 1e9 < stall_s:
                continue
            print(f"\nFREEZE in {target}: an input ran for more than {stall_s:.0f} s (recipe "
                  f"{list(recipe)}, {len(raw)} bytes); where the worker is stuck:", flush=True)
            worker.send_signal(signal.SIGUSR1)  # faulthandler: the stacks, even inside C
            time.sleep(1.0)
            worker.kill()
            worker.wait()
            if crashers is not None and recipe[0] != "python values":
                out = crasher_path(crashers, target, "freeze", "", recipe, raw)
                crashers.mkdir(parents=True, exist_ok=True)
                out.write_bytes(raw)
                print(f"saved {out}")
            return 3
        return worker.returncode
    finally:
        path.unlink(missing_ok=True)


def run_builtin(run: Run, seconds: float) -> int:
    start = time.monotonic()
    deadline = start + seconds
    next_status = start + STATUS_INTERVAL_S
    while (now := time.monotonic()) < deadline:
        if run.rng.random() < 0.05:
            run.run_calls()
        else:
            try:
                raw, recipe = run.next_input()
            except Exception:  # e.g. a corpus entry that decodes to a cyclic structure
                run.generator_errors += 1
                continue
            run.run_one(raw, recipe)
        if now >= next_status:
            next_status = now + STATUS_INTERVAL_S
            print(f"... {now - start:.0f} s: {run.tried} inputs, "
                  f"{len(run.crashes)} distinct crashes", flush=True)
    return run.report("builtin mutational loop (structure-aware + byte-level)",
                      time.monotonic() - start)


def run_atheris(run: Run, atheris, seconds: float, seed: int) -> int:
    fz = run.fz
    start = time.monotonic()
    deadline = start + seconds
    corpus_dir = pathlib.Path(tempfile.mkdtemp(prefix="p2px-fuzz-corpus-"))
    for i, raw in enumerate(run.corpus):
        (corpus_dir / f"seed-{i:05d}").write_bytes(raw)
    version = getattr(atheris, "__version__", "")

    def test_one_input(data: bytes) -> None:
        if time.monotonic() >= deadline:
            code = run.report(f"atheris {version} (libFuzzer, coverage-guided, custom "
                              "structure-aware mutator)".replace("  ", " "),
                              time.monotonic() - start)
            sys.stdout.flush()
            os._exit(code)
        if run.tried % 20 == 0:
            run.run_calls()
        run.run_one(bytes(data), recipes.get(hashlib.sha256(data).digest(),
                                             ("atheris", "libFuzzer byte mutation")))

    recipes: collections.OrderedDict[bytes, tuple[str, ...]] = collections.OrderedDict()

    def custom_mutator(data: bytes, max_size: int, mutator_seed: int) -> bytes:
        run.rng.seed(mutator_seed)
        if run.rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        try:
            raw, recipe = run.structured_from_corpus(data or None)
        except Exception:  # e.g. an input that decodes to a cyclic structure
            run.generator_errors += 1
            return atheris.Mutate(data, max_size)
        raw = raw[:max_size]
        recipes[hashlib.sha256(raw).digest()] = recipe  # names a crasher file after it
        if len(recipes) > RECIPES_MAX:
            recipes.popitem(last=False)
        return raw

    argv = [sys.argv[0], f"-seed={seed or 1}", f"-max_len={fz.EVENT_BYTES_MAX + 1024}",
            f"-max_total_time={int(seconds) + 30}", "-rss_limit_mb=4096", "-timeout=3600",
            "-print_final_stats=0", str(corpus_dir)]
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0  # not reached: test_one_input ends the process at the deadline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("auto", "atheris", "builtin"), default="auto")
    parser.add_argument("--crashers", type=pathlib.Path, default=ROOT / "tests" / "crashers",
                        help="where new crashers are saved")
    parser.add_argument("--no-save", action="store_true", help="do not save crashers")
    parser.add_argument("--slow-ms", type=float, default=1000.0,
                        help="a call slower than this is reported as a freeze")
    parser.add_argument("--stall-s", type=float, default=30.0,
                        help="an input still running after this is saved and ends the run")
    parser.add_argument("--lift-int-limit", action="store_true",
                        help="sys.set_int_max_str_digits(0): hide the int-to-str crash class")
    parser.add_argument("--beacon", type=pathlib.Path, help=argparse.SUPPRESS)  # the worker
    args = parser.parse_args()
    if args.beacon is None:
        return watch(sys.argv[1:], args.stall_s, None if args.no_save else args.crashers)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    warnings.simplefilter("ignore")  # cbor2 warns about odd inputs: they are the point
    if args.lift_int_limit:
        sys.set_int_max_str_digits(0)

    atheris = None
    if args.engine in ("auto", "atheris"):
        try:
            import atheris  # type: ignore[import-not-found]
        except ImportError:
            if args.engine == "atheris":
                print("atheris is not installed: pip install atheris", file=sys.stderr)
                return 2
    if atheris is not None:
        with atheris.instrument_imports(include=["p2pexchange"]):
            import p2pexchange.core.events  # noqa: F401
            import p2pexchange.core.replica  # noqa: F401
            import p2pexchange.net.wire  # noqa: F401
    import test_fuzz as fz

    fz.SLOW_S = args.slow_ms / 1000
    crashers = None if args.no_save else args.crashers
    run = Run(fz, random.Random(args.seed), crashers, Beacon(args.beacon))
    print(f"engine: {'atheris' if atheris else 'builtin'}; seed {args.seed}; "
          f"{args.seconds:.0f} s; corpus {len(run.corpus)} inputs; crashers -> "
          f"{crashers if crashers else 'not saved'}", flush=True)
    if atheris is not None:
        return run_atheris(run, atheris, args.seconds, args.seed)
    return run_builtin(run, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
