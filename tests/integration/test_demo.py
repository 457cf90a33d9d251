"""`fixalloc demo` as a user runs it: exit 0, Σ allocated = filled, every message persisted."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

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


def test_demo_day_ends_with_every_ticket_affirmed_and_nothing_open(tmp_path: Path) -> None:
    """`fixalloc demo --scenario day`: a bust, an account reject, a mismatched and a missing
    AK on a simulated trade date; the sweep reports from 16:30 to 21:00."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--scenario", "day", "--json",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-2000:])
    summary = json.loads(result.stdout)
    assert summary["ok"] and all(summary["checks"].values()), summary["checks"]
    assert [c["at"] for c in summary["checkpoints"]] == [
        "16:30", "18:00", "19:00", "20:00", "20:45", "21:00"]
    first, last = summary["checkpoints"][0], summary["checkpoints"][-1]
    assert first["open_items"].get("account_rejected") == 1  # fixed only after 16:30
    assert last["totals"]["affirmed_pct"] == "100.0" and last["open_items"] == {}
    messages = summary["messages"]
    assert messages["J out"] == 5  # 3 New, the Replace after the bust, the operator's fix
    assert messages["BH out"] >= 1 and messages["AU out"] > 0
    db = Database(f"sqlite:///{summary['database']}")
    try:
        assert [r["checkpoint"] for r in db.sweep_reports(summary["trade_date"])] == [
            c["at"] for c in summary["checkpoints"]]
    finally:
        db.dispose()


def test_demo_approval_holds_the_block_until_two_pms_approve(tmp_path: Path) -> None:
    from gateway.demo_approval import run_approval

    said: list[str] = []
    summary = run_approval(state=tmp_path / "demo", say=said.append)
    assert summary["ok"], summary
    assert summary["held_j_at_broker"] == 0  # nothing went out while it was held
    assert [v["state"] for v in summary["votes"]] == ["pending", "approved"]
    assert summary["j_alloc_id"] == summary["alloc_id"]
    assert summary["approval"]["decided_by"] == "alice,bob"
    assert any("waiting for FOUR-EYES-LARGE: 2 more pm" in line for line in said)
    db = Database(f"sqlite:///{tmp_path / 'demo' / 'gateway' / 'fixalloc.db'}")
    try:
        lines = db.load_allocation_lines(summary["alloc_id"])
        assert len(lines) == summary["j_lines"]
        assert sum(Decimal(x["qty"]) for x in lines) == Decimal(summary["j_quantity"])
    finally:
        db.dispose()


def _scenario(tmp_path: Path, scenario: str) -> dict[str, Any]:
    """`fixalloc demo --scenario <scenario> --json` as a user runs it: exit 0, its summary."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--scenario", scenario, "--json",
         "--state-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def test_demo_rebalance_sends_the_blocks_and_allocates_them_to_the_accounts_that_asked(
        tmp_path: Path) -> None:
    """`fixalloc demo --scenario rebalance`: the CLI's --send as a user runs it."""
    summary = _scenario(tmp_path, "rebalance")
    assert summary["ok"] and summary["daemon_exit"] == 0
    assert summary["js"] == summary["orders"] == summary["blocks"] > 1
    assert summary["mismatched"] == [] and summary["oms_heard"] == []
    sent = json.loads((tmp_path / "demo" / "rebalance" / "sent.json").read_text())
    assert {o["status"] for o in sent["orders"]} <= {"pending_new", "new",
                                                     "partially_filled", "filled"}
    db = Database(f"sqlite:///{tmp_path / 'demo' / 'gateway' / 'fixalloc.db'}")
    try:
        # Every order the desk placed is on record as the desk's D, with the trader.
        ds = db.wire_messages(direction="in", msg_type="D")
        assert len(ds) == summary["orders"]
        assert all("\x0150=tina\x01" in bytes(d["raw"]).decode() for d in ds)
        # ... and the run they came from, with its versions and hashes, with the request.
        run = json.loads((tmp_path / "demo" / "rebalance" / "run.json").read_text())
        [action] = [json.loads(e["detail_json"]) for e in db.events("user_action")
                    if json.loads(e["detail_json"])["operation"] == "orders.submit"]
        assert action["actor"] == "tina" and action["outcome"] == "done"
        assert {k: action["rebalance_run"][k] for k in ("output_hash", "model_version",
                                                        "rulebook_version")} == {
            k: run[k] for k in ("output_hash", "model_version", "rulebook_version")}
    finally:
        db.dispose()


def test_demo_cross_crosses_the_opposite_interest_and_routes_only_the_net(
        tmp_path: Path) -> None:
    """`fixalloc demo --scenario cross`: the rebalance's AAPL sell crosses the buy at the
    reference price; the broker sees only the net buy."""
    summary = _scenario(tmp_path, "cross")
    assert summary["ok"] and summary["crossed_ok"] and summary["mismatched"] == []
    [cross] = summary["crosses"]
    assert (cross["symbol"], cross["qty"], cross["price"]) == ("AAPL", "200", "190.25")
    assert cross["routed"]["sell"] == "0" and int(cross["routed"]["buy"]) > 0
    record = json.loads((tmp_path / "demo" / "rebalance" / "run.json").read_text())
    assert record["crossed_qty"] == "200" and record["prices_version"]["sha256"]


def test_demo_multibroker_sends_one_j_per_broker(tmp_path: Path) -> None:
    """`fixalloc demo --scenario multibroker`: one block, two brokers, two Js."""
    summary = _scenario(tmp_path, "multibroker")
    assert summary["ok"] and summary["daemon_exit"] == 0 and summary["oms_js"] == 2
    a, b = summary["brokers"]["BRKA"], summary["brokers"]["BRKB"]
    assert (a["avg_px"], b["avg_px"]) == ("190.1000", "190.4000")
    assert Decimal(a["j_qty"]) + Decimal(b["j_qty"]) == Decimal(summary["oms_cum_qty"]) == 30_000
    blended = (Decimal(a["j_qty"]) * Decimal("190.10")
               + Decimal(b["j_qty"]) * Decimal("190.40")) / 30_000
    assert Decimal(summary["oms_avg_px"]) == blended.quantize(Decimal("0.00000001"))
