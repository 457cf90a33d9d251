"""`fixalloc demo --scenario day`: one trade date, from the first block to the 21:00 sweep.

The daemon runs as its own process on a simulated clock (`fixalloc run --clock-start`)
that starts at 15:30 New York time on the last trading day and runs `speed` times faster
than real time; the scheduler is off and this scenario asks for each sweep checkpoint
(POST /sweep/run) as the daemon's clock passes it. On the way, the things a trade-ops desk
sees on a real day, each played by the broker simulator and answered by the gateway alone
or by an operator action over the API:

  A  a clean block; then a bust of one fill after its J -> J Replace (71=1), re-affirmed
  B  an AK whose net money is wrong (AU 940=2, the broker's replacement AK affirmed) and
     one line whose AK never comes (the sweep's ConfirmationRequest BH brings it)
  C  an account reject (P 87=2, 776=0) -> exception -> operator replace -> accepted

It exits 0 only when the 21:00 report shows every ticket affirmed and nothing open, and
each of those paths left its messages on the wire.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import date, datetime, timedelta
from datetime import time as wall
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.clock import NEW_YORK, SimulatedClock
from gateway.demo import DemoFailed, demo_config, stop_daemon
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.fix.sim.plans import PostTradePlan
from gateway.persistence.store import Database
from gateway.ports import free_port
from gateway.posttrade.sweep_settings import is_session_day

CHECKPOINTS = ("16:30", "18:00", "19:00", "20:00", "20:45", "21:00")
BROKER_KEY = "FIX.4.4:FIXALLOC->BRKA"
TOKEN_ENV = "FIXALLOC_DEMO_TOKEN"  # noqa: S105 - the name of a variable, not a secret
BLOCKS = {
    "A": ("AAPL", Decimal(30_000), Decimal("190.50")),
    "B": ("MSFT", Decimal(20_000), Decimal("420.50")),
    "C": ("JNJ", Decimal(10_000), Decimal("155.50")),
}
PLANS = {
    "A": PostTradePlan(),
    "B": PostTradePlan(mismatch={"SMA0002": "net_money"}, missing_ak=frozenset({"SMA0004"})),
    "C": PostTradePlan(reject_account={"SMA0001": "0"}),
}


def last_trading_day(today: date) -> date:
    day = today - timedelta(days=1)
    while not is_session_day(day):
        day -= timedelta(days=1)
    return day


class Day:
    def __init__(self, state: Path, speed: float, say: Any) -> None:
        self.state, self.speed, self.say = state, speed, say
        self.ports = {"oms": free_port(), "broker": free_port(), "http": free_port()}
        self.trade_date = last_trading_day(datetime.now(NEW_YORK).date())
        self.start = datetime.combine(self.trade_date, wall(15, 30), tzinfo=NEW_YORK)
        self.token = secrets.token_hex(16)
        self.orders: dict[str, str] = {}  # block -> our order id
        self.blotter: dict[str, BlotterOrder] = {}
        self.checkpoints: list[dict[str, Any]] = []

    # -- HTTP -----------------------------------------------------------------------------

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['http']}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except (urllib.error.URLError, OSError):
            return 0, None

    def now(self) -> datetime:
        code, body = self.http("GET", "/status")
        if code != 200:
            raise DemoFailed(f"GET /status answered {code}")
        return datetime.fromisoformat(body["now"]).astimezone(NEW_YORK)

    def allocation(self, alloc_id: str) -> dict[str, Any]:
        code, body = self.http("GET", f"/allocations/{alloc_id}")
        return body if code == 200 else {}

    def status_of(self, alloc_id: str) -> str | None:
        alloc = self.allocation(alloc_id).get("allocation")
        return alloc["status"] if alloc else None

    def affirmed(self, alloc_id: str) -> bool:
        lines = self.allocation(alloc_id).get("lines") or []
        return bool(lines) and all(x.get("ticket_state") == "affirmed" for x in lines)

    def must(self, predicate: Any, seconds: float, what: str) -> None:
        if not wait_for(predicate, seconds):
            raise DemoFailed(f"not within {seconds:g} s: {what}")

    # -- the day ----------------------------------------------------------------------------

    def send_block(self, name: str, oms: OmsSimulator, broker: BrokerSimulator) -> str:
        symbol, qty, price = BLOCKS[name]
        with broker._lock:
            # The plan in force when this block's J arrives (the earlier Js are booked).
            broker.post_trade = PLANS[name]
        cl = f"DAY-{name}-{int(time.time())}"
        self.blotter[name] = BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol=symbol,
                                          side="buy", qty=qty, ord_type="2", price=price)
        oms.send_order(self.blotter[name])
        def answered() -> bool:
            last = oms.last_execution(cl)
            if last is not None and last.ord_status == "8":
                raise DemoFailed(f"block {name} was rejected: {last.text}")
            return oms.allocation_for(cl) is not None

        self.must(answered, 60, f"block {name}'s J")
        j = oms.allocation_for(cl)
        assert j is not None
        # The broker took its plan when it booked the J; only then may the next one change.
        self.must(lambda: any(x.alloc_id == j.alloc_id for x in broker.allocations), 30,
                  f"the broker to book block {name}'s J")
        self.orders[name] = j.alloc_id.rsplit("-J", 1)[0]
        self.say(f"  {self.now():%H:%M} block {name}: buy {qty:,} {symbol} -> "
                 f"{j.alloc_id}, {len(j.lines)} accounts")
        return j.alloc_id

    def sweep(self, at: str) -> dict[str, Any]:
        due = datetime.combine(self.trade_date, wall.fromisoformat(at), tzinfo=NEW_YORK)
        self.must(lambda: self.now() >= due, (due - self.start).total_seconds() / self.speed
                  + 60, f"the daemon's clock to reach {at}")
        code, body = self.http("POST", "/sweep/run",
                               {"at": at, "date": self.trade_date.isoformat()})
        if code != 200:
            raise DemoFailed(f"POST /sweep/run {at} answered {code}: {body}")
        report: dict[str, Any] = body["report"]
        t = report["totals"]
        kinds = Counter(item["kind"] for item in report["open_items"])
        self.say(f"  {at} sweep: {t['blocks']} blocks, allocated {t['allocated']}, "
                 f"accepted {t['accepted']}, affirmed {t['affirmed']}/{t['tickets']} "
                 f"({t['affirmed_pct']}%), open items {sum(kinds.values())}"
                 + (f" ({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))})"
                    if kinds else ""))
        self.checkpoints.append({"at": at, "totals": t, "open_items": dict(kinds)})
        return report

    def play(self, oms: OmsSimulator, broker: BrokerSimulator) -> dict[str, Any]:
        a1 = self.send_block("A", oms, broker)
        b1 = self.send_block("B", oms, broker)
        c1 = self.send_block("C", oms, broker)
        self.must(lambda: self.affirmed(a1), 60, "block A affirmed")
        self.must(lambda: self.status_of(b1) == "accepted", 60, "block B accepted")
        self.must(lambda: self.status_of(c1) == "account_rejected", 60,
                  "block C's account reject")
        self.say(f"  {self.now():%H:%M} block C: P 87=2 for SMA0001 -> exception opened")
        # The fixes the broker will accept: the Replace of C, and of A after its bust.
        for name in ("A", "C"):
            broker.set_post_trade(f"{self.orders[name]}-J2", PostTradePlan())
        order = next(o for o in broker.orders.values() if o.cl_ord_id == self.orders["A"])
        busted = order.executions[0]
        broker.bust(order, busted.exec_id)
        self.say(f"  {self.now():%H:%M} block A: the broker busts {busted.qty:,} @ "
                 f"{busted.px} after the J")
        a2 = f"{self.orders['A']}-J2"
        self.must(lambda: self.affirmed(a2), 60, "block A's Replace affirmed")
        self.say(f"  {self.now():%H:%M} block A: J Replace {a2} accepted and affirmed")
        # The bust reopened 10,000 shares at the broker; the trader cancels the balance
        # (the sweep would flag an order still working after the close).
        oms.send_cancel(self.blotter["A"])
        self.must(lambda: any(e.ord_status == "4" for cl, seen in list(oms.executions.items())
                              if cl.startswith(self.blotter["A"].cl_ord_id) for e in seen),
                  60, "block A's balance cancelled")
        self.say(f"  {self.now():%H:%M} block A: the trader cancels the reopened balance")
        self.sweep("16:30")
        code, body = self.http("POST", f"/allocations/{c1}/replace",
                               {"reason": "SMA0001 set up at the broker", "actor": "ops:demo"})
        if code != 200:
            raise DemoFailed(f"operator replace of {c1} answered {code}: {body}")
        c2 = body["result"]
        self.say(f"  {self.now():%H:%M} operator: replace {c1} -> {c2} (SMA0001 fixed)")
        self.must(lambda: self.affirmed(c2), 60, "block C's Replace affirmed")
        for at in CHECKPOINTS[1:]:
            self.sweep(at)
        return {"a": (a1, a2), "b": b1, "c": (c1, c2)}


def _run_daemon(cfg: Path, day: Day, log: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", TOKEN_ENV: day.token}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--log-format", "json",
         "--clock-start", day.start.isoformat(), "--clock-speed", str(day.speed)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(cfg.parent))


def run_day(*, state: Path, speed: float = 240.0, say: Any = print) -> dict[str, Any]:
    state.mkdir(parents=True, exist_ok=True)
    day = Day(state, speed, say)
    cfg = demo_config(
        state, oms_port=day.ports["oms"], broker_port=day.ports["broker"],
        http_port=day.ports["http"], http_extra=f'api_token_env = "{TOKEN_ENV}"',
        # The daemon's own BH waits past the day: the sweep is what asks for missing AKs.
        broker_extra="ak_timeout_minutes = 600\np_timeout_minutes = 120",
        # The broker's ack wait is in simulated seconds too: a busy dispatcher must not
        # look like a silent broker.
        extra="ack_timeout_seconds = 3600\n\n[sweep]\nenabled = false\nak_timeout_minutes = 30\n")
    say(f"fixalloc demo --scenario day: trade date {day.trade_date}, clock from "
        f"{day.start:%H:%M} ET at {speed:g}x, state in {state}")
    broker = BrokerSimulator(port=day.ports["broker"], state_dir=state / "sim-broker",
                             plan=FillPlan(fills=3, interval_ms=60))
    broker.start()
    log = (state / "fixalloc.log").open("w", encoding="utf-8")
    daemon = _run_daemon(cfg, day, log)
    # The OMS stamps its orders on the same simulated day (the gateway checks the date).
    oms = OmsSimulator(port=day.ports["oms"], state_dir=state / "sim-oms",
                       clock=SimulatedClock(day.start, speed))
    try:
        day.must(lambda: daemon.poll() is not None or day.http("GET", "/healthz")[0] == 200,
                 60, "the daemon to serve HTTP")
        if daemon.poll() is not None:
            raise DemoFailed(f"daemon exited {daemon.returncode}; see {log.name}")
        oms.start()
        day.must(lambda: day.http("GET", "/readyz")[0] == 200, 30, "sessions logged on")
        ids = day.play(oms, broker)
    finally:
        stop_daemon(daemon)
        oms.stop()
        broker.stop()
        log.close()
    return summarize(day, ids, broker)


def summarize(day: Day, ids: dict[str, Any], broker: BrokerSimulator) -> dict[str, Any]:
    db = Database(f"sqlite:///{day.state / 'gateway' / 'fixalloc.db'}")
    try:
        wire = db.wire_messages(session_id=BROKER_KEY)
        counts = Counter(f"{m['msg_type']} {m['direction']}" for m in wire
                         if m["msg_type"] in ("J", "P", "AK", "AU", "BH", "AS", "AT"))
        au_rejects = sum(1 for m in wire if m["msg_type"] == "AU" and m["direction"] == "out"
                         and b"\x01940=2\x01" in m["raw"])
        final = next(r for r in db.sweep_reports(day.trade_date.isoformat())
                     if r["checkpoint"] == "21:00")
    finally:
        db.dispose()
    report = json.loads(final["report_json"])
    totals = report["totals"]
    checks = {
        "every ticket affirmed at 21:00": totals["affirmed"] == totals["tickets"] > 0,
        "nothing open at 21:00": not report["open_items"],
        "the bust was answered with a J Replace": any(
            j.alloc_id == ids["a"][1] and j.alloc_trans_type == "1" for j in broker.allocations),
        "the mismatched AK was rejected (AU 940=2)": au_rejects >= 1,
        "the missing AK was asked for (BH)": counts.get("BH out", 0) >= 1,
        "the account reject was fixed by the operator's Replace": any(
            j.alloc_id == ids["c"][1] for j in broker.allocations),
    }
    return {"trade_date": day.trade_date.isoformat(), "checkpoints": day.checkpoints,
            "report_21_00": report, "messages": dict(sorted(counts.items())),
            "checks": checks, "ok": all(checks.values()),
            "database": str(day.state / "gateway" / "fixalloc.db")}


def print_summary(s: dict[str, Any]) -> None:
    from gateway.posttrade.sweep_report import render

    row = {"id": 0, "trade_date": s["trade_date"], "checkpoint": "21:00",
           "ran_at": s["report_21_00"].get("ran_at", ""), "runs": 1,
           "report": s["report_21_00"]}
    # The per-account rows are in the stored report (`fixalloc sweep report`); here, the
    # totals, brokers, custodians and every open item.
    table = [x for x in render([row], "table").splitlines() if not x.startswith("account ")]
    out = ["", "The 21:00 report", *table]
    out.append("Messages with the broker: " + ", ".join(f"{k} {v}"
                                                         for k, v in s["messages"].items()))
    out += [f"  [{'ok' if v else 'FAILED'}] {k}" for k, v in s["checks"].items()]
    out.append(f"  database {s['database']}")
    print("\n".join(out), flush=True)  # noqa: T201
