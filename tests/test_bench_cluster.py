"""The cluster benchmark runs end to end: 3 node processes, a low load, one JSON line;
and the join benchmark: a newcomer catching up on a short stored history."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.soak
def test_bench_cluster_reports_a_converged_run_with_sane_figures():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_cluster.py"), "--nodes", "3",
         "--rate", "60", "--duration", "3", "--baseline-rate", "15",
         "--baseline-duration", "2", "--resting", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    run = lines[0]
    assert run["converged"] is True and run["baseline"]["converged"] is True
    assert run["nodes"] == 3 and run["refused_orders"] == 0 and run["failed_orders"] == 0
    assert sum(run["refused_by_reason"].values()) == run["refused_orders"]
    assert 0 < run["accepted_per_s"] <= run["offered_per_s"] <= 60 * 1.1
    assert run["orders_not_applied_everywhere"] == 0
    assert 0 < run["applied_everywhere_p50_ms"] <= run["applied_everywhere_p99_ms"]
    assert run["final_everywhere_p99_ms"] is not None
    assert run["applied_everywhere_p50_ms"] <= run["final_everywhere_p50_ms"]
    assert len(run["cpu_us_per_order"]) == len(run["peak_rss_mib"]) == 3
    assert all(c > 0 for c in run["cpu_us_per_order"])
    assert all(20 < m < 4096 for m in run["peak_rss_mib"])
    assert all(20 < m <= p for m, p in zip(run["rss_end_mib"], run["peak_rss_mib"], strict=True))
    assert run["resting_orders"] >= 0 and len(run["checkpoint_n"]) == 3
    # each node kept at most 5 of its orders resting, cancelling the oldest beyond that
    assert run["resting_max_per_node"] == 5 and run["cancels_sent"] > 0
    assert run["cancels_failed"] == 0 and run["cancelled_per_s"] > 0
    assert all(0 <= c < 2 for c in run["idle_cpu_cores"])
    assert all(lag is not None and lag >= 0 for lag in run["loop_lag_p99_ms"])
    assert run["accepted_ratio_vs_baseline"] > 0


@pytest.mark.soak
def test_bench_join_reports_a_newcomer_that_caught_up_with_node0():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_join.py"), "--events", "600",
         "--actions", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert run["events"] == 600 and run["actions_per_event"] == 2
    assert run["newcomer_events"] >= 600  # every event, and node0's digest (the script)
    assert 0 < run["newcomer_api_ready_s"] < run["newcomer_caught_up_s"] < 120
    assert run["baseline_receive_many_s"] > 0 and run["caught_up_over_baseline"] > 0
    assert 20 < run["newcomer_peak_rss_mib"] < 4096 and run["newcomer_cpu_s"] > 0
