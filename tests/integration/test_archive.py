"""`fixalloc archive`: closed days leave the database for files that verify and restore.

Runs on SQLite and on the test PostgreSQL. The days are written through the gateway's own
store calls, with the shapes a real day leaves (a 2 KB J, fills, a decision document, lines,
an AK, an exception, a sweep report, per-order and order-less audit events).
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.archive import TABLES
from gateway.cli import main
from gateway.persistence.store import Database
from tests.support.harness import Ports, write_config

# The decision rows are crafted by hand (rulebook "r1", inputs hash "h") to give the days
# their shapes: nothing the engine decided, so nothing for the after-test replay.
pytestmark = pytest.mark.no_replay("decision rows are crafted by hand to exercise the archive")

DAYS = ("2026-11-19", "2026-11-20", "2026-11-23")


def _at(day: str, hour: int) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")


def _fill_day(db: Database, day: str, n: int) -> None:
    """One block of 3 accounts on `day`: order, fills, J, lines, an AK, wire, events."""
    oid = f"FA{day.replace('-', '')}{n:04d}"
    now = _at(day, 15)
    db.insert_order({
        "order_id": oid, "oms_session": "FIX.4.4:FIXALLOC->OMS1", "oms_cl_ord_id": f"C{oid}",
        "book": "SMA-CORE", "symbol": "AAPL", "side": "buy", "order_qty": "300",
        "ord_type": "2", "price": "190.25", "time_in_force": "0", "broker": "BRKA",
        "status": "filled", "cum_qty": "300", "avg_px": "190.1", "leaves_qty": "0",
        "trade_date": day, "created_at": now, "updated_at": now})
    for i in range(2):
        db.record_broker_report({
            "session_id": "FIX.4.4:FIXALLOC->BRKA", "broker_order_id": f"B{oid}",
            "exec_id": f"{oid}-X{i}", "trade_date": day, "order_id": oid, "cl_ord_id": oid,
            "exec_type": "F", "ord_status": "1", "last_qty": "150", "last_px": "190.1",
            "cum_qty": str(150 * (i + 1)), "avg_px": "190.1", "leaves_qty": "0", "text": None,
            "seq_num": 7 + i, "poss_dup": False, "received_at": now, "transact_time": None})
    alloc_id = f"{oid}-J1"
    document = json.dumps({"lines": [{"account_id": f"SMA{i:04d}", "qty": "100"}
                                     for i in range(3)]}, sort_keys=True)
    db.save_allocation(
        {"decision_id": f"D{oid}", "order_id": oid, "method": "pro_rata",
         "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c", "decided_at": now,
         "canonical_json": document},
        {"alloc_id": alloc_id, "order_id": oid, "decision_id": f"D{oid}", "broker": "BRKA",
         "alloc_trans_type": "0", "alloc_type": "1", "quantity": "300", "avg_px": "190.1",
         "trade_date": day, "settl_date": day, "status": "accepted", "created_at": now},
        [{"individual_alloc_id": f"{alloc_id}-{i:05d}", "alloc_id": alloc_id,
          "account_id": f"SMA{i:04d}", "qty": "100", "avg_px": "190.1",
          "ticket_state": "affirmed"} for i in range(1, 4)])
    db.record_confirmation({
        "session_id": "FIX.4.4:FIXALLOC->BRKA", "confirm_id": f"CNF{oid}", "trans_type": "0",
        "confirm_type": "2", "confirm_status": "4", "alloc_id": alloc_id,
        "individual_alloc_id": f"{alloc_id}-00001", "account_id": "SMA0001",
        "economics_json": "{}", "outcome": "affirmed", "received_at": now})
    j = (b"8=FIX.4.4\x019=9\x0135=J\x0170=" + alloc_id.encode()
         + b"".join(b"\x0179=SMA%04d\x0180=100\x01467=%s-%05d" % (i, alloc_id.encode(), i)
                    for i in range(60)) + b"\x0158=caf\xe9\x0110=000\x01")
    for raw, mtype, ref in ((j, "J", alloc_id), (b"8=FIX.4.4\x0135=P\x0187=0\x01", "P", alloc_id)):
        db.append_wire(session_id="FIX.4.4:FIXALLOC->BRKA", direction="out", msg_type=mtype,
                       seq_num=3, poss_dup=False, raw=raw, ref_id=ref, recorded_at=now)
    db.append_event("order_received", recorded_at=now, order_id=oid, detail={"n": n})
    db.append_event("logon", recorded_at=now, session_id="FIX.4.4:FIXALLOC->BRKA")
    db.open_exception("late_ak", reason="r", next_step="s", opened_at=now, order_id=oid,
                      alloc_id=alloc_id, trade_date=day)
    db.save_sweep_report(trade_date=day, checkpoint="21:00", ran_at=_at(day, 23),
                         report={"day": day})
    db.mark_released(oid, now)


def _resolve(db: Database, day: str) -> None:
    for exc in db.exceptions(state="open", trade_date=day):
        db.resolve_exceptions(at=_at(day, 22), by="ops", resolution="fixed",
                              exception_id=exc["id"])


def _dump(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every archived table's rows as the store's readers give them back."""
    out: dict[str, list[dict[str, Any]]] = {}
    with db.engine.connect() as conn:
        for table in TABLES:
            key = list(table.primary_key.columns)
            # Datetimes as UTC text: PostgreSQL's zone object and SQLite's differ in repr only.
            rows = [{k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v
                     for k, v in r.items()}
                    for r in conn.execute(select(table).order_by(*key)).mappings()]
            for r in rows:
                r.pop("compressed", None)
                r.pop("canonical_zlib", None)
                r.pop("canonical_json", None)
                r.pop("raw", None)
            out[table.name] = rows
    out["wire"] = [{"id": m["id"], "raw": m["raw"]} for m in db.wire_messages()]
    out["documents"] = [{"d": d["decision_id"],
                         "json": (db.load_decision(d["decision_id"]) or {})["canonical_json"]}
                        for d in out["decisions"]]
    return out


def _archive(tmp_path: Path, database_url: str, before: str, *extra: str) -> int:
    cfg = write_config(tmp_path, Ports.free(), database_url=database_url)
    return main(["archive", "--config", str(cfg), "--before", before,
                 "--dir", str(tmp_path / "archive"), *extra])


def test_closed_days_go_to_files_that_verify_and_restore_exactly(
        tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = Database(database_url)
    db.migrate()
    for day in DAYS:
        _fill_day(db, day, 1)
        _fill_day(db, day, 2)
    _resolve(db, DAYS[0])
    before = _dump(db)

    # Day 2 still has open exceptions: day 1 goes, the run stops there and says why.
    assert _archive(tmp_path, database_url, DAYS[2]) == 1
    said = capsys.readouterr().out
    assert f"archived {DAYS[0]}" in said and f"stopped at {DAYS[1]}" in said
    assert "2 open exception(s)" in said
    remaining = _dump(db)
    assert not [o for o in remaining["orders"] if o["trade_date"] == DAYS[0]]
    assert len([o for o in remaining["orders"] if o["trade_date"] == DAYS[1]]) == 2
    assert len(remaining["wire"]) == 2 * len(before["wire"]) // 3

    _resolve(db, DAYS[1])
    before["exceptions"] = ([e for e in before["exceptions"] if e["trade_date"] == DAYS[0]]
                            + _dump(db)["exceptions"])
    assert _archive(tmp_path, database_url, DAYS[2], "--dry-run") == 0
    assert "would archive 2026-11-20" in capsys.readouterr().out
    assert _archive(tmp_path, database_url, DAYS[2]) == 0
    after = _dump(db)
    assert {o["trade_date"] for o in after["orders"]} == {DAYS[2]}
    # The fair rotation goes on from the blocks allocated, archived or not.
    assert db.allocations_for_book("SMA-CORE") == 6
    assert [e["kind"] for e in db.events("day_archived")] == ["day_archived"] * 2

    manifests = sorted((tmp_path / "archive").glob("*.manifest.json"))
    assert [m.name for m in manifests] == [f"fixalloc-{d}.manifest.json" for d in DAYS[:2]]
    assert main(["archive", "--verify", *map(str, manifests)]) == 0

    # An inquiry database built from the files and what stayed holds exactly the original.
    inquiry = f"sqlite:///{tmp_path / 'inquiry.db'}"
    files = [m.with_name(m.name.replace(".manifest.json", ".jsonl.gz")) for m in manifests]
    assert main(["archive", "--restore", *map(str, files), "--into", inquiry]) == 0
    restored = Database(inquiry)
    got = _dump(restored)
    after["audit_events"] = [e for e in after["audit_events"] if e["kind"] != "day_archived"]
    for table, rows in got.items():
        kept = after[table]
        assert sorted(map(repr, rows + kept)) == sorted(map(repr, before[table])), table
    restored.dispose()
    db.dispose()


def test_a_changed_or_damaged_file_is_named_by_verify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fixalloc.db'}"
    db = Database(url)
    db.migrate()
    _fill_day(db, DAYS[0], 1)
    _resolve(db, DAYS[0])
    assert _archive(tmp_path, url, DAYS[1]) == 0
    manifest = tmp_path / "archive" / f"fixalloc-{DAYS[0]}.manifest.json"
    data = manifest.with_name(f"fixalloc-{DAYS[0]}.jsonl.gz")
    original = data.read_bytes()
    capsys.readouterr()

    # One row edited and the file re-compressed: the file's hash no longer matches.
    text = gzip.decompress(original).replace(b'"qty":"100"', b'"qty":"900"', 1)
    data.write_bytes(gzip.compress(text))
    assert main(["archive", "--verify", str(manifest)]) == 1
    assert "SHA-256 differs from the manifest" in capsys.readouterr().out

    # The same edit with the manifest's file hash forged: the table's own hash catches it.
    import hashlib

    body = json.loads(manifest.read_text())
    body["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(body))
    assert main(["archive", "--verify", str(manifest)]) == 1
    assert "table allocation_lines" in capsys.readouterr().out

    # A file cut short.
    data.write_bytes(original[: len(original) // 2])
    body["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(body))
    assert main(["archive", "--verify", str(manifest)]) == 1
    assert "unreadable" in capsys.readouterr().out
    db.dispose()


def test_a_day_still_trading_or_a_bad_date_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fixalloc.db'}"
    assert _archive(tmp_path, url, "2999-01-01") == 2
    assert "after today" in capsys.readouterr().err
    assert _archive(tmp_path, url, "yesterday") == 2
    assert "expected YYYY-MM-DD" in capsys.readouterr().err
    db = Database(url)
    db.migrate()
    _fill_day(db, DAYS[0], 1)
    db.mark_released(f"FA{DAYS[0].replace('-', '')}0001", None)  # back in memory
    _resolve(db, DAYS[0])
    assert _archive(tmp_path, url, DAYS[1]) == 1
    assert f"orders not finished: FA{DAYS[0].replace('-', '')}0001" in capsys.readouterr().out
    assert db.count("orders") == 1
    db.dispose()
