"""`fixalloc bench bigbook`: one block over a very large book, its J in fragments.

Generates a book of N accounts (deterministic figures, the shipped securities and rules),
runs the daemon as its own process with `max_lines_per_j` on the broker, and the
simulators in this process (the broker answers P but sends no AKs, so the figure is the
J's). Reports, from the wire log the daemon wrote: the time from the last fill received
to the first and the last J fragment handed to the broker, the fragments and lines, and
the daemon's peak RSS. Fails unless every fragment carries TotNoAllocs = lines, only the
last carries LastFragment=Y, Σ allocated = filled and the broker accepted the whole.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.bench_output import emit
from gateway.demo import CONFIG_DIR, DemoFailed, _http_json, demo_config, stop_daemon
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.fix.sim.plans import PostTradePlan
from gateway.persistence.store import Database
from gateway.ports import free_port

BROKER_KEY = "FIX.4.4:FIXALLOC->BRKA"
_CUSTODIANS = ("IRVTUS3NXXX", "SBOSUS33XXX", "CHASUS33XXX")


def write_book(folder: Path, accounts: int) -> Path:
    """accounts.csv with `accounts` active SMA-CORE accounts, the shipped securities and
    rules, and no positions (nobody is cut by holdings; caps come from cash and rules)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["account_id", "book", "status", "nav", "cash", "tier", "intended_qty",
               "target_weight", "custodian", "prime_broker", "strategy", "vehicle", "scheme"]
    with (folder / "accounts.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(columns)
        for i in range(1, accounts + 1):
            nav = 1_000_000 + (i * 7919) % 9_000_000
            out.writerow([f"BB{i:06d}", "SMA-CORE", "active", f"{nav}.00", f"{nav // 5}.00",
                          1, 100 + (i % 40) * 10, "0.01", _CUSTODIANS[i % 3],
                          f"PB0{1 + i % 3}", "CORE", "SMA-UMA", "core"])
    (folder / "positions.csv").write_text(
        "account_id,symbol,lot_id,quantity,cost_per_share,acquired\n", encoding="utf-8")
    (folder / "securities.csv").write_bytes((CONFIG_DIR / "securities.csv").read_bytes())
    rules = folder / "rules"
    rules.mkdir(exist_ok=True)
    for f in (CONFIG_DIR / "rules").iterdir():
        if f.is_file():
            (rules / f.name).write_bytes(f.read_bytes())
    return folder


def _peak_rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return round(int(match[1]) / 1024, 1) if match else None


def run(*, accounts: int, max_lines: int, qty: Decimal, workers: int, state: Path,
        timeout: float) -> dict[str, Any]:
    book = write_book(state / "book", accounts)
    oms_port, broker_port, http_port = free_port(), free_port(), free_port()
    cfg = demo_config(state, oms_port=oms_port, broker_port=broker_port, http_port=http_port,
                      config_dir=book, broker_extra=f"max_lines_per_j = {max_lines}")
    broker = BrokerSimulator(port=broker_port, state_dir=state / "sim-broker",
                             plan=FillPlan(fills=10, interval_ms=20),
                             post_trade=PostTradePlan(acks=False))
    broker.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FIXALLOC__GATEWAY__WORKERS": str(workers)}
    log_file = (state / "fixalloc.log").open("w", encoding="utf-8")
    daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--log-format", "json"],
        stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(state))
    oms = OmsSimulator(port=oms_port, state_dir=state / "sim-oms")
    peak = None
    try:
        if not wait_for(lambda: daemon.poll() is not None or _http_json(
                f"http://127.0.0.1:{http_port}/healthz")[0] == 200, 300) or daemon.poll():
            raise DemoFailed(f"daemon did not start; see {log_file.name}")
        oms.start()
        if not wait_for(lambda: _http_json(f"http://127.0.0.1:{http_port}/readyz")[0] == 200,
                        60):
            raise DemoFailed("sessions did not log on within 60 s")
        order = BlotterOrder(cl_ord_id=f"BIG-{int(time.time())}", book="SMA-CORE",
                             symbol="AAPL", side="buy", qty=qty, ord_type="2",
                             price=Decimal("190.00"))
        oms.send_order(order)
        if not wait_for(lambda: len(broker.allocations) >= 1, timeout):
            raise DemoFailed("the broker did not receive a complete J in time")
        alloc_id = broker.allocations[0].alloc_id

        def final() -> bool:
            # The allocation's own endpoint returns every line: read the state from the
            # database instead of polling megabytes of JSON.
            return _status(state, alloc_id) in ("accepted", "block_rejected")
        if not wait_for(final, 300, interval=0.5):
            raise DemoFailed(f"no final P for {alloc_id}")
        peak = _peak_rss_mib(daemon.pid)
    finally:
        stop_daemon(daemon, 60)
        oms.stop()
        broker.stop()
        log_file.close()
    return _measure(state, alloc_id, accounts, peak)


def _status(state: Path, alloc_id: str) -> str | None:
    db = Database(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}", pool_size=1)
    try:
        alloc = db.load_allocation(alloc_id)
        return None if alloc is None else str(alloc["status"])
    finally:
        db.dispose()


def _measure(state: Path, alloc_id: str, accounts: int, peak: float | None) -> dict[str, Any]:
    db = Database(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}")
    try:
        alloc = db.load_allocation(alloc_id) or {}
        lines = db.load_allocation_lines(alloc_id)
        order = next(o for o in db.load_orders() if o["order_id"] == alloc.get("order_id"))
        wire = db.wire_messages(session_id=BROKER_KEY)
    finally:
        db.dispose()
    fills = [m for m in wire if m["direction"] == "in" and m["msg_type"] == "8"
             and b"\x01150=F\x01" in m["raw"]]
    parts = [m for m in wire if m["direction"] == "out" and m["msg_type"] == "J"
             and m["ref_id"] == alloc_id]
    last_fill = fills[-1]["recorded_at"]
    total = sum(Decimal(x["qty"]) for x in lines)
    tot = f"\x01892={len(lines)}\x01".encode()
    checks = {
        "TotNoAllocs on every fragment": all(tot in m["raw"] for m in parts),
        "LastFragment=Y on the last only": [b"\x01893=Y\x01" in m["raw"] for m in parts]
        == [False] * (len(parts) - 1) + [True],
        "allocated = filled": total == Decimal(order["cum_qty"]),
        "broker accepted": alloc.get("status") == "accepted",
    }
    return {
        "accounts": accounts, "lines": len(lines), "fragments": len(parts),
        "allocated": str(total), "filled": order["cum_qty"],
        "largest_fragment_bytes": max((m["raw_len"] or len(m["raw"]) for m in parts), default=0),
        "last_fill_to_first_fragment_ms": round(
            (parts[0]["recorded_at"] - last_fill).total_seconds() * 1000, 1),
        "last_fill_to_last_fragment_ms": round(
            (parts[-1]["recorded_at"] - last_fill).total_seconds() * 1000, 1),
        "daemon_peak_rss_mib": peak, "checks": checks, "ok": all(checks.values()),
        "state_dir": str(state),
    }


def _cmd(args: argparse.Namespace) -> int:
    state = Path(args.state_dir) if args.state_dir else Path(
        tempfile.mkdtemp(prefix="fixalloc-bigbook-"))
    state.mkdir(parents=True, exist_ok=True)
    try:
        out = run(accounts=args.accounts, max_lines=args.max_lines_per_j, qty=args.qty,
                  workers=args.workers, state=state, timeout=args.timeout)
    except DemoFailed as exc:
        sys.stderr.write(f"fixalloc bench bigbook: FAILED: {exc}\n")
        return 1
    return emit(out, as_json=args.json)


def add_command(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser(
        "bigbook", help="one block over a very large book: last fill to last J fragment")
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--max-lines-per-j", type=int, default=1000)
    p.add_argument("--qty", type=Decimal, default=Decimal(10_000_000))
    p.add_argument("--workers", type=int, default=2, help="engine pool workers in the daemon")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--state-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
