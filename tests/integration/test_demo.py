"""`fixalloc demo` as a user runs it: exit 0, Σ allocated = filled, every message persisted."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.persistence.store import Database

pytestmark = pytest.mark.fix


def test_demo_allocates_the_block_and_persists_every_message(tmp_path: Path) -> None:
    """The shipped demo runs end to end on loopback and its database holds the whole run."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--json", "--state-dir", str(tmp_path),
         "--fills", "8", "--interval-ms", "20"],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["allocated_equals_filled"] is True
    assert Decimal(summary["total_allocated"]) == Decimal(500_000)
    assert summary["accounts_allocated"] > 150 and summary["accounts_in_book"] == 200
    assert summary["p_status"] == "accepted"
    assert summary["all_messages_persisted"] is True
    assert summary["fills"] == 8 and summary["last_fill_to_j_ms"] is not None
    assert {x["status"] for x in summary["explained"]} == {"excluded", "capped"}
    db = Database(f"sqlite:///{tmp_path / 'gateway' / 'fixalloc.db'}")
    try:
        assert db.count("fix_messages") == sum(
            c["in"] + c["out"] for c in summary["fix_messages_persisted"].values())
        assert len(db.load_allocation_lines(summary["alloc_id"])) == summary["accounts_allocated"]
    finally:
        db.dispose()
    assert (tmp_path / "fixalloc.log").read_text().count('"node.stopped"') == 1
