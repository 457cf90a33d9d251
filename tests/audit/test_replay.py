"""`fixalloc audit replay` on the demo's real record: identical, and tampering is named.

Every test runs the real CLI (`python -m gateway audit replay`) as a subprocess against
the SQLite database a real `fixalloc demo` wrote; tampering is done with sqlite3 on a
private copy, the way an edited record would look to an auditor.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import engine
from gateway.audit.replay import replay_all, replay_allocation
from gateway.audit.replay_cli import open_read_only

pytestmark = pytest.mark.fix

ROOT = Path(__file__).resolve().parents[2]


def replay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "replay", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def db_file(state: Path) -> Path:
    return state / "gateway" / "fixalloc.db"


def stored(state: Path, alloc_id: str) -> dict[str, Any]:
    """The stored decision of an allocation, read straight from SQLite (not via the code
    under test): its canonical text and the row's hashes."""
    with sqlite3.connect(db_file(state)) as conn:
        text, packed, inputs, trade_date = conn.execute(
            "SELECT d.canonical_json, d.canonical_zlib, d.inputs_hash, a.trade_date "
            "FROM allocations a JOIN decisions d ON d.decision_id = a.decision_id "
            "WHERE a.alloc_id = ?", (alloc_id,)).fetchone()
    text = text if text is not None else zlib.decompress(packed).decode("utf-8")
    return {"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "inputs_hash": inputs, "trade_date": trade_date}


def test_demo_allocation_replays_byte_identical(demo_record: tuple[Path, dict[str, Any]]
                                                ) -> None:
    state, summary = demo_record
    alloc_id = summary["alloc_id"]
    want = stored(state, alloc_id)
    result = replay(alloc_id, "--state-dir", state)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{alloc_id} (New): identical"
    assert f"canonical decision sha256: stored {want['sha256']} = replayed" in result.stdout
    assert f"inputs hash: stored {want['inputs_hash']} matches" in result.stdout
    assert f"decided by {engine.ENGINE_VERSION}, replayed with {engine.ENGINE_VERSION}" \
        in result.stdout
    assert f"({summary['fills']} fills, 0 busts/corrections)" in result.stdout


def test_json_output_carries_both_hashes(demo_record: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_record
    want = stored(state, summary["alloc_id"])
    result = replay(summary["alloc_id"], "--state-dir", state, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["identical"] is True and doc["outcome"] == "identical"
    assert doc["stored_sha256"] == doc["replayed_sha256"] == want["sha256"]
    assert doc["inputs_hash_matches"] is True
    assert doc["differences"] == []


def test_replay_of_the_trade_date(demo_record: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_record
    day = stored(state, summary["alloc_id"])["trade_date"]
    result = replay("--date", day, "--state-dir", state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{summary['alloc_id']} (New): identical",
                                          "1 of 1 identical"]
    empty = replay("--date", "2001-01-02", "--state-dir", state)
    assert empty.returncode == 0
    assert empty.stdout.strip() == "0 of 0 identical on 2001-01-02"


def test_python_api_returns_the_same_verdict(demo_record: tuple[Path, dict[str, Any]]
                                             ) -> None:
    state, summary = demo_record
    want = stored(state, summary["alloc_id"])
    with open_read_only(f"sqlite:///{db_file(state)}") as db:
        one = replay_allocation(db, summary["alloc_id"])
        every = replay_all(db, trade_date=want["trade_date"])
    assert one.identical and one.replayed_sha256 == want["sha256"]
    assert [r.alloc_id for r in every] == [summary["alloc_id"]]
    assert every[0].stored_engine_version == engine.ENGINE_VERSION


def _fingerprint(path: Path) -> tuple[str, int, list[str]]:
    return (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns,
            sorted(p.name for p in path.parent.iterdir()))


def test_replay_changes_nothing(demo_copy: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_copy
    db = db_file(state)
    before = _fingerprint(db)
    assert replay(summary["alloc_id"], "--state-dir", state).returncode == 0
    # A cleanly closed database: not a byte, not the mtime, not even a -wal/-shm file.
    assert _fingerprint(db) == before
    # With a writer holding the database open in WAL mode (a running gateway), the replay
    # reads through the WAL, read-only, and the database file is still untouched.
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("SELECT count(*) FROM decisions").fetchone()
        content, mtime, _ = _fingerprint(db)
        result = replay(summary["alloc_id"], "--state-dir", state)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _fingerprint(db)[:2] == (content, mtime)
    finally:
        writer.close()


def _tamper(state: Path, sql: str, *params: Any) -> None:
    with sqlite3.connect(db_file(state)) as conn:
        assert conn.execute(sql, params).rowcount == 1
    os.sync()


def test_a_changed_fill_price_is_named(demo_copy: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_copy
    alloc_id = summary["alloc_id"]
    want = stored(state, alloc_id)
    _tamper(state, "UPDATE broker_reports SET last_px = '191.40' WHERE id = "
                   "(SELECT min(id) FROM broker_reports WHERE exec_type = 'F')")
    result = replay(alloc_id, "--state-dir", state)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith(f"{alloc_id} (New): DIFFERS: differs: avg_px: stored "
                          f"{summary['avg_px']}, replayed 190.5675")
    assert f"inputs hash: stored {want['inputs_hash']} differs" in out
    # The decision recorded which reports it saw, so the changed price is replayed as is.
    assert "as recorded with the decision" in out
    # Per account: every line's price, and the first accounts by id named.
    assert "- lines of 195 accounts: SMA0001 avg_px 190.4425 -> 190.5675" in out
    day = replay("--date", want["trade_date"], "--state-dir", state)
    assert day.returncode == 1
    assert "0 of 1 identical" in day.stdout and f"{alloc_id} (New): DIFFERS" in day.stdout


def test_engine_version_named_when_it_changed(demo_copy: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_copy
    _tamper(state, "UPDATE decisions SET engine_version = '0-test'")
    same = replay(summary["alloc_id"], "--state-dir", state)
    assert same.returncode == 0  # another engine version, same decision: still identical
    _tamper(state, "UPDATE broker_reports SET last_px = '191.40' WHERE id = "
                   "(SELECT min(id) FROM broker_reports WHERE exec_type = 'F')")
    result = replay(summary["alloc_id"], "--state-dir", state)
    assert result.returncode == 1
    assert (f"decided by engine version 0-test, replayed with {engine.ENGINE_VERSION}; "
            "differs: avg_px") in result.stdout


@pytest.mark.parametrize(("table", "column", "old", "new", "named"), [
    ("rulebook_versions", "files_json", "max_pct_nav: 10", "max_pct_nav: 12",
     "the stored rule files of {rb} now load as"),
    ("refdata_versions", "content_json", "SMA0001,SMA-CORE,active,16000000.00,3200000.00",
     "SMA0001,SMA-CORE,active,16000000.00,3100000.00",
     "the stored reference data {rd} now loads as"),
])
def test_a_changed_stored_version_is_named(demo_copy: tuple[Path, dict[str, Any]], table: str,
                                           column: str, old: str, new: str, named: str
                                           ) -> None:
    state, summary = demo_copy
    with sqlite3.connect(db_file(state)) as conn:
        rb, rd = conn.execute("SELECT rulebook_version, refdata_version FROM decisions"
                              ).fetchone()
        text = conn.execute(f"SELECT {column} FROM {table}").fetchone()[0]
    assert old in text
    _tamper(state, f"UPDATE {table} SET {column} = ?", text.replace(old, new))
    result = replay(summary["alloc_id"], "--state-dir", state)
    assert result.returncode == 1, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{summary['alloc_id']} (New): CANNOT REPLAY: cannot replay: "
                            + named.format(rb=rb[:12], rd=rd[:12])), first


def test_a_missing_rulebook_version_is_named(demo_copy: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_copy
    _tamper(state, "DELETE FROM rulebook_versions")
    result = replay("--date", stored(state, summary["alloc_id"])["trade_date"],
                    "--state-dir", state)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{summary['alloc_id']} (New): CANNOT REPLAY: cannot replay: rulebook version "
        f"{summary['rulebook_version'][:12]} has no stored rule files",
        "0 of 1 identical"]


def test_a_cancel_is_not_counted(demo_copy: tuple[Path, dict[str, Any]]) -> None:
    """A J Cancel points at the decision it cancels and has none of its own."""
    state, summary = demo_copy
    alloc_id = summary["alloc_id"]
    cancel = alloc_id.replace("-J1", "-J2")
    _tamper(state, "INSERT INTO allocations (alloc_id, order_id, decision_id, broker, "
                   "alloc_trans_type, alloc_type, quantity, avg_px, trade_date, settl_date, "
                   "status, created_at, ref_alloc_id, fragments) SELECT ?, order_id, "
                   "decision_id, broker, '2', alloc_type, quantity, avg_px, trade_date, "
                   "settl_date, 'sent', created_at, alloc_id, 1 FROM allocations "
                   "WHERE alloc_id = ?", cancel, alloc_id)
    day = stored(state, alloc_id)["trade_date"]
    result = replay("--date", day, "--state-dir", state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{alloc_id} (New): identical",
        f"{cancel} (Cancel): not counted: a J Cancel of {alloc_id}: it carries no decision "
        "of its own (not counted)",
        "1 of 1 identical",
        "(1 J Cancel not counted: a Cancel carries no decision of its own)"]


def test_unknown_allocation(demo_record: tuple[Path, dict[str, Any]]) -> None:
    state, _ = demo_record
    result = replay("FA-NOSUCH-J1", "--state-dir", state)
    assert result.returncode == 1
    assert result.stdout.strip() == "FA-NOSUCH-J1: CANNOT REPLAY: no allocation FA-NOSUCH-J1 " \
                                    "in the record"
    assert "Traceback" not in result.stderr


def test_missing_state_dir_is_a_config_error(tmp_path: Path) -> None:
    result = replay("X-J1", "--state-dir", tmp_path / "nowhere")
    assert result.returncode == 78
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"fixalloc audit replay: {tmp_path / 'nowhere'}: no gateway "
                                    f"database at {tmp_path / 'nowhere' / 'gateway'}")
    missing = replay("X-J1", "--config", tmp_path / "none.toml")
    assert missing.returncode == 78 and "none.toml" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("args", [["--date", "2026-02-30"], ["A-J1", "--date", "2026-01-02"],
                                  []])
def test_usage_errors(demo_record: tuple[Path, dict[str, Any]], args: list[str]) -> None:
    state, _ = demo_record
    result = replay(*args, "--state-dir", state)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip()


# -- the live path's own decide() and store(), in process: a lot-relief sell ----------------


@dataclass
class _At:
    at: datetime

    def now(self) -> datetime:
        return self.at


def test_a_lot_relief_sell_replays_under_its_own_versions(tmp_path: Path) -> None:
    """A sell whose lines relieve tax lots, decided and stored by AllocationFlow itself,
    replays identical although a newer reference-data version is stored after it (an
    operator's reload): the replay reads the version the decision names."""
    from gateway import refdata as refdata_files
    from gateway.allocation_flow import AllocationFlow
    from gateway.config import load_config
    from gateway.demo import demo_config
    from gateway.orders import Order
    from gateway.persistence.store import Database
    from gateway.reference import ReferenceData

    config = load_config(str(demo_config(tmp_path, oms_port=1, broker_port=2, http_port=3)))
    db = Database(config.database_url)
    db.migrate()
    now = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    data = ReferenceData.load(config)
    db.save_refdata_version(version=data.version, loaded_at=now, actor="test",
                            files=data.files, diff_summary=None)
    rules = config.resolve(config.refdata.rules)
    rulebook = refdata_files.load_rulebook(rules)
    db.save_rulebook_version(version=rulebook.version, loaded_at=now, actor="test",
                             source=str(rules), content_json=rulebook.canonical_json(),
                             diff_summary=None, files={p.name: p.read_text(encoding="utf-8")
                                                       for p in refdata_files.rule_files(rules)})
    order = Order(order_id="FA20261125SELL", oms_session="FIX.4.4:FIXALLOC->OMS1",
                  oms_cl_ord_id="SELL-1", book="SMA-CORE", symbol="AAPL", side="sell",
                  order_qty=Decimal(6000), ord_type="2", price=Decimal("189"),
                  time_in_force="0", broker="BRKA", trade_date="2026-11-25", status="filled")
    db.insert_order({"order_id": order.order_id, "oms_session": order.oms_session,
                     "oms_cl_ord_id": order.oms_cl_ord_id, "book": order.book,
                     "symbol": order.symbol, "side": order.side, "order_qty": "6000",
                     "ord_type": "2", "price": "189", "time_in_force": "0", "broker": "BRKA",
                     "status": "filled", "trade_date": order.trade_date, "created_at": now,
                     "updated_at": now})
    for i, (qty, px) in enumerate(((Decimal(3000), Decimal("190.10")),
                                   (Decimal(3000), Decimal("190.35")))):
        db.record_broker_report({
            "session_id": "FIX.4.4:FIXALLOC->BRKA", "broker_order_id": "B1",
            "exec_id": f"X{i}", "trade_date": order.trade_date, "order_id": order.order_id,
            "cl_ord_id": order.order_id, "exec_type": "F", "ord_status": "2",
            "last_qty": str(qty), "last_px": str(px), "cum_qty": str(3000 * (i + 1)),
            "avg_px": "190.225", "leaves_qty": "0", "text": None, "seq_num": 5 + i,
            "poss_dup": False, "received_at": now, "transact_time": None})
        order.ledger.apply_fill(f"X{i}", qty, px)
    flow = AllocationFlow(config, db, None, data,  # type: ignore[arg-type]
                          type("Rulebooks", (), {"current": lambda self: rulebook})(),
                          engine.InProcessExecutor(), _At(now + timedelta(seconds=1)))
    decided = flow.decide(order)
    assert decided is not None, db.events()
    allocation, lines = flow.store(order, decided[0], rotation_offset=decided[1],
                                   refdata_version=data.version)
    assert any(line["lots_json"] for line in lines)  # lots relieved per line
    # The accounts file changes and is reloaded after the decision: a newer version.
    changed = {p: t.replace("SMA0001,SMA-CORE,active,16000000.00,3200000.00",
                            "SMA0001,SMA-CORE,frozen,16000000.00,3200000.00")
               for p, t in data.files.items()}
    assert changed != dict(data.files)
    db.save_refdata_version(version="f" * 64, loaded_at=now + timedelta(hours=1),
                            actor="operator", files=changed, diff_summary="SMA0001 frozen")
    db.dispose()
    result = replay(allocation["alloc_id"], "--config", config.source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{allocation['alloc_id']} (New): identical")
    assert "(2 fills, 0 busts/corrections)" in result.stdout
