"""The CLI end to end: `order`, `cancel`, `orders`, `book`, `trades`, `status` and
`watch` against real nodes' APIs (the commands run in a worker thread, as they would
in their own process), and the one-line answer when no node runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import trio
from api_client import api_node, eventually
from harness import network

from p2pexchange.client import commands, watch

pytestmark = pytest.mark.network


async def cli(*argv: str, module=commands) -> tuple[int, str]:
    out = io.StringIO()
    code = await trio.to_thread.run_sync(module.main, list(argv), out)
    return code, out.getvalue()


async def test_cli_places_lists_cancels_and_shows_book_trades_and_status(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a") as a, \
            api_node(net, "b", bootstrap=a.node) as b:
        at_a = ("--data-dir", str(tmp_path / "a"))  # the address from the node's data dir
        at_b = ("--api", f"http://127.0.0.1:{b.port}")
        code, out = await cli("order", "sell", "BTC-USD", "0.5", "@", "100", *at_a)
        assert code == 0 and " resting" in out, out
        maker = out.split()[1]
        code, out = await cli("order", "buy", "BTC-USD", "0.2", "@100", "--ioc", *at_a)
        assert code == 0 and "cancelled" in out  # self-trade prevention expired the taker
        code, out = await cli("orders", "--json", *at_a)
        assert [o["order_id"] for o in json.loads(out)["orders"]] == [maker]
        await eventually(lambda: _resting(b), "A's order in B's book")
        code, out = await cli("book", "BTC-USD", *at_b)
        assert code == 0 and "ask" in out and "100" in out and "0.5" in out, out
        code, out = await cli("order", "buy", "BTC-USD", "0.2", "--market", *at_b)
        assert code == 0 and " filled" in out, out
        code, out = await cli("trades", "BTC-USD", *at_b)
        assert "0.2" in out and ("pending" in out or "final" in out), out
        code, out = await cli("orders", *at_a)
        assert maker in out and "partially_filled" in out and "0.2" in out, out
        code, out = await cli("cancel", maker[:12], *at_a)  # a prefix of one's own order
        assert code == 0 and out.strip() == f"cancelled: {maker}", out
        await cli("order", "buy", "ETH-USD", "1", "@", "10", "--post-only", *at_a)
        code, out = await cli("cancel", "--all", *at_a)
        assert code == 0 and out.startswith("cancelled: "), out
        code, out = await cli("orders", *at_a)
        assert out.strip() == "no orders"
        code, out = await cli("status", *at_a)
        assert str(a.node.peer_id) in out and "digest" in out and "members" in out


async def test_cli_errors_are_one_line(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a"):
        at_a = ("--data-dir", str(tmp_path / "a"))
        code, out = await cli("order", "buy", "BTC-USD", "0.5", "@", "100.001", *at_a)
        assert code == 1 and out.strip() == (
            "error: refused: off_tick (price): price '100.001' is not a multiple of 0.01")
        code, out = await cli("cancel", "ab" * 34, *at_a)
        assert code == 1 and "unknown_order" in out and len(out.splitlines()) == 1


async def test_watch_shows_the_ladder_and_trades_from_the_stream(tmp_path):
    async with network(tmp_path) as net, api_node(net, "a") as a:
        await a.call("POST", "/orders", json={"market": "BTC-USD", "side": "buy",
                                              "price": "99.50", "quantity": "1"})
        code, out = await cli("BTC-USD", "--updates", "2", "--data-dir", str(tmp_path / "a"),
                              module=watch)
        assert code == 0
        assert "BTC-USD" in out and "99.5" in out and "digest" in out, out


@pytest.mark.parametrize("command", [["status"], ["orders"], ["watch", "BTC-USD"]])
def test_without_a_running_node_the_cli_says_so_in_one_line(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", "p2pexchange", *command, "--data-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no node running") and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "api.json").write_text('{"url": "http://127.0.0.1:9"}')  # a stale file
    result = subprocess.run([sys.executable, "-m", "p2pexchange", *command, "--data-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("error: no node running")
    assert len(result.stderr.strip().splitlines()) == 1


async def _resting(client) -> bool:
    return client.node.status()["resting"]["BTC-USD"] == 1


def test_a_command_asks_a_busy_node_again_and_gives_up_after_a_while(monkeypatch):
    """503 node_busy means the node refused before doing anything: the CLI asks again
    (for up to BUSY_RETRY_S), and then says why it gave up."""
    import argparse

    import httpx

    busy = {"error": {"reason": "node_busy", "message": "event loop 283 ms behind"}}
    replies = [httpx.Response(503, json=busy), httpx.Response(503, json=busy),
               httpx.Response(200, json={"ok": True})]
    asked = []

    def request(method, url, **kwargs):
        asked.append((method, url))
        return replies.pop(0)

    monkeypatch.setattr(httpx, "request", request)
    monkeypatch.setattr(commands, "BUSY_RETRY_PAUSE_S", 0.01)
    args = argparse.Namespace(api="http://127.0.0.1:1", data_dir=".", json=False)
    assert commands.call(args, "POST", "/orders", json={}) == {"ok": True}
    assert asked == [("POST", "http://127.0.0.1:1/orders")] * 3

    monkeypatch.setattr(commands, "BUSY_RETRY_S", 0.05)
    monkeypatch.setattr(httpx, "request", lambda method, url, **kw: httpx.Response(503, json=busy))
    with pytest.raises(commands.CommandError, match="node_busy: event loop 283 ms behind"):
        commands.call(args, "GET", "/status")
    other = {"error": {"reason": "unknown_market", "message": "no market XYZ"}}
    monkeypatch.setattr(httpx, "request", lambda method, url, **kw: httpx.Response(400, json=other))
    with pytest.raises(commands.CommandError, match="unknown_market"):  # never asked again
        commands.call(args, "POST", "/orders", json={})
