"""`fixalloc bench ingest`: fills per second through fixalloc against a bare quickfix relay.

One run starts, on 127.0.0.1, K broker processes that fill every order they get as fast
as their session sends (gateway/bench_peers.py), an OMS process that sends M limit blocks
and counts the fills relayed back to it, and in between either the baseline (a bare
quickfix relay: FileStore and dictionary validation, no database) or `fixalloc run` (which
stores, deduplicates, folds each fill into the order and relays it). The same traffic goes
through the relay first and then through fixalloc once per durability mode
(`[gateway] sqlite_synchronous`: FULL syncs every commit, NORMAL syncs at WAL checkpoints).

Rate = fills / (last fill received by the OMS - first fill sent by any broker): stored and
relayed, end to end. `ratio` is fixalloc's rate in the default mode (FULL) over the relay's.
Checks after each fixalloc run: every fill stored exactly once and the allocations
quantities equal to what was filled.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from gateway.bench_soak import START, _rss_mib
from gateway.demo import CONFIG_DIR, ROOT, DemoFailed, _http_json
from gateway.fix.sim.common import wait_for
from gateway.persistence.store import Database
from gateway.ports import free_port

MODES = ("FULL", "NORMAL", "FULL_NOCHAIN")
"""SQLite's synchronous mode; FULL_NOCHAIN is FULL with the audit chain off, to measure
what the chain costs the fill path in the same run (never a production setting)."""


def _books(k: int) -> list[str]:
    return ["SMA-CORE"] + [f"SMA-CORE-{i}" for i in range(2, k + 1)]


def _brokers(k: int) -> list[str]:
    return [f"BRK{chr(ord('A') + i)}" for i in range(k)]


def _refdata(state: Path, k: int) -> Path:
    """The shipped reference data, its 200 accounts dealt round robin over k books."""
    if k == 1:
        return CONFIG_DIR
    out = state / "refdata"
    shutil.copytree(CONFIG_DIR / "rules", out / "rules", dirs_exist_ok=True)
    for name in ("securities.csv", "positions.csv"):
        shutil.copy(CONFIG_DIR / name, out / name)
    books = _books(k)
    with (CONFIG_DIR / "accounts.csv").open(newline="", encoding="utf-8") as src:
        rows = list(csv.DictReader(src))
    for i, row in enumerate(rows):
        row["book"] = books[i % k]
    with (out / "accounts.csv").open("w", newline="", encoding="utf-8") as dst:
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    schemes = out / "rules" / "00-schemes.yaml"
    data = yaml.safe_load(schemes.read_text(encoding="utf-8"))
    for book in books[1:]:
        data["books"][book] = dict(data["books"]["SMA-CORE"])
    schemes.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def _config(state: Path, *, oms: int, brokers: dict[str, int], http: int, mode: str,
            refdata: Path, books: list[tuple[str, str]] | None = None,
            broker_extra: str = "") -> Path:
    """The daemon's TOML: one OMS, these brokers, each book routed to its broker (by
    default the k-th book to the k-th broker)."""
    sessions = "".join(f"""
[[fix.brokers]]
name = "{name}"
target_comp_id = "{name}"
host = "127.0.0.1"
port = {port}
ak_timeout_minutes = 100000
{broker_extra}
""" for name, port in brokers.items())
    routes = books or list(zip(_books(len(brokers)), brokers, strict=True))
    book_text = "".join(f"""
[[books]]
name = "{book}"
broker = "{name}"
""" for book, name in routes)
    text = f"""
[gateway]
name = "fixalloc-bench"
state_dir = "{state / 'gateway'}"
sqlite_synchronous = "{mode}"

[http]
host = "127.0.0.1"
port = {http}

[fix]
sender_comp_id = "FIXALLOC"
data_dictionary = "{ROOT / 'fix_specs' / 'FIX44.xml'}"
reconnect_seconds = 1

[[fix.oms]]
name = "OMS1"
target_comp_id = "OMS1"
port = {oms}
{sessions}
[refdata]
securities = "{refdata / 'securities.csv'}"
accounts = "{refdata / 'accounts.csv'}"
positions = "{refdata / 'positions.csv'}"
rules = "{refdata / 'rules'}"
watch = false
{book_text}"""
    path = state / "fixalloc.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Processes:
    """The processes of one bench pass: peers (gateway/bench_peers.py) and the daemon."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: list[subprocess.Popen[bytes]] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0.0

    def spawn(self, name: str, args: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.state / f"{name}.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
            cwd=str(self.state), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.procs.append(proc)
        return proc

    def peer(self, role: str, name: str, *args: str) -> None:
        self.spawn(name, ["-m", "gateway.bench_peers", role, "--state-dir",
                          str(self.state / name), *args])

    def start_daemon(self, cfg: Path, http: int, *, brokers_only: bool = True,
                     env: dict[str, str] | None = None) -> None:
        """`fixalloc run` on the rehearsal clock; returns once its brokers are logged on."""
        self.daemon = self.spawn("fixalloc", [
            "-m", "gateway", "run", "--config", str(cfg), "--log-format", "json",
            "--clock-start", START.isoformat()], env)
        url = f"http://127.0.0.1:{http}"
        if not wait_for(lambda: self.daemon is not None and (
                self.daemon.poll() is not None or _http_json(f"{url}/healthz")[0] == 200),
                300) or self.daemon.poll() is not None:
            raise DemoFailed(f"daemon did not start; see {self.state / 'fixalloc.log'}")
        def brokers_up() -> bool:
            # /readyz answers 503 until the OMS, started next, is logged on too.
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:  # noqa: S310
                    body = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                body = json.loads(exc.read() or b"{}")
            except (urllib.error.URLError, OSError, ValueError):
                return False
            waiting = body.get("sessions_not_logged_on", ["?"])
            return not [s for s in waiting if "OMS" not in s]

        if not wait_for(brokers_up, 60):
            raise DemoFailed("the broker sessions did not log on within 60 s")

    def sample_rss(self) -> None:
        if self.daemon is not None:
            self.peak_rss = max(self.peak_rss, _rss_mib(self.daemon.pid) or 0.0)

    def stop(self) -> int | None:
        """SIGTERM the daemon (its exit code is returned), then every peer."""
        code = None
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                code = self.daemon.wait(120)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        return code


class Run:
    """One pass of the traffic through one system (`relay` or fixalloc in one mode)."""

    def __init__(self, root: Path, system: str, *, fills: int, orders: int, brokers: int,
                 timeout: float) -> None:
        self.state = root / system.lower()
        self.state.mkdir(parents=True)
        self.system, self.orders, self.k, self.timeout = system, orders, brokers, timeout
        self.per_order = fills // orders
        self.fills = self.per_order * orders
        self.p = Processes(self.state)
        self.ports = {name: free_port() for name in _brokers(brokers)}
        self.oms_port, self.http = free_port(), free_port()

    def start(self) -> None:
        for i, (name, port) in enumerate(self.ports.items()):
            mine = len(range(i, self.orders, self.k))
            self.p.peer("broker", name, "--port", str(port), "--sender", name, "--orders",
                        str(mine), "--fills-per-order", str(self.per_order), "--out",
                        str(self.state / f"{name}.json"))
        if self.system == "relay":
            self.p.peer("relay", "relay", "--oms-port", str(self.oms_port),
                        *[x for n, p in self.ports.items() for x in ("--broker", f"{n}:{p}")])
            time.sleep(1.5)  # the relay's initiators log on to the brokers
        else:
            refdata = _refdata(self.state, self.k)
            mode, _, nochain = self.system.partition("_")
            cfg = _config(self.state, oms=self.oms_port, brokers=self.ports, http=self.http,
                          mode=mode, refdata=refdata)
            self.p.start_daemon(cfg, self.http, env={
                "FIXALLOC_BENCH_AUDIT_CHAIN": "off" if nochain else "on"})
        self.p.peer("oms", "oms", "--port", str(self.oms_port), "--orders", str(self.orders),
                    "--fills", str(self.per_order), "--books", *_books(self.k),
                    "--clock-start", START.isoformat(), "--out", str(self.state / "oms.json"))

    def wait(self) -> dict[str, Any]:
        done = self.state / "oms.json"

        def finished() -> bool:
            self.p.sample_rss()
            return done.exists()

        if not wait_for(finished, self.timeout, interval=0.05):
            raise DemoFailed(f"{self.system}: the OMS did not get every fill within "
                             f"{self.timeout:.0f} s; see {self.state}")
        oms = json.loads(done.read_text())
        brokers = [json.loads((self.state / f"{n}.json").read_text()) for n in self.ports]
        first = min(b["first_sent"] for b in brokers)
        elapsed = oms["last_received"] - first
        out: dict[str, Any] = {
            "fills": oms["fills_received"], "seconds": round(elapsed, 3),
            "fills_per_s": round(oms["fills_received"] / elapsed, 1),
            "brokers_done_s": round(max(b["last_sent"] for b in brokers) - first, 3)}
        if self.p.daemon is not None:
            out.update(self._checks())
            out["peak_rss_mb"] = self.p.peak_rss
        return out

    def _checks(self) -> dict[str, Any]:
        db = Database(f"sqlite:///{self.state / 'gateway' / 'fixalloc.db'}", pool_size=1)
        try:
            def all_booked() -> bool:
                allocs = db.load_allocations()
                return len(allocs) >= self.orders and all(
                    a["status"] == "accepted" for a in allocs)

            booked = wait_for(all_booked, 120, interval=0.25)
            fills, distinct, filled = stored_fills(db)
            allocated = sum(int(a["quantity"]) for a in db.load_allocations()
                            if a["alloc_trans_type"] == "0")
            wire_in, wire_out = wire_fills(db)
        finally:
            db.dispose()
        return {"stored_fills": fills, "checks": {
            "every fill stored once": fills == distinct == self.fills,
            "every fill and its relay in the wire log": wire_in == wire_out == self.fills,
            "every block allocated and accepted": booked,
            "allocated = filled": allocated == filled == self.fills * 100}}

    def stop(self) -> int | None:
        return self.p.stop()


def wire_fills(db: Database) -> tuple[int, int]:
    """Distinct fills in the wire log: (ExecIDs received as 35=8 with 150=F, ExecIDs
    relayed as 35=8 with 150=F): the audit record of the traffic, not the fills table."""
    seen: dict[str, set[str]] = {"in": set(), "out": set()}
    for m in db.wire_messages(msg_type="8"):
        if b"\x01150=F\x01" in m["raw"] and m["ref_id"]:
            seen[m["direction"]].add(m["ref_id"])
    return len(seen["in"]), len(seen["out"])


def chain_state(path: Path) -> dict[str, Any]:
    """The audit chain of a benchmark's database after its daemon stopped."""
    from gateway.audit.chain_verify import verify

    db = Database(f"sqlite:///{path}", pool_size=1)
    try:
        return verify(db).to_json()
    finally:
        db.dispose()


def chain_check(state: dict[str, Any], *, on: bool) -> tuple[str, bool]:
    """(what is checked, whether it holds): with the chain on, every row the run wrote is
    in an intact chain, so the comparison measures a chain that did its work; off, the
    chain holds nothing."""
    if on:
        return "audit chain intact, every row chained", bool(
            state["ok"] and state["entries"] > 0 and state["pending"] == 0)
    return "audit chain off, no entry", state["entries"] == 0


def stored_fills(db: Database) -> tuple[int, int, int]:
    """(fills stored, distinct (session, ExecID), shares filled) from broker_reports."""
    with db.engine.connect() as conn:
        row = conn.execute(text(
            "SELECT COUNT(*), COUNT(DISTINCT session_id || exec_id), "
            "COALESCE(SUM(CAST(last_qty AS INTEGER)), 0) FROM broker_reports "
            "WHERE exec_type = 'F'")).one()
    return int(row[0]), int(row[1]), int(row[2])


def run(*, fills: int, orders: int, brokers: int, modes: tuple[str, ...], root: Path,
        timeout: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for system in ("relay", *modes):
        one = Run(root, system, fills=fills, orders=orders, brokers=brokers, timeout=timeout)
        try:
            one.start()
            results[system] = one.wait()
        finally:
            code = one.stop()
        if system != "relay":
            results[system]["daemon_exit"] = code
            results[system]["audit_chain"] = chain_state(
                one.state / "gateway" / "fixalloc.db")
    base = results["relay"]["fills_per_s"]
    ratios = {m.lower(): round(results[m]["fills_per_s"] / base, 3) for m in modes}
    checks = {f"{m.lower()}: {k}": v for m in modes for k, v in results[m]["checks"].items()}
    checks.update({f"{m.lower()}: daemon exit 0": results[m]["daemon_exit"] == 0
                   for m in modes})
    for m in modes:
        what, holds = chain_check(results[m]["audit_chain"], on="NOCHAIN" not in m)
        checks[f"{m.lower()}: {what}"] = holds
    return {"fills": results["relay"]["fills"], "orders": orders, "brokers": brokers,
            "relay": results["relay"],
            "fixalloc": {m.lower(): results[m] for m in modes},
            "ratio": ratios.get("full", next(iter(ratios.values()))), "ratios": ratios,
            "checks": checks, "ok": all(checks.values()), "state_dir": str(root)}


def _cmd(args: argparse.Namespace) -> int:
    root = Path(args.state_dir) if args.state_dir else Path(
        tempfile.mkdtemp(prefix="fixalloc-ingest-"))
    root.mkdir(parents=True, exist_ok=True)
    modes = tuple(m.strip().upper() for m in args.modes.split(","))
    if args.orders < 1 or args.fills < args.orders or args.brokers < 1 or \
            args.brokers > 26 or any(m not in MODES for m in modes):
        sys.stderr.write("fixalloc bench ingest: need 1 <= orders <= fills, 1..26 brokers, "
                         f"modes among {','.join(MODES)}\n")
        return 2
    try:
        out = run(fills=args.fills, orders=args.orders, brokers=args.brokers, modes=modes,
                  root=root, timeout=args.timeout)
    except DemoFailed as exc:
        sys.stderr.write(f"fixalloc bench ingest: FAILED: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0 if out["ok"] else 1
    w = sys.stdout.write
    w(f"{out['fills']} fills, {orders_s(out)}, {out['brokers']} broker(s)\n")
    w(f"  {'system':22s} {'fills/s':>10s} {'seconds':>9s} {'ratio':>7s} {'peak RSS MB':>12s}\n")
    w(f"  {'bare quickfix relay':22s} {out['relay']['fills_per_s']:>10} "
      f"{out['relay']['seconds']:>9} {'1.0':>7s}\n")
    for mode, r in out["fixalloc"].items():
        w(f"  {'fixalloc (' + mode + ')':22s} {r['fills_per_s']:>10} {r['seconds']:>9} "
          f"{out['ratios'][mode]:>7} {r['peak_rss_mb']:>12}\n")
    for name, ok in out["checks"].items():
        w(f"  check {name:44s} {'ok' if ok else 'FAILED'}\n")
    return 0 if out["ok"] else 1


def orders_s(out: dict[str, Any]) -> str:
    return f"{out['orders']} order(s)"


def add_command(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser(
        "ingest", help="fills per second stored and relayed, against a bare quickfix relay")
    p.add_argument("--fills", type=int, default=2000, help="fills in all")
    p.add_argument("--orders", type=int, default=1, help="blocks the fills are spread over")
    p.add_argument("--brokers", type=int, default=1, help="broker sessions (processes)")
    p.add_argument("--modes", default="FULL,NORMAL",
                   help="fixalloc durability modes to run, comma-separated: FULL,NORMAL")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds each system gets to deliver every fill")
    p.add_argument("--state-dir", help="keep every process's files here")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=_cmd)
