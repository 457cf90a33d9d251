"""Smoke test of `fixalloc bench bigbook` (the 100,000-account run is the bench itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

pytestmark = pytest.mark.fix


def test_bigbook_bench_sends_a_fragmented_j_and_reports_its_timing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "bigbook", "--accounts", "450", "--max-lines-per-j", "100",
                 "--qty", "90000", "--workers", "0", "--state-dir", str(tmp_path),
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["accounts"] == 450 and out["lines"] == 450 and out["fragments"] == 5
    assert out["allocated"] == out["filled"] == "90000"
    assert all(out["checks"].values())
    assert 0 < out["last_fill_to_first_fragment_ms"] <= out["last_fill_to_last_fragment_ms"]
    assert out["daemon_peak_rss_mib"] > 0
