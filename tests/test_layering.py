"""The package's dependency direction, read from the imports (ARCHITECTURE.md, Layout).

client -> node -> net, store -> core; sim uses core only; nothing below knows who
drives it. Every import statement counts, including those inside functions.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "p2pexchange"

# What the pure core may not touch: I/O, concurrency, clocks, randomness, the network.
CORE_FORBIDDEN = ("trio", "sqlite3", "socket", "time", "datetime", "random", "os", "asyncio",
                  "threading", "subprocess", "libp2p.network", "libp2p.host",
                  "libp2p.pubsub", "libp2p.kad_dht", "libp2p.transport",
                  "libp2p.stream_muxer", "libp2p.security", "multiaddr",
                  "p2pexchange.net", "p2pexchange.node", "p2pexchange.store",
                  "p2pexchange.client", "p2pexchange.sim", "p2pexchange.demo")


def module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path, root: pathlib.Path = PACKAGE.parent) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def modules(folder: str = "") -> list[pathlib.Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def hits(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_the_core_imports_no_io_no_clock_no_randomness_and_nothing_above_it(path):
    assert hits(imports_of(path), CORE_FORBIDDEN) == []


NODE_LEVEL = [PACKAGE / name
              for name in ("node.py", "store.py", "feed.py", "status.py", "intake.py",
                           "looplag.py", "start.py")]


@pytest.mark.parametrize("path", [*modules("net"), *NODE_LEVEL], ids=lambda p: p.name)
def test_the_node_and_the_network_import_nothing_that_drives_them(path):
    assert hits(imports_of(path), ("p2pexchange.client", "p2pexchange.demo",
                                   "p2pexchange.sim", "p2pexchange.__main__")) == []


@pytest.mark.parametrize("path", modules("net"), ids=lambda p: p.name)
def test_the_network_parts_do_not_import_the_node(path):
    assert hits(imports_of(path), ("p2pexchange.node", "p2pexchange.store")) == []


@pytest.mark.parametrize("path", modules("sim"), ids=lambda p: p.name)
def test_the_simulation_uses_only_the_core(path):
    ours = {n for n in imports_of(path) if n.startswith("p2pexchange")}
    assert all(n.startswith(("p2pexchange.core", "p2pexchange.sim")) for n in ours), ours


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The check above can fail: a core module that imports trio is caught."""
    bad = tmp_path / "p2pexchange" / "core" / "probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..net import wire\n\ndef f():\n    import time\n")
    assert hits(imports_of(bad, tmp_path), CORE_FORBIDDEN) == [
        "p2pexchange.net", "p2pexchange.net.wire", "time"]


SHELL = [*modules("net"), *modules("client"), *NODE_LEVEL, PACKAGE / "demo.py"]


def test_no_shell_module_is_longer_than_it_can_be_read_in_one_sitting():
    long = {p.name: n for p in SHELL if (n := len(p.read_text().splitlines())) > 310}
    assert long == {}


def test_no_shell_function_is_longer_than_a_screen():
    long = {f"{p.name}:{f.name}": f.end_lineno - f.lineno + 1
            for p in SHELL for f in ast.walk(ast.parse(p.read_text()))
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            and f.end_lineno - f.lineno + 1 > 45}
    assert long == {}
