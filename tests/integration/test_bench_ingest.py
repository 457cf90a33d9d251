"""`fixalloc bench ingest` runs end to end and its figures agree with the database.

A smoke run: a few dozen fills over two broker processes, through the bare relay and
through fixalloc in both durability modes. Timings are printed, never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

pytestmark = pytest.mark.fix


def test_ingest_bench_runs_and_its_counts_are_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "ingest", "--fills", "60", "--orders", "3", "--brokers", "2",
                 "--timeout", "120", "--state-dir", str(tmp_path / "run"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["ok"] and all(out["checks"].values()), out["checks"]
    assert out["fills"] == out["relay"]["fills"] == 60
    for mode in ("full", "normal"):
        run = out["fixalloc"][mode]
        assert run["fills"] == run["stored_fills"] == 60
        assert run["daemon_exit"] == 0 and run["peak_rss_mb"] > 0
        # Both printed rounded: the ratio to 3 decimals, the rates to 1.
        assert out["ratios"][mode] == pytest.approx(
            run["fills_per_s"] / out["relay"]["fills_per_s"], abs=0.001)
    assert out["ratio"] == out["ratios"]["full"]
    # Both brokers were used: their fills are in the relay's and fixalloc's stores.
    assert sorted(p.name for p in (tmp_path / "run" / "full").glob("BRK*.json")) == [
        "BRKA.json", "BRKB.json"]
