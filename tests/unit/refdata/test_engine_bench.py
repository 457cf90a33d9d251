"""`fixalloc bench engine` reports figures named for what they measure (never asserts timings)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gateway import engine_cli

TIMINGS = ("in_process_prepare_ms", "in_process_cold_ms", "in_process_warm_median_ms")
POOL_TIMINGS = ("pool_start_ms", "pool_prepare_ms", "pool_cold_ms", "pool_warm_median_ms")


def test_bench_in_process_only() -> None:
    """One worker: in-process figures (cold apart from warm), the parent's own peak RSS."""
    res = engine_cli.run_bench(40, 2, 1, 2)
    for key in TIMINGS:
        assert Decimal(res[key]) >= 0
    assert not any(k.startswith("pool_") or k.startswith("speedup") for k in res)
    assert Decimal(res["parent_peak_rss_mib"]) > 0 and res["worker_peak_rss_mib"] == []
    assert "peak_rss_mib" not in res and "median_ms" not in res


def test_bench_forced_pool_is_observed_and_reports_each_worker() -> None:
    """A forced 2-worker pool: use observed from the rounds sent through it, the same
    decision as in-process, and one peak RSS per worker process (partition 0 is hosted)."""
    res = engine_cli.run_bench(40, 2, 2, 2, force_pool=True)
    for key in TIMINGS + POOL_TIMINGS:
        assert Decimal(res[key]) >= 0
    assert res["pool_used"] is True and Decimal(res["pool_rounds_per_decision"]) > 0
    assert res["identical_decision"] is True
    assert Decimal(res["speedup_pool_vs_in_process"]) > 0
    assert len(res["worker_peak_rss_mib"]) == 1 and Decimal(res["worker_peak_rss_mib"][0]) > 0
    assert "speedup_vs_one_worker" not in res


def test_bench_pool_below_threshold_is_reported_unused(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Below the account threshold allocate() stays in-process: pool_used says so."""
    assert engine_cli.main(["bench", "engine", "--accounts", "40", "--rules", "2",
                            "--workers", "2", "--repeats", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pool_used"] is False and res["pool_rounds_per_decision"] == "0.0"
    assert res["identical_decision"] is True
