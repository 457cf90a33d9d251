"""`fixalloc bench e2e`: from a block's last fill on the wire to its J on the wire.

The daemon runs as its own process on a book of `--accounts` accounts (the shipped
200-account book, or a generated one of any size as in `bench bigbook`), with broker and
OMS processes from gateway/bench_peers.py. The OMS sends `--blocks` blocks one at a time,
each after the previous one's whole J reached it; the broker fills each in
`--fills-per-block` fills back to back and answers the J with P 87=0. With
`--background-fills-per-s R` a second broker fills one long order of another book at R
fills per second for the whole run, so the blocks are measured while other fills flow.

Per block, from the wire log the daemon wrote: the time from its last fill received to
its J's first and last fragment handed to the broker; p50, p99 and max over the blocks,
and the daemon's peak RSS (VmHWM). Checks: every block's J carries what was filled, and
every fill was stored once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from gateway.bench_bigbook import write_book
from gateway.bench_ingest import Processes, _config, stored_fills
from gateway.bench_output import emit
from gateway.bench_soak import START
from gateway.demo import CONFIG_DIR, DemoFailed
from gateway.fix.sim.common import wait_for
from gateway.persistence.store import Database
from gateway.ports import free_port

BROKER_KEY = "FIX.4.4:FIXALLOC->BRKA"
BACKGROUND_BOOK = "SMA-BG"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _book(state: Path, accounts: int) -> Path:
    """The measured book (SMA-CORE) plus a small background book routed to BRKB."""
    folder = state / "book"
    if accounts == 200:
        shutil.copytree(CONFIG_DIR, folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.toml"))
    else:
        write_book(folder, accounts)
    with (folder / "accounts.csv").open("r", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    rows = []
    for i in range(1, 11):
        row = dict.fromkeys(header, "")
        row.update({"account_id": f"BG{i:04d}", "book": BACKGROUND_BOOK, "status": "active",
                    "nav": "5000000.00", "cash": "1000000.00", "tier": "1"})
        rows.append(",".join(row[c] for c in header))
    with (folder / "accounts.csv").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(rows) + "\n")
    schemes = folder / "rules" / "00-schemes.yaml"
    data = yaml.safe_load(schemes.read_text(encoding="utf-8"))
    data["books"][BACKGROUND_BOOK] = dict(data["books"]["SMA-CORE"])
    schemes.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return folder


def run(*, blocks: int, accounts: int, fills_per_block: int, block_qty: int,
        background: float, max_lines: int, workers: int, mode: str, state: Path,
        timeout: float, audit_chain: str = "on") -> dict[str, Any]:
    p = Processes(state)
    ports = {"BRKA": free_port(), "BRKB": free_port()}
    oms_port, http = free_port(), free_port()
    # The background order (one share a fill) outlasts the run: R fills a second for at
    # most `timeout`, within the book's default 10,000,000-share limit.
    background_lots = min(int(background * (timeout + 60)) + 1, 9_000_000)
    cfg = _config(state, oms=oms_port, brokers=ports, http=http, mode=mode,
                  refdata=_book(state, accounts),
                  books=[("SMA-CORE", "BRKA"), (BACKGROUND_BOOK, "BRKB")],
                  broker_extra=f"max_lines_per_j = {max_lines}")
    try:
        p.peer("broker", "BRKA", "--port", str(ports["BRKA"]), "--sender", "BRKA",
               "--orders", str(blocks), "--fills-per-order", str(fills_per_block),
               "--out", str(state / "BRKA.json"))
        p.peer("broker", "BRKB", "--port", str(ports["BRKB"]), "--sender", "BRKB",
               "--orders", "1", "--fills-per-order", str(max(background_lots, 1)),
               "--rate", str(background), "--out", str(state / "BRKB.json"))
        p.start_daemon(cfg, http, env={"FIXALLOC__GATEWAY__WORKERS": str(workers),
                                       "FIXALLOC_BENCH_AUDIT_CHAIN": audit_chain})
        args = ["--port", str(oms_port), "--orders", str(blocks), "--fills",
                str(fills_per_block), "--shares-per-fill", str(block_qty // fills_per_block),
                "--books", "SMA-CORE", "--sequential",
                "--clock-start", START.isoformat(),
                "--out", str(state / "oms.json")]
        if background:
            args += ["--background-book", BACKGROUND_BOOK, "--background-lots",
                     str(background_lots), "--pause-ms", "1000"]
        p.peer("oms", "oms", *args)

        def finished() -> bool:
            p.sample_rss()
            return (state / "oms.json").exists()

        if not wait_for(finished, timeout, interval=0.05):
            raise DemoFailed(f"the OMS did not get {blocks} J(s) within {timeout:.0f} s; "
                             f"see {state}")
        db = Database(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}", pool_size=1)
        try:
            wait_for(lambda: sum(1 for a in db.load_allocations()
                                 if a["status"] == "accepted") >= blocks, 60, interval=0.25)
            out = _measure(db, blocks, block_qty // fills_per_block * fills_per_block)
        finally:
            db.dispose()
    finally:
        code = p.stop()
    out.update({"accounts": accounts, "background_fills_per_s": background, "mode": mode,
                "audit_chain": audit_chain,
                "peak_rss_mb": p.peak_rss, "daemon_exit": code, "state_dir": str(state)})
    out["checks"]["daemon exit 0"] = code == 0
    from gateway.bench_ingest import chain_check, chain_state

    chain = chain_state(state / "gateway" / "fixalloc.db")
    what, holds = chain_check(chain, on=audit_chain == "on")
    out["audit_chain_entries"] = chain["entries"]
    out["checks"][what] = holds
    out["ok"] = all(out["checks"].values())
    return out


def _measure(db: Database, blocks: int, block_qty: int) -> dict[str, Any]:
    wire = db.wire_messages(session_id=BROKER_KEY)
    fill_at = {m["ref_id"]: m["recorded_at"] for m in wire
               if m["direction"] == "in" and m["msg_type"] == "8"}
    js: dict[str, list[Any]] = {}
    for m in wire:
        if m["direction"] == "out" and m["msg_type"] == "J":
            js.setdefault(m["ref_id"], []).append(m["recorded_at"])
    first_ms: list[float] = []
    last_ms: list[float] = []
    complete, width = True, 0
    measured = [a for a in db.load_allocations() if a["broker"] == "BRKA"
                and a["alloc_trans_type"] == "0"]
    for alloc in measured:
        reports = [r for r in db.load_reports(alloc["order_id"]) if r["exec_type"] == "F"]
        last_fill = fill_at[reports[-1]["exec_id"]]
        sent = js[alloc["alloc_id"]]
        first_ms.append((min(sent) - last_fill).total_seconds() * 1000)
        last_ms.append((max(sent) - last_fill).total_seconds() * 1000)
        lines = db.load_allocation_lines(alloc["alloc_id"])
        width = max(width, len(lines))
        filled = sum(int(r["last_qty"]) for r in reports)
        complete &= sum(int(x["qty"]) for x in lines) == filled == block_qty
    fills, distinct, _ = stored_fills(db)
    return {
        "blocks": len(measured), "lines_per_block": width,
        "p50_ms": _pct(first_ms, 0.5), "p99_ms": _pct(first_ms, 0.99),
        "max_ms": round(max(first_ms), 2) if first_ms else None,
        "last_fragment_p50_ms": _pct(last_ms, 0.5), "last_fragment_p99_ms": _pct(last_ms, 0.99),
        "last_fragment_max_ms": round(max(last_ms), 2) if last_ms else None,
        "background_fills_stored": fills - sum(
            len([r for r in db.load_reports(a["order_id"]) if r["exec_type"] == "F"])
            for a in measured),
        "checks": {"every block measured": len(measured) == blocks,
                   "allocated = filled, every block": complete,
                   "every fill stored once": fills == distinct}}


def _cmd(args: argparse.Namespace) -> int:
    state = Path(args.state_dir) if args.state_dir else Path(
        tempfile.mkdtemp(prefix="fixalloc-e2e-"))
    state.mkdir(parents=True, exist_ok=True)
    if args.block_qty is None:
        args.block_qty = 20_000 if args.accounts <= 200 else 100 * args.accounts
    if args.blocks < 1 or args.accounts < 1 or args.fills_per_block < 1 or \
            args.block_qty < args.fills_per_block or \
            args.background_fills_per_s < 0 or args.mode not in ("FULL", "NORMAL"):
        sys.stderr.write("fixalloc bench e2e: blocks, accounts and fills must be positive, "
                         "the background rate not negative, the mode FULL or NORMAL\n")
        return 2
    try:
        out = run(blocks=args.blocks, accounts=args.accounts,
                  fills_per_block=args.fills_per_block, block_qty=args.block_qty,
                  background=args.background_fills_per_s, max_lines=args.max_lines_per_j,
                  workers=args.workers, mode=args.mode, state=state, timeout=args.timeout,
                  audit_chain=args.audit_chain)
    except DemoFailed as exc:
        sys.stderr.write(f"fixalloc bench e2e: FAILED: {exc}\n")
        return 1
    return emit(out, as_json=args.json)


def add_command(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser(
        "e2e", help="last fill to J on the wire, per block: p50/p99/max, quiet or under load")
    p.add_argument("--blocks", type=int, default=50)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--fills-per-block", type=int, default=10)
    p.add_argument("--block-qty", type=int, default=None,
                   help="shares per block (rounded down to a multiple of the fills; "
                        "default 20,000, or 100 per account above 200 accounts so that "
                        "every account gets a line)")
    p.add_argument("--background-fills-per-s", type=float, default=0.0,
                   help="fills per second of another order flowing during the run")
    p.add_argument("--max-lines-per-j", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="the engine's worker processes")
    p.add_argument("--mode", default="FULL", help="sqlite_synchronous: FULL or NORMAL")
    p.add_argument("--audit-chain", choices=["on", "off"], default="on",
                   help="off: the daemon writes outside the audit chain (to measure its cost)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--state-dir")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=_cmd)
