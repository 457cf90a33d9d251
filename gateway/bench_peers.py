"""The processes `fixalloc bench ingest` runs: brokers that fill as fast as their session
sends, an OMS that counts what reaches it, and a bare quickfix relay for the baseline.

    python -m gateway.bench_peers broker --port P --sender BRKA --fills-per-order F --out FILE
    python -m gateway.bench_peers oms --port P --orders M --symbol AAPL --fills F --out FILE
    python -m gateway.bench_peers relay --oms-port P --broker BRKA:P [--broker ...]

Each is one quickfix engine with FileStore and the FIX 4.4 dictionary's validation, as the
gateway has. They keep their Python to a minimum, so that the gateway (or the relay)
and not they set the pace. The broker and the OMS write one JSON line to `--out` when
their part is done (times are `time.time()`, comparable across processes on one machine)
and then keep their sessions up until they are terminated.
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import signal
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import quickfix as fix

from gateway.clock import SimulatedClock
from gateway.fix import codec
from gateway.fix import tags as T
from gateway.fix.sim.common import SimApplication, SimEngine

LAST_FRAGMENT = 893


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)


class FastBroker(SimApplication):
    """Acks each D, then sends its fills back to back from one worker thread; answers a J
    with P 87=0 so the block's allocation completes."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(None)
        self.fills, self.out = args.fills_per_order, Path(args.out)
        self.expected_orders = args.orders
        self.gap = 1.0 / args.rate if args.rate else 0.0
        self.engine = SimEngine(self, role="acceptor", sender=args.sender, target="FIXALLOC",
                                port=args.port, state_dir=Path(args.state_dir))
        self.work: queue.Queue[tuple[str, str, str, Decimal]] = queue.Queue()
        self.ids = itertools.count(1)
        self.sent, self.first, self.last, self.orders, self.js = 0, 0.0, 0.0, 0, 0
        threading.Thread(target=self._fill_loop, daemon=True).start()

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type == "D":
            self.work.put((message.getField(T.ClOrdID), message.getField(T.Symbol),
                           message.getField(T.Side), Decimal(message.getField(T.OrderQty))))
        elif msg_type == "J":
            if message.isSetField(LAST_FRAGMENT) and message.getField(LAST_FRAGMENT) != "Y":
                return  # a fragment: the P answers the whole J, after its last fragment
            self.js += 1
            ack = codec.new_message("P")
            ack.setField(T.AllocID, message.getField(T.AllocID))
            ack.setField(T.TransactTime, codec.utc_timestamp(datetime.now(UTC)))
            ack.setField(T.AllocStatus, "0")
            self.engine.send(ack)
        else:
            raise fix.UnsupportedMessageType()

    def _report(self, cl: str, symbol: str, side: str, qty: Decimal, exec_type: str,
                last: Decimal, cum: Decimal, oid: str) -> fix.Message:
        msg = codec.new_message("8")
        msg.setField(T.OrderID, oid)
        msg.setField(T.ClOrdID, cl)
        msg.setField(T.ExecID, f"{oid}-{next(self.ids)}")
        msg.setField(T.ExecType, exec_type)
        msg.setField(T.OrdStatus, "0" if exec_type == "0" else ("2" if cum == qty else "1"))
        msg.setField(T.Symbol, symbol)
        msg.setField(T.Side, side)
        msg.setField(T.OrderQty, codec.fmt(qty))
        if exec_type == "F":
            msg.setField(T.LastQty, codec.fmt(last))
            msg.setField(T.LastPx, "190")
        msg.setField(T.LeavesQty, codec.fmt(qty - cum))
        msg.setField(T.CumQty, codec.fmt(cum))
        msg.setField(T.AvgPx, "190" if cum else "0")
        msg.setField(T.TransactTime, codec.utc_timestamp(datetime.now(UTC)))
        return msg

    def _fill_loop(self) -> None:
        while True:
            cl, symbol, side, qty = self.work.get()
            self.orders += 1
            oid = f"{self.engine.session_id.getSenderCompID().getValue()}-{self.orders}"
            self.engine.send(self._report(cl, symbol, side, qty, "0", Decimal(0), Decimal(0),
                                          oid))
            lot = qty / self.fills
            due = time.monotonic()
            for i in range(1, self.fills + 1):
                if self.gap:
                    due += self.gap
                    time.sleep(max(0.0, due - time.monotonic()))
                msg = self._report(cl, symbol, side, qty, "F", lot, lot * i, oid)
                if not self.first:
                    self.first = time.time()
                self.engine.send(msg)
                self.sent += 1
            self.last = time.time()
            if self.orders == self.expected_orders:
                _write(self.out, {"fills_sent": self.sent, "first_sent": self.first,
                                  "last_sent": self.last})


class CountingOms(SimApplication):
    """Sends the blocks once logged on and counts the fills relayed back to it.

    By default every block goes at once and the out file is written when all their fills
    arrived. `--sequential` sends a block only once the previous one's whole J arrived
    (after `--pause-ms`), and writes the out file after the last J. `--background-book`
    first sends one long order to that book, whose fills are the background load.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(None)
        self.args, self.out = args, Path(args.out)
        self.expected = args.orders * args.fills
        self.engine = SimEngine(self, role="initiator", sender="OMS1", target="FIXALLOC",
                                port=args.port, state_dir=Path(args.state_dir))
        self.fills, self.first, self.last, self.js = 0, 0.0, 0.0, 0
        self.lock = threading.Lock()
        self.j_done = threading.Semaphore(0)
        # The daemon runs on a rehearsal clock: orders must carry its date and time.
        self.clock = SimulatedClock(datetime.fromisoformat(args.clock_start), 1.0) \
            if args.clock_start else None

    def onLogon(self, session_id: fix.SessionID) -> None:
        super().onLogon(session_id)
        threading.Thread(target=self._send_blocks, daemon=True).start()

    def _order(self, cl: str, book: str, qty: Decimal) -> None:
        msg = codec.build_new_order_single(
            cl_ord_id=cl, symbol=self.args.symbol, side="buy", qty=qty, ord_type="2",
            price=Decimal(190), time_in_force="0",
            transact_time=self.clock.now() if self.clock else datetime.now(UTC))
        msg.setField(T.Account, book)
        self.engine.send(msg)

    def _send_blocks(self) -> None:
        if self.args.background_book:
            # One share a fill: the order stays within the book's size limits however
            # long the background has to last.
            self._order("BG-1", self.args.background_book, Decimal(self.args.background_lots))
            time.sleep(self.args.pause_ms / 1000)
        for n in range(self.args.orders):
            self._order(f"ING-{n:06d}", self.args.books[n % len(self.args.books)],
                        Decimal(self.args.fills * self.args.shares_per_fill))
            if self.args.sequential:
                self.j_done.acquire()
                time.sleep(self.args.pause_ms / 1000)
        if self.args.sequential:
            _write(self.out, {"blocks_done": self.args.orders, "fills_received": self.fills})

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type == "8":
            if message.getField(T.ExecType) != "F":
                return
            with self.lock:
                self.fills += 1
                now = time.time()
                self.first = self.first or now
                self.last = now
                if self.fills == self.expected and not self.args.sequential:
                    _write(self.out, {"fills_received": self.fills, "first_received":
                                      self.first, "last_received": self.last})
        elif msg_type == "J":
            if message.isSetField(LAST_FRAGMENT) and message.getField(LAST_FRAGMENT) != "Y":
                return
            self.js += 1
            self.j_done.release()
        elif msg_type not in ("AS", "AK", "9", "j"):
            raise fix.UnsupportedMessageType()


class Relay(fix.Application):  # type: ignore[misc]
    """The baseline: D from the OMS to a broker (round robin), every 8 and P back; no
    database, no checks beyond quickfix's own."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        state = Path(args.state_dir)
        self.oms = SimEngine(self, role="acceptor", sender="FIXALLOC", target="OMS1",
                             port=args.oms_port, state_dir=state / "oms")
        self.brokers: list[SimEngine] = []
        for spec in args.broker:
            name, port = spec.split(":")
            self.brokers.append(SimEngine(self, role="initiator", sender="FIXALLOC",
                                          target=name, port=int(port),
                                          state_dir=state / name))
        self.turn = itertools.count()

    def start(self) -> None:
        for engine in (self.oms, *self.brokers):
            engine.start()

    def onCreate(self, session_id: fix.SessionID) -> None:
        return None

    def onLogon(self, session_id: fix.SessionID) -> None:
        return None

    def onLogout(self, session_id: fix.SessionID) -> None:
        return None

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        return None

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        return None

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        return None

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        out = fix.Message(message)
        if session_id.getTargetCompID().getValue() == "OMS1":
            broker = self.brokers[next(self.turn) % len(self.brokers)]
            fix.Session.sendToTarget(out, broker.session_id)
        else:
            fix.Session.sendToTarget(out, self.oms.session_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench_peers")
    sub = parser.add_subparsers(dest="role", required=True)
    b = sub.add_parser("broker")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--sender", required=True)
    b.add_argument("--orders", type=int, required=True, help="orders this broker will get")
    b.add_argument("--fills-per-order", type=int, required=True)
    b.add_argument("--rate", type=float, default=0.0,
                   help="fills per second (0: as fast as the session sends)")
    o = sub.add_parser("oms")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--orders", type=int, required=True)
    o.add_argument("--fills", type=int, required=True, help="fills per order")
    o.add_argument("--symbol", default="AAPL")
    o.add_argument("--shares-per-fill", type=int, default=100,
                   help="a block's quantity is fills x this")
    o.add_argument("--books", nargs="+", default=["SMA-CORE"])
    o.add_argument("--clock-start", help="the daemon's --clock-start: TransactTime follows it")
    o.add_argument("--sequential", action="store_true",
                   help="one block at a time: the next after the previous one's J")
    o.add_argument("--pause-ms", type=int, default=200)
    o.add_argument("--background-book")
    o.add_argument("--background-lots", type=int, default=0)
    r = sub.add_parser("relay")
    r.add_argument("--oms-port", type=int, required=True)
    r.add_argument("--broker", action="append", required=True, metavar="NAME:PORT")
    for p in (b, o, r):
        p.add_argument("--state-dir", required=True)
    for p in (b, o):
        p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    app: Any = {"broker": FastBroker, "oms": CountingOms, "relay": Relay}[args.role](args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app.start()
    stop.wait()
    for engine in getattr(app, "brokers", []):
        engine.stop()
    (app.oms if args.role == "relay" else app.engine).stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
