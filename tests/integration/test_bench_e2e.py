"""`fixalloc bench e2e` runs end to end and its figures agree with the database.

A smoke run only: a few blocks while another order's fills flow.
Timings are printed, never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

pytestmark = pytest.mark.fix


def test_e2e_bench_runs_and_measures_every_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three blocks while a background order's fills flow (the quiet case is the same
    run without the second broker's order)."""
    code = main(["bench", "e2e", "--blocks", "3", "--fills-per-block", "4",
                 "--background-fills-per-s", "50", "--timeout", "120",
                 "--state-dir", str(tmp_path / "run"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["ok"] and all(out["checks"].values()), out["checks"]
    assert out["blocks"] == 3 and out["lines_per_block"] > 100
    assert 0 <= out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]
    assert out["last_fragment_max_ms"] >= out["max_ms"]
    assert out["peak_rss_mb"] > 0 and out["daemon_exit"] == 0
    assert out["background_fills_stored"] > 0
