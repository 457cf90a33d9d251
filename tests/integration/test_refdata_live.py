"""Live reference data: an account frozen in the CSV export is out of the next block."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import CONFIG, Gateway, Ports, http_get, running, write_config

pytestmark = pytest.mark.fix


def _with_status(text: str, account_id: str, status: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{account_id},"):
            cols = line.split(",")
            cols[2] = status
            lines[i] = ",".join(cols)
    return "\n".join(lines) + "\n"


def _set_status(accounts: Path, account_id: str, status: str) -> None:
    """An operator's in-place edit of the CSV export."""
    text = accounts.read_text(encoding="utf-8")
    accounts.write_text(_with_status(text, account_id, status), encoding="utf-8")


def _rewrite(path: Path, text: str) -> None:
    """Write `text` again, atomically (a reader never sees half a file): a repeat edit."""
    tmp = path.with_name(f".{path.name}.rewrite")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _dispatcher_uses(gw: Gateway, version: str) -> bool:
    """The dispatcher itself has applied this reference-data version.

    A registry swaps its current version first and only then stores it and queues it for
    the dispatcher, so the registry's (or /refdata's) version changing is not yet proof
    that the next block will see it; the dispatcher's own copy is.
    """
    assert gw.node is not None and gw.node.dispatcher is not None
    return bool(gw.node.dispatcher.refdata.version == version)


def _block(n: int) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=f"RD-{n}", book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=Decimal(50_000), price=Decimal(190))


def _allocated(oms: object, cl_ord_id: str) -> set[str]:
    j = oms.allocation_for(cl_ord_id)  # type: ignore[attr-defined]
    return {x["account"] for x in j.lines}


def test_account_frozen_in_the_csv_is_excluded_from_the_next_block(tmp_path: Path) -> None:
    """HTTP reload and the file watcher both apply a valid edit; a broken edit is refused."""
    data = tmp_path / "refdata"
    data.mkdir()
    for name in ("securities.csv", "accounts.csv", "positions.csv"):
        shutil.copy(CONFIG / name, data / name)
    accounts = data / "accounts.csv"
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, refdata_dir=data, watch=True)
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (_b, gw, oms):
        oms.send_order(_block(1))
        assert oms.wait(lambda: oms.allocation_for("RD-1") is not None, 30)
        assert {"SMA0001", "SMA0002"} <= _allocated(oms, "RD-1")
        first = http_get(ports.http, "/refdata")[1]["active"]

        gw.node.refdata.stop()  # take the watcher out for the explicit-reload half
        _set_status(accounts, "SMA0001", "frozen")
        code, body = http_get(ports.http, "/refdata/reload", method="POST")
        assert code == 200 and body["change"] == "accounts changed: SMA0001"
        oms.send_order(_block(2))
        assert oms.wait(lambda: oms.allocation_for("RD-2") is not None, 30)
        assert "SMA0001" not in _allocated(oms, "RD-2")

        good = accounts.read_text(encoding="utf-8")
        _set_status(accounts, "SMA0003", "asleep")
        code, body = http_get(ports.http, "/refdata/reload", method="POST")
        assert code == 422 and f"{accounts}:4:" in body["detail"]
        assert http_get(ports.http, "/refdata")[1]["active"] != first  # edit 1 still in force

        accounts.write_text(good, encoding="utf-8")
        registry = gw.node.refdata
        in_force = registry.current().version
        registry.start_watching()
        # watchfiles gives no signal once it has subscribed, so an edit made before that is
        # never seen: make the edit, then repeat it (same content) until a reload happens.
        edited = _with_status(good, "SMA0002", "do_not_trade")
        _set_status(accounts, "SMA0002", "do_not_trade")
        eventually(lambda: registry.current().version != in_force, 10,
                   nudge=lambda: _rewrite(accounts, edited),
                   description="the file watcher loaded the edit")
        watched = registry.current().version
        eventually(lambda: _dispatcher_uses(gw, watched), 10,
                   description="the dispatcher applied the watched version")
        assert http_get(ports.http, "/refdata")[1]["history"][-1]["actor"] == "file-watch"
        oms.send_order(_block(3))
        assert oms.wait(lambda: oms.allocation_for("RD-3") is not None, 30)
        assert not {"SMA0001", "SMA0002"} & _allocated(oms, "RD-3")

        with gw.node.db.engine.connect() as conn:
            rows = conn.execute(text("SELECT actor, diff_summary FROM refdata_versions "
                                     "ORDER BY loaded_at")).all()
        assert [r[0] for r in rows] == ["startup", "http", "file-watch"]
        assert rows[2][1] == "accounts changed: SMA0002"
        status = http_get(ports.http, "/status")[1]
        decision = http_get(ports.http, f"/allocations/{oms.allocation_for('RD-3').alloc_id}")[1]
        assert status["refdata_version"] == http_get(ports.http, "/refdata")[1]["active"]
        assert decision["decision"]["allocated_qty"] == "50000"


def test_gateway_reads_reference_data_from_the_database(tmp_path: Path) -> None:
    """source = database: imported versions drive the gateway, and a new import goes live."""
    from gateway.cli import main

    data = tmp_path / "refdata"
    data.mkdir()
    for name in ("securities.csv", "accounts.csv", "positions.csv"):
        shutil.copy(CONFIG / name, data / name)
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, refdata_dir=data, watch=True)
    cfg.write_text(cfg.read_text().replace("[refdata]\n", '[refdata]\nsource = "database"\n'))
    assert main(["refdata", "import", "--config", str(cfg)]) == 0
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (_b, gw, oms):
        oms.send_order(_block(1))
        assert oms.wait(lambda: oms.allocation_for("RD-1") is not None, 30)
        assert "SMA0001" in _allocated(oms, "RD-1")
        # Editing the files does nothing by itself in this mode ...
        _set_status(data / "accounts.csv", "SMA0001", "closed")
        # ... until the edit is imported into the database the gateway reads.
        assert main(["refdata", "import", "--config", str(cfg)]) == 0
        imported = gw.node.db.latest_refdata_version()["version"]
        eventually(lambda: _dispatcher_uses(gw, imported), 10,
                   description="the dispatcher applied the imported version")
        assert http_get(ports.http, "/refdata")[1]["history"][-1]["actor"] == "database"
        oms.send_order(_block(2))
        assert oms.wait(lambda: oms.allocation_for("RD-2") is not None, 30)
        assert "SMA0001" not in _allocated(oms, "RD-2")
        assert gw.node.db.count("refdata_versions") == 2
