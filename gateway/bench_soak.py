"""`fixalloc bench soak`: a steady load for many minutes, and whether the daemon's cost
per block and its memory stay flat as blocks accumulate.

The daemon runs as its own process (`fixalloc run` on the shipped 200-account book, on a
rehearsal clock that starts at 09:30 New York time on a trading day); the broker and OMS
simulators run in this process. The OMS sends `--blocks-per-minute` blocks at an even
pace (10,000 to 120,000 shares, symbols in turn); the broker fills each in
`--fills-per-block` fills 20 ms apart (keeping no state file: writing one per fill
would make the simulator, not the daemon, the limit) and answers every J with P 87=3 then 87=0 (AKs
only with `--acks`; without them the AK wait is set past the run, so no BH is asked
for).

Each interval reports blocks sent and done, fills per second, the block time (the D sent
to the OMS's copy of the J received), last fill to J on the wire (from the allocations
the daemon stored), the daemon's RSS and the orders it holds in memory. The summary
compares the first and last sixth of the run (five minutes each on a 30-minute run),
fits the change per 1,000 blocks, counts errors, checks that every block was allocated
and accepted and that the database agrees with the simulators, and reports the bytes
stored per block.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.bench_output import emit
from gateway.clock import NEW_YORK, SimulatedClock
from gateway.demo import DemoFailed, _http_json, demo_config
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.fix.sim.plans import PostTradePlan
from gateway.persistence.store import Database
from gateway.ports import free_port

SYMBOLS = ("AAPL", "MSFT", "JNJ")
START = datetime(2026, 11, 24, 9, 30, tzinfo=NEW_YORK)  # a Tuesday: a trading day


def _rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return round(int(match[1]) / 1024, 1) if match else None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares change of y per unit of x (None with fewer than two points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


@dataclass
class Interval:
    index: int
    ended_s: float
    sent: int = 0
    done: int = 0
    fills_per_s: float = 0.0
    block_ms: list[float] = field(default_factory=list)
    j_ms: list[float] = field(default_factory=list)
    rss_mib: float | None = None
    orders_in_memory: int | None = None

    def row(self) -> dict[str, Any]:
        return {"interval": self.index, "at_s": round(self.ended_s), "sent": self.sent,
                "done": self.done, "fills_per_s": round(self.fills_per_s, 1),
                "block_ms_mean": round(statistics.fmean(self.block_ms), 1)
                if self.block_ms else None,
                "j_p50_ms": _pct(self.j_ms, 0.5), "j_p99_ms": _pct(self.j_ms, 0.99),
                "rss_mib": self.rss_mib, "orders_in_memory": self.orders_in_memory}


class Soak:
    def __init__(self, *, minutes: float, blocks_per_minute: float, fills_per_block: int,
                 interval_s: float, acks: bool, state: Path, seed: int) -> None:
        self.minutes, self.rate, self.interval_s = minutes, blocks_per_minute, interval_s
        self.state = state
        self.rng = random.Random(seed)
        oms_port, broker_port, self.http_port = free_port(), free_port(), free_port()
        # Without AKs, the AK wait is set past the run: no BH is asked for mid-soak.
        self.cfg = demo_config(state, oms_port=oms_port, broker_port=broker_port,
                               http_port=self.http_port,
                               broker_extra="" if acks else "ak_timeout_minutes = 100000")
        self.clock = SimulatedClock(START, 1.0)
        self.broker = BrokerSimulator(
            port=broker_port, state_dir=state / "sim-broker",
            plan=FillPlan(fills=fills_per_block, interval_ms=20, first_fill_delay_ms=20),
            post_trade=PostTradePlan(acks=acks), durable=False)
        self.oms = OmsSimulator(port=oms_port, state_dir=state / "sim-oms", clock=self.clock)
        self.sent_at: dict[str, float] = {}
        self.done_at: dict[str, float] = {}
        self.daemon: subprocess.Popen[bytes] | None = None
        self._seen_js = 0

    # -- processes ------------------------------------------------------------------------

    def start(self) -> None:
        self.broker.start()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = (self.state / "fixalloc.log").open("wb")
        self.daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "run", "--config", str(self.cfg),
             "--log-format", "json", "--clock-start", START.isoformat()],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(self.state))
        url = f"http://127.0.0.1:{self.http_port}"
        if not wait_for(lambda: self.daemon is not None and (self.daemon.poll() is not None
                        or _http_json(f"{url}/healthz")[0] == 200), 300) \
                or self.daemon.poll() is not None:
            raise DemoFailed(f"daemon did not start; see {self.log.name}")
        self.oms.start()
        if not wait_for(lambda: _http_json(f"{url}/readyz")[0] == 200, 60):
            raise DemoFailed("sessions did not log on within 60 s")

    def stop(self) -> int | None:
        code = None
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                code = self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        self.oms.stop()
        self.broker.stop()
        self.log.close()
        return code

    # -- the load -------------------------------------------------------------------------

    def _send(self, n: int) -> None:
        cl = f"SOAK-{n:06d}"
        qty = Decimal(self.rng.randrange(100, 1201) * 100)
        symbol = SYMBOLS[n % len(SYMBOLS)]
        self.oms.send_order(BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol=symbol,
                                         side="buy", qty=qty, ord_type="1"))
        self.sent_at[cl] = time.monotonic()

    def _collect(self) -> list[float]:
        """Block times (ms) of the blocks whose J reached the OMS since the last call.

        Only the Js that arrived since the last call are read: the bench's own cost per
        poll must not grow with the run, or it would show up as the daemon's.
        """
        out = []
        fresh = self.oms.allocations[self._seen_js:]
        self._seen_js += len(fresh)
        for j in fresh:
            for cl in j.cl_ord_ids:
                if cl in self.sent_at and cl not in self.done_at:
                    self.done_at[cl] = time.monotonic()
                    out.append((self.done_at[cl] - self.sent_at[cl]) * 1000)
        return out

    def run(self) -> dict[str, Any]:
        began = time.monotonic()
        end = began + self.minutes * 60
        gap = 60.0 / self.rate
        intervals: list[Interval] = []
        current = Interval(1, 0.0)
        next_send, next_report, n = began, began + self.interval_s, 0
        fills_before = 0
        db = Database(f"sqlite:///{self.state / 'gateway' / 'fixalloc.db'}", pool_size=1)
        seen_j = 0
        last_report = began

        def close(now: float) -> None:
            nonlocal current, fills_before, seen_j, last_report
            fills = len(self.broker.sent_fills)
            current.fills_per_s = (fills - fills_before) / max(now - last_report, 1e-9)
            fills_before, last_report = fills, now
            current.done = len(self.done_at)
            allocs = db.load_allocations()
            current.j_ms = [(a["sent_at"] - a["last_fill_at"]).total_seconds() * 1000
                            for a in allocs[seen_j:] if a.get("sent_at") and a.get("last_fill_at")]
            seen_j = len(allocs)
            current.rss_mib = _rss_mib(self.daemon.pid) if self.daemon else None
            code, status = _http_json(f"http://127.0.0.1:{self.http_port}/status?limit=1")
            current.orders_in_memory = status.get(
                "orders_in_memory", status.get("orders_total")) if code == 200 else None
            current.ended_s = now - began
            intervals.append(current)
            sys.stderr.write(json.dumps(current.row()) + "\n")
            current = Interval(len(intervals) + 1, 0.0)
            # The simulators keep every message of the run (the OMS's Js alone hold 200
            # lines each): frozen, they are no longer traversed by each full garbage
            # collection, whose pauses would otherwise grow with the run and show up in
            # the block times as if they were the daemon's.
            gc.freeze()

        try:
            while time.monotonic() < end:
                now = time.monotonic()
                while next_send <= now and next_send < end:
                    n += 1
                    self._send(n)
                    current.sent += 1
                    next_send += gap
                current.block_ms += self._collect()
                if now >= next_report:
                    close(now)
                    next_report += self.interval_s
                time.sleep(min(0.05, max(0.0, min(next_send, next_report) - time.monotonic())))

            # The last blocks finish (their fills and J) in a closing interval of their own.
            def finished() -> bool:
                current.block_ms += self._collect()
                return len(self.done_at) >= len(self.sent_at)

            wait_for(finished, 120)
            time.sleep(1.0)  # the last Ps: the checks count accepted allocations
            if current.sent or current.block_ms:
                close(time.monotonic())
        finally:
            db.dispose()
        return self._summary(intervals, n)

    # -- the verdict ----------------------------------------------------------------------

    def _summary(self, intervals: list[Interval], sent: int) -> dict[str, Any]:
        db = Database(f"sqlite:///{self.state / 'gateway' / 'fixalloc.db'}", pool_size=1)
        try:
            allocs = db.load_allocations()
            orders = db.load_orders()
            stored_fills = db.count("broker_reports")
        finally:
            db.dispose()
        accepted = sum(1 for a in allocs if a["status"] == "accepted")
        part = max(1, len(intervals) // 6 if len(intervals) >= 6 else len(intervals) // 2)
        first, last = intervals[:part], intervals[-part:]

        def mean_of(rows: list[Interval], key: str) -> float | None:
            values = [v for r in rows for v in getattr(r, key)]
            return statistics.fmean(values) if values else None

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(b / a, 3) if a and b is not None else None

        first_block, last_block = mean_of(first, "block_ms"), mean_of(last, "block_ms")
        first_p99 = _pct([v for r in first for v in r.j_ms], 0.99)
        last_p99 = _pct([v for r in last for v in r.j_ms], 0.99)
        warm = next((r.rss_mib for r in intervals[part - 1:part] if r.rss_mib), None)
        final_rss = intervals[-1].rss_mib if intervals else None
        done = [float(r.done) for r in intervals]
        errors = self._log_errors()
        db_bytes = _dir_bytes(self.state / "gateway") - _dir_bytes(
            self.state / "gateway" / "fix_store")
        store_bytes = _dir_bytes(self.state / "gateway" / "fix_store")
        blocks = max(1, len(orders))
        fills_sent = len(self.broker.sent_fills)
        checks = {
            "every block allocated and accepted": accepted == sent and len(allocs) == sent,
            "orders stored = orders sent": len(orders) == sent,
            "fills stored = fills sent": stored_fills >= fills_sent,
            "no errors in the daemon log": errors == 0,
        }
        return {
            "minutes": self.minutes, "blocks_per_minute": self.rate, "blocks_sent": sent,
            "blocks_done": len(self.done_at), "fills_sent": fills_sent,
            "intervals": [r.row() for r in intervals],
            "first_block_ms": round(first_block, 1) if first_block else None,
            "last_block_ms": round(last_block, 1) if last_block else None,
            "block_time_ratio_last_first": ratio(first_block, last_block),
            "first_j_p99_ms": first_p99, "last_j_p99_ms": last_p99,
            "j_p99_ratio_last_first": ratio(first_p99, last_p99),
            "rss_after_warmup_mib": warm, "rss_final_mib": final_rss,
            "rss_growth_pct_after_warmup": round((final_rss - warm) / warm * 100, 2)
            if warm and final_rss else None,
            "block_ms_per_1000_blocks": _round(_slope(
                done, [statistics.fmean(r.block_ms) if r.block_ms else 0.0
                       for r in intervals]), 1000),
            "rss_mib_per_1000_blocks": _round(_slope(
                done, [r.rss_mib or 0.0 for r in intervals]), 1000),
            "db_bytes_per_block": db_bytes // blocks,
            "fix_store_bytes_per_block": store_bytes // blocks,
            "errors": errors, "checks": checks, "ok": all(checks.values()),
            "state_dir": str(self.state),
        }

    def _log_errors(self) -> int:
        count = 0
        with (self.state / "fixalloc.log").open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if '"level": "error"' in line or '"level": "critical"' in line:
                    count += 1
        return count


def _round(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 2)


def _cmd(args: argparse.Namespace) -> int:
    state = Path(args.state_dir) if args.state_dir else Path(
        tempfile.mkdtemp(prefix="fixalloc-soak-"))
    state.mkdir(parents=True, exist_ok=True)
    soak = Soak(minutes=args.minutes, blocks_per_minute=args.blocks_per_minute,
                fills_per_block=args.fills_per_block,
                interval_s=args.interval_seconds or min(60.0, args.minutes * 60 / 6),
                acks=args.acks, state=state, seed=args.seed)
    try:
        soak.start()
        out = soak.run()
    except DemoFailed as exc:
        sys.stderr.write(f"fixalloc bench soak: FAILED: {exc}\n")
        soak.stop()
        return 1
    code = soak.stop()
    out["daemon_exit"] = code
    out["ok"] = out["ok"] and code == 0
    if not args.json:
        cols = ("interval", "at_s", "sent", "done", "fills_per_s", "block_ms_mean",
                "j_p50_ms", "j_p99_ms", "rss_mib", "orders_in_memory")
        sys.stdout.write("  ".join(f"{c:>14s}" for c in cols) + "\n")
        for row in out["intervals"]:
            sys.stdout.write("  ".join(f"{row[c]!s:>14s}" for c in cols) + "\n")
    return emit(out, as_json=args.json, skip=("intervals",))


def add_command(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser(
        "soak", help="a steady load for many minutes: is the cost per block flat?")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--blocks-per-minute", type=float, default=60.0)
    p.add_argument("--fills-per-block", type=int, default=10)
    p.add_argument("--interval-seconds", type=float, default=None,
                   help="report interval (default: 60 s, or a sixth of a short run)")
    p.add_argument("--acks", action="store_true",
                   help="the broker also confirms every line (AK), answered with AU")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--state-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
