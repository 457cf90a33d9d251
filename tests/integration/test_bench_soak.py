"""Smoke test of `fixalloc bench soak` (the 30-minute run is the bench itself): it runs,
and its figures agree with each other and with what the simulators did. No timing is
asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

pytestmark = pytest.mark.fix


def test_soak_bench_runs_and_its_figures_are_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "soak", "--minutes", "0.25", "--blocks-per-minute", "48",
                 "--fills-per-block", "3", "--interval-seconds", "4",
                 "--state-dir", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert all(out["checks"].values()) and out["errors"] == 0 and out["daemon_exit"] == 0
    assert out["blocks_sent"] == out["blocks_done"] >= 10
    assert out["fills_sent"] == 3 * out["blocks_sent"]
    assert sum(r["sent"] for r in out["intervals"]) == out["blocks_sent"]
    assert len(out["intervals"]) >= 3
    for key in ("block_time_ratio_last_first", "j_p99_ratio_last_first",
                "rss_growth_pct_after_warmup"):
        assert key in out
    assert out["first_block_ms"] > 0 and out["last_j_p99_ms"] >= 0
    assert out["db_bytes_per_block"] > 0 and out["fix_store_bytes_per_block"] > 0
    assert all(r["rss_mib"] and r["orders_in_memory"] is not None for r in out["intervals"])
