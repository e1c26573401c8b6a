"""`python -m p2pexchange [options]` runs a node; `python -m p2pexchange demo` the demo."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main
        return demo_main(argv[1:])
    from .client.cli import main as node_main
    return node_main(argv)


if __name__ == "__main__":
    sys.exit(main())
