"""The protocol's CBOR: strict decoding of untrusted bytes, canonical encoding, and
bounded descriptions of untrusted values for error messages. Shared by events
(events.py) and the network's other messages (net/wire.py).

Strict decoding refuses what the protocol never uses and an attacker could: every CBOR
tag (the built-in ones too), indefinite lengths, duplicate map keys, unhashable keys,
and nesting deeper than `CBOR_DEPTH_MAX`. Canonical encoding is cbor2's (sorted keys,
shortest forms); an event must arrive in it (events.py checks).
"""

from __future__ import annotations

from typing import TypeVar

import cbor2

CBOR_DEPTH_MAX = 4  # an event nests map -> actions -> action (or map -> clock -> entry): depth 3
DESCRIBE_CHARS_MAX = 40  # how much of an untrusted value an error message shows

T = TypeVar("T")


def describe(value: object) -> str:
    """A short, bounded description of an untrusted value for an error message: its
    type and a clipped rendering. Never formats anything unbounded; never raises."""
    try:
        kind = type(value).__name__[:DESCRIBE_CHARS_MAX]
        if type(value) is int:
            if -10**12 < value < 10**12:
                return f"int {value}"
            return f"int of {value.bit_length()} bits"
        if type(value) in (bytes, str):
            shown = repr(value[:DESCRIBE_CHARS_MAX])[:DESCRIBE_CHARS_MAX]  # type: ignore[index]
            return f"{kind} of length {len(value)} {shown}"  # type: ignore[arg-type]
        if type(value) in (list, dict, tuple):
            return f"{kind} of length {len(value)}"  # type: ignore[arg-type]
        if value is None or type(value) is bool:
            return repr(value)
        return kind
    except Exception:  # a value so odd that even its type name misbehaves
        return "a value that cannot be described"


def describe_error(exc: BaseException) -> str:
    """The first characters of an exception's message, or its type if that fails."""
    try:
        return str(exc)[:200]
    except Exception:
        return type(exc).__name__


def _refuse_tag(*_: object) -> object:
    raise cbor2.CBORDecodeError("CBOR tags are not part of the protocol")


# Every tag cbor2 decodes itself (the switch in rust/decoder.rs of cbor2 6.x; a test in
# tests/test_replica_hostile_input.py checks that no tag escapes); others reach the hook.
_CBOR_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258,
                      260, 261, 1004, 43000, 55799)
_REFUSE_TAGS = dict.fromkeys(_CBOR_BUILTIN_TAGS, _refuse_tag)


def strict_loads(data: bytes, depth: int = CBOR_DEPTH_MAX) -> object:
    """Decode the protocol's CBOR subset, nested at most `depth` deep; raises (some cbor2
    error) on anything else."""
    return cbor2.loads(data, tag_hook=_refuse_tag, semantic_decoders=_REFUSE_TAGS,
                       max_depth=depth, allow_indefinite=False,
                       allow_duplicate_keys=False, strict_hashable_types=True)


def canonical(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def head(major: int, length: int) -> bytes:
    """A canonical CBOR head (RFC 8949 §3, shortest form): the major type (4 an array, 5
    a map) and its length. Followed by that many encoded items (pairs for a map), it is
    what `canonical` gives for the whole: for building a large encoding from parts
    encoded before (core/checkpoint.py)."""
    if length < 24:
        return bytes((major << 5 | length,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + length.to_bytes(size, "big")
    raise ValueError(f"a CBOR length of {length}")


def intern_bounded(table: dict, value: T, bound: int) -> T:
    """The one object `table` holds equal to `value` (kept from now on while the table
    has fewer than `bound`); past the bound, `value` itself."""
    shared = table.get(value)
    if shared is None:
        if len(table) >= bound:
            return value
        table[value] = shared = value
    return shared
