"""`fixalloc demo`: the daemon, a simulated broker and a simulated OMS, end to end on 127.0.0.1.

The daemon runs as its own process from the shipped config/ (ports moved to free ones so
a running gateway is not disturbed); the simulators run in this process. One block buy is
sent, fills stream in, the J goes out, and the summary is read back from the database the
daemon wrote, so what it prints is what was persisted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.persistence.store import Database
from gateway.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"


def stop_daemon(daemon: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM (the daemon drains and logs out), then SIGKILL if it has not gone in time."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)


class DemoFailed(RuntimeError):
    pass


def demo_config(state: Path, *, oms_port: int, broker_port: int, http_port: int,
                config_dir: Path = CONFIG_DIR, http_extra: str = "", broker_extra: str = "",
                extra: str = "") -> Path:
    """The shipped config with the demo's state dir and free ports (and a scenario's extras)."""
    text = f"""
[gateway]
name = "fixalloc-demo"
state_dir = "{state / 'gateway'}"

[http]
host = "127.0.0.1"
port = {http_port}
{http_extra}

[fix]
sender_comp_id = "FIXALLOC"
data_dictionary = "{ROOT / 'fix_specs' / 'FIX44.xml'}"
reconnect_seconds = 1

[[fix.oms]]
name = "OMS1"
target_comp_id = "OMS1"
port = {oms_port}

[[fix.brokers]]
name = "BRKA"
target_comp_id = "BRKA"
host = "127.0.0.1"
port = {broker_port}
alloc_type = "calculated"
{broker_extra}

[refdata]
securities = "{config_dir / 'securities.csv'}"
accounts = "{config_dir / 'accounts.csv'}"
positions = "{config_dir / 'positions.csv'}"
rules = "{config_dir / 'rules'}"
watch = false

[[books]]
name = "SMA-CORE"
broker = "BRKA"
{extra}
"""
    path = state / "demo.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Progress:
    json_mode: bool
    fills: int = 0
    cum: Decimal = Decimal(0)
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        if not self.json_mode:
            print(text, flush=True)  # noqa: T201

    def on_oms(self, kind: str, payload: Any) -> None:
        if kind == "execution" and payload.exec_type == "F":
            self.fills += 1
            self.cum = payload.cum_qty
            self.say(f"  fill {self.fills:>3}: {payload.last_qty:>8,} @ {payload.last_px}  "
                     f"cum {payload.cum_qty:>9,}  avg {payload.avg_px}")
        elif kind == "execution" and payload.exec_type == "8":
            self.say(f"  order rejected: {payload.text}")
        elif kind == "allocation":
            self.say(f"  J {payload.alloc_id} received by the OMS: {len(payload.lines)} accounts")


def _http_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


def run_demo(*, state: Path, qty: Decimal, fills: int, interval_ms: int, price: Decimal,
             json_mode: bool, timeout: float = 120.0) -> dict[str, Any]:
    state.mkdir(parents=True, exist_ok=True)
    oms_port, broker_port, http_port = free_port(), free_port(), free_port()
    cfg = demo_config(state, oms_port=oms_port, broker_port=broker_port, http_port=http_port)
    progress = Progress(json_mode)
    progress.say(f"fixalloc demo: state in {state}")
    broker = BrokerSimulator(port=broker_port, state_dir=state / "sim-broker",
                             plan=FillPlan(fills=fills, interval_ms=interval_ms))
    broker.start()
    log_file = (state / "fixalloc.log").open("w", encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--log-format", "json"],
        stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(state))
    oms = OmsSimulator(port=oms_port, state_dir=state / "sim-oms", on_message=progress.on_oms)
    try:
        progress.say(f"  daemon pid {daemon.pid}; waiting for its sessions (log: {log_file.name})")
        ready = wait_for(lambda: daemon.poll() is not None
                         or _http_json(f"http://127.0.0.1:{http_port}/healthz")[0] == 200, 60)
        if daemon.poll() is not None or not ready:
            raise DemoFailed(f"daemon did not start (exit {daemon.poll()}); see {log_file.name}")
        oms.start()
        if not wait_for(lambda: _http_json(f"http://127.0.0.1:{http_port}/readyz")[0] == 200, 30):
            raise DemoFailed("sessions did not log on within 30 s")
        order = BlotterOrder(cl_ord_id=f"DEMO-{int(time.time())}", book="SMA-CORE",
                             symbol="AAPL", side="buy", qty=qty, ord_type="2", price=price)
        progress.say(f"  sending block: buy {qty:,} AAPL limit {price} for book SMA-CORE")
        oms.send_order(order)
        if not oms.wait(lambda: oms.allocation_for(order.cl_ord_id) is not None
                        or ((e := oms.last_execution(order.cl_ord_id)) is not None
                            and e.ord_status == "8"), timeout):
            raise DemoFailed("no allocation reached the OMS in time")
        last = oms.last_execution(order.cl_ord_id)
        if last is not None and last.ord_status == "8":
            raise DemoFailed(f"the gateway rejected the order: {last.text}")
        j = oms.allocation_for(order.cl_ord_id)
        assert j is not None

        def acked() -> bool:
            code, body = _http_json(f"http://127.0.0.1:{http_port}/allocations/{j.alloc_id}")
            return code == 200 and body["allocation"]["status"] in (
                "accepted", "block_rejected", "account_rejected")

        if not wait_for(acked, 30):
            raise DemoFailed(f"no final AllocationInstructionAck for {j.alloc_id}")
        # The broker confirms each line (AK) and we affirm it (AU): stop only once every AU
        # has reached the broker, so both sides' message counts describe a finished block.
        if not wait_for(lambda: len(broker.affirmations) >= len(j.lines), 30):
            raise DemoFailed(f"{len(broker.affirmations)} of {len(j.lines)} confirmations "
                             "affirmed in time")
    finally:
        # Stop the daemon first so its Logouts are exchanged, then read the simulators'
        # sequence numbers: they are the independent count of what crossed each session.
        stop_daemon(daemon)
        wait_for(lambda: not oms.engine.is_logged_on() and not broker.engine.is_logged_on(), 10)
        counterparty = {"FIX.4.4:FIXALLOC->OMS1": oms.engine.message_counts(),
                        "FIX.4.4:FIXALLOC->BRKA": broker.engine.message_counts()}
        oms.stop()
        broker.stop()
        log_file.close()
    if daemon.returncode != 0:
        raise DemoFailed(f"daemon exited {daemon.returncode} on SIGTERM; see {log_file.name}")
    return summarize(state, j.alloc_id, order.cl_ord_id, broker=broker, counterparty=counterparty)


def summarize(
    state: Path, alloc_id: str, cl_ord_id: str, *, broker: BrokerSimulator,
    counterparty: dict[str, tuple[int, int]],
) -> dict[str, Any]:
    db = Database(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}")
    try:
        alloc = db.load_allocation(alloc_id)
        if alloc is None:
            raise DemoFailed(f"allocation {alloc_id} is not in the database")
        lines = db.load_allocation_lines(alloc_id)
        decision_row = db.load_decision(alloc["decision_id"])
        decision = json.loads(decision_row["canonical_json"]) if decision_row else {}
        order = next(o for o in db.load_orders() if o["order_id"] == alloc["order_id"])
        wire = db.wire_messages()
        broker_key = "FIX.4.4:FIXALLOC->BRKA"
        fills_in = [m for m in wire if m["session_id"] == broker_key and m["direction"] == "in"
                    and m["msg_type"] == "8" and b"\x01150=F\x01" in m["raw"]]
        j_out = [m for m in wire if m["session_id"] == broker_key and m["direction"] == "out"
                 and m["msg_type"] == "J"]
        latency_ms = None
        if fills_in and j_out:
            delta = j_out[0]["recorded_at"] - fills_in[-1]["recorded_at"]
            latency_ms = round(delta.total_seconds() * 1000, 1)
        by_session: dict[str, dict[str, int]] = {
            key: {"in": 0, "out": 0, "counterparty_sent": sent, "counterparty_received": recv}
            for key, (sent, recv) in counterparty.items()}
        for m in wire:
            if m["session_id"] in by_session:
                by_session[m["session_id"]][m["direction"]] += 1
        explained: dict[str, int] = {}
        for result in decision.get("results", []):
            if result.get("status") != "allocated":
                reasons = result.get("reasons") or [{"text": result.get("status")}]
                key = f"{result.get('status')}|{reasons[0].get('text')}"
                explained[key] = explained.get(key, 0) + 1
    finally:
        db.dispose()
    total = sum(Decimal(x["qty"]) for x in lines)
    filled = Decimal(order["cum_qty"])
    broker_filled = sum((o.cum_qty for o in broker.orders.values()), Decimal(0))
    return {
        "cl_ord_id": cl_ord_id,
        "order_id": order["order_id"],
        "order_status": order["status"],
        "filled_qty": str(filled),
        "broker_filled_qty": str(broker_filled),
        "fills": len(fills_in),
        "accounts_in_book": len(decision.get("results", [])),
        "accounts_allocated": len(lines),
        "total_allocated": str(total),
        "allocated_equals_filled": total == filled == broker_filled,
        "avg_px": alloc["avg_px"],
        "method": decision.get("method"),
        "rulebook_version": decision.get("rulebook_version"),
        "alloc_id": alloc_id,
        "p_status": alloc["status"],
        "last_fill_to_j_ms": latency_ms,
        "explained": [{"status": k.split("|", 1)[0], "accounts": v,
                       "reason": k.split("|", 1)[1]} for k, v in sorted(explained.items())],
        "fix_messages_persisted": by_session,
        "all_messages_persisted": all(
            c["in"] == c["counterparty_sent"] and c["out"] == c["counterparty_received"]
            for c in by_session.values()),
        "broker_received_j": [j.alloc_id for j in broker.allocations],
        "database": str(state / "gateway" / "fixalloc.db"),
    }


def _print_summary(s: dict[str, Any]) -> None:
    out = [
        "",
        "Summary",
        f"  order               {s['cl_ord_id']} -> {s['order_id']} ({s['order_status']})",
        f"  filled              {Decimal(s['filled_qty']):,} shares in {s['fills']} fills",
        f"  accounts allocated  {s['accounts_allocated']} of {s['accounts_in_book']} "
        f"(method {s['method']})",
        f"  total allocated     {Decimal(s['total_allocated']):,} "
        f"({'=' if s['allocated_equals_filled'] else '!='} total filled)",
        f"  average price       {s['avg_px']}",
        f"  AllocationInstr.    {s['alloc_id']}  P status: {s['p_status']}",
        f"  last fill -> J      {s['last_fill_to_j_ms']} ms (wire log timestamps)",
    ]
    for item in s["explained"]:
        out.append(f"  {item['status']:<19} {item['accounts']} x {item['reason']}")
    for session, c in sorted(s["fix_messages_persisted"].items()):
        out.append(f"  persisted           {session}: {c['in']} in, {c['out']} out "
                   f"(counterparty sent {c['counterparty_sent']}, "
                   f"received {c['counterparty_received']})")
    out.append(f"  database            {s['database']}")
    print("\n".join(out), flush=True)  # noqa: T201


def _cmd_day(args: argparse.Namespace, state: Path) -> int:
    from gateway.demo_day import print_summary, run_day

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)  # noqa: T201

    try:
        summary = run_day(state=state, speed=args.speed, say=say)
    except DemoFailed as exc:
        print(f"fixalloc demo --scenario day failed: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))  # noqa: T201
    else:
        print_summary(summary)
    if not summary["ok"]:
        print("fixalloc demo --scenario day failed: the day did not end as expected",  # noqa: T201
              file=sys.stderr)
    return 0 if summary["ok"] else 1


def _cmd_scenario(args: argparse.Namespace, state: Path) -> int:
    """The HTTP-driven scenarios: each returns a summary whose `ok` is the verdict."""
    from gateway.demo_approval import run_approval
    from gateway.demo_multibroker import run_multibroker_demo
    from gateway.demo_rebalance import run_cross_demo, run_rebalance_demo

    run, done = {
        "approval": (run_approval,
                     "ok: held until two PMs approved, then the J went out as decided"),
        "rebalance": (run_rebalance_demo,
                      "ok: every block routed and allocated back to the accounts that asked"),
        "multibroker": (run_multibroker_demo, "ok: one block, one child order and one J per "
                                              "broker, one cumulative view for the OMS"),
        "cross": (run_cross_demo, "ok: the opposite interest crossed at the reference price "
                                  "and only the net routed and allocated"),
    }[args.scenario]

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)  # noqa: T201

    try:
        summary = run(state=state, say=say)
    except DemoFailed as exc:
        print(f"fixalloc demo --scenario {args.scenario} failed: {exc}",  # noqa: T201
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))  # noqa: T201
    elif summary["ok"]:
        print(done)  # noqa: T201
    if not summary["ok"]:
        print(f"fixalloc demo --scenario {args.scenario} failed: "  # noqa: T201
              f"{json.dumps(summary, default=str)[:2000]}", file=sys.stderr)
    return 0 if summary["ok"] else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve() if args.state_dir else Path(
        tempfile.mkdtemp(prefix="fixalloc-demo-"))
    if args.scenario == "day":
        return _cmd_day(args, state)
    if args.scenario in ("approval", "rebalance", "cross", "multibroker"):
        return _cmd_scenario(args, state)
    started = datetime.now()
    try:
        summary = run_demo(state=state, qty=Decimal(args.qty), fills=args.fills,
                           interval_ms=args.interval_ms, price=Decimal(args.price),
                           json_mode=args.json)
    except DemoFailed as exc:
        print(f"fixalloc demo failed: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    summary["elapsed_s"] = round((datetime.now() - started).total_seconds(), 2)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))  # noqa: T201
    else:
        _print_summary(summary)
    ok = (summary["allocated_equals_filled"] and summary["p_status"] == "accepted"
          and summary["all_messages_persisted"])
    if not ok:
        print("fixalloc demo failed: allocation incomplete, not accepted, or FIX messages "  # noqa: T201
              "missing from the database", file=sys.stderr)
    return 0 if ok else 1


def add_command(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="run the daemon with a simulated broker and OMS on 127.0.0.1")
    demo.add_argument("--scenario",
                      choices=["block", "day", "approval", "rebalance", "cross",
                               "multibroker"],
                      default="block",
                      help="block: one block to its J; day: a trade date to the 21:00 sweep; "
                           "approval: a block held by a four-eyes policy, approved over HTTP; "
                           "rebalance: a model's blocks sent with `fixalloc rebalance --send` "
                           "and allocated back to the accounts that asked; cross: the same "
                           "with opposite interest crossed at a reference price first; "
                           "multibroker: a block split across two brokers by prime broker")
    demo.add_argument("--speed", type=float, default=240.0,
                      help="day: simulated seconds per real second")
    demo.add_argument("--state-dir", help="keep the SQLite database and logs here")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--qty", default="500000")
    demo.add_argument("--price", default="190.50")
    demo.add_argument("--fills", type=int, default=20)
    demo.add_argument("--interval-ms", type=int, default=100)
    demo.set_defaults(func=_cmd_demo)
