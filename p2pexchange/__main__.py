"""`python -m p2pexchange [options]` runs a node; `python -m p2pexchange demo` the demo;
`order`, `cancel`, `orders`, `book`, `trades`, `status`, `watch` and `verify` talk to
(or check) a local node."""

from __future__ import annotations

import sys

USAGE_COMMANDS = "demo, order, cancel, orders, book, trades, status, leave, watch, verify"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command == "demo":
        from .demo import main as demo_main
        return demo_main(argv[1:])
    if command == "watch":
        from .client.watch import main as watch_main
        return watch_main(argv[1:])
    if command == "verify":
        from .client.verify import main as verify_main
        return verify_main(argv[1:])
    from .client.commands import COMMANDS
    if command in COMMANDS:
        from .client.commands import main as command_main
        return command_main(argv)
    from .client.cli import main as node_main
    return node_main(argv)


if __name__ == "__main__":
    sys.exit(main())
