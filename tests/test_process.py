"""Node processes as a user runs them: CLI errors, SIGKILL and restart, clean SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.network


def start(data_dir, *args) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "p2pexchange", "--data-dir", str(data_dir),
         "--api-port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if line.startswith("client API on 127.0.0.1:"):
            return proc, int(line.rsplit(":", 1)[1])
        assert time.monotonic() < deadline, "node did not start"
    raise AssertionError(f"node exited with {proc.wait()}")


def api(port: int, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", json=body, timeout=40)


def test_sigkilled_node_restarts_from_its_store_without_reusing_a_seq(tmp_path):
    proc, port = start(tmp_path, "--auto-trade", "--rate", "20")
    try:
        time.sleep(3)
        before = api(port, "GET", "/status").json()
        assert before["own_seq"] > 0
    finally:
        proc.kill()  # SIGKILL: no chance to persist anything more
        proc.wait()
    proc, port = start(tmp_path)
    try:
        after = api(port, "GET", "/status").json()
        assert after["peer_id"] == before["peer_id"]
        assert after["own_seq"] >= before["own_seq"]  # nothing it had accepted is lost
        placed = api(port, "POST", "/orders", {"market": "BTC-USD", "side": "buy",
                                               "price": "100.00", "quantity": "0.5"})
        assert placed.status_code == 201, placed.text
        assert placed.json()["outcome"] in ("resting", "partially_filled", "filled")
        assert api(port, "GET", "/status").json()["own_seq"] == after["own_seq"] + 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0  # clean shutdown exits 0


def test_api_rejects_nonsense_with_a_reason(tmp_path):
    proc, port = start(tmp_path)
    try:
        order = {"market": "BTC-USD", "side": "buy", "price": "1", "quantity": "1"}
        cases = [
            ("POST", "/orders", {**order, "market": "DOGE-USD"}, 422, "unknown_market"),
            ("POST", "/orders", {**order, "side": "up"}, 422, "invalid"),
            ("POST", "/orders", {**order, "price": "1.001"}, 422, "off_tick"),
            ("POST", "/orders", {**order, "price": 1.5}, 422, "invalid"),
            ("DELETE", "/orders/zz", None, 422, "bad_order_id"),
            ("POST", "/launch", {}, 404, "not_found"),
        ]
        for method, path, body, code, reason in cases:
            reply = api(port, method, path, body)
            assert reply.status_code == code, (path, body, reply.text)
            assert reply.json()["error"]["reason"] == reason, (path, body, reply.text)
        assert api(port, "GET", "/status").status_code == 200  # still serving
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


@pytest.mark.parametrize("args, message", [
    (["--bootstrap", "/ip4/not-an-ip/tcp/1"], "malformed multiaddr"),
    (["--bootstrap", "/ip4/127.0.0.1/tcp/1"], "must end in /p2p/"),
    (["--listen", "nonsense"], "malformed multiaddr"),
    (["--market", "DOGE-USD"], "invalid choice"),
    (["--rate", "-1"], "--rate"),
    (["--batch-interval", "0"], "--batch-interval must be within"),
    (["--batch-interval", "nan"], "--batch-interval must be within"),
])
def test_nonsense_cli_arguments_give_a_clear_error(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "p2pexchange", "--data-dir", str(tmp_path),
                             *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unreachable_bootstrap_gives_a_clear_error(tmp_path):
    peer = "12D3KooWH6YUvyF571DoWY8pA2wsgAs2cYQ7CyLDhB2EWkspWrAH"
    result = subprocess.run([sys.executable, "-m", "p2pexchange", "--data-dir", str(tmp_path),
                             "--bootstrap", f"/ip4/127.0.0.1/tcp/1/p2p/{peer}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot reach bootstrap peer" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _demo_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "p2pexchange-demo-" in line]


@pytest.mark.soak
def test_demo_converges_and_leaves_no_process_behind():
    result = subprocess.run([sys.executable, "-m", "p2pexchange", "demo", "--nodes", "4",
                             "--duration", "8"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["converged"] is True and summary["nodes"] == 4
    assert summary["events"] > 0 and len(set(summary["digests"])) == 1
    assert _demo_processes() == []


@pytest.mark.soak
def test_interrupted_demo_stops_every_node():
    proc = subprocess.Popen([sys.executable, "-m", "p2pexchange", "demo", "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "trading for" in line:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130
    assert "interrupted: all nodes stopped" in rest and "Traceback" not in rest
    assert _demo_processes() == []
