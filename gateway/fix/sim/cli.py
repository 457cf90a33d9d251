"""CLI for the simulators: `fixalloc sim broker` and `fixalloc sim oms`."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any


def _printer(kind: str, payload: Any) -> None:
    if kind == "execution":
        print(f"ER  {payload.cl_ord_id} exec_type={payload.exec_type} "  # noqa: T201
              f"status={payload.ord_status} last={payload.last_qty}@{payload.last_px} "
              f"cum={payload.cum_qty} avg={payload.avg_px}"
              + (f" text={payload.text!r}" if payload.text else ""), flush=True)
    elif kind == "allocation":
        print(f"J   {payload.alloc_id} qty={payload.quantity} avg={payload.avg_px} "  # noqa: T201
              f"accounts={len(payload.lines)}", flush=True)
    else:
        print(f"{kind}: {payload}", flush=True)  # noqa: T201


def _state(arg: str | None, prefix: str) -> Path:
    return Path(arg) if arg else Path(tempfile.mkdtemp(prefix=prefix))


def _cmd_broker(args: argparse.Namespace) -> int:
    from gateway.fix.sim.broker import BrokerSimulator, FillPlan

    prices = tuple(Decimal(p) for p in args.prices.split(",")) if args.prices else ()
    plan = FillPlan(fills=args.fills, interval_ms=args.interval_ms, prices=prices, lot=args.lot)
    sim = BrokerSimulator(port=args.port, state_dir=_state(args.state_dir, "fixalloc-broker-"),
                          sender=args.sender, target=args.target, plan=plan,
                          on_message=_printer)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sim.start()
    print(f"broker simulator {args.sender} listening on port {args.port}", flush=True)  # noqa: T201
    while not stop.wait(0.5):
        pass
    sim.stop()
    return 0


def _cmd_oms(args: argparse.Namespace) -> int:
    from gateway.fix.sim.oms import BlotterOrder, OmsSimulator, read_blotter

    if args.blotter:
        orders = read_blotter(Path(args.blotter))
    else:
        orders = [BlotterOrder(cl_ord_id=args.cl_ord_id, book=args.book, symbol=args.symbol,
                               side=args.side, qty=Decimal(args.qty),
                               ord_type="2" if args.price else "1",
                               price=Decimal(args.price) if args.price else None)]
    sim = OmsSimulator(port=args.port, host=args.host,
                       state_dir=_state(args.state_dir, "fixalloc-oms-"),
                       sender=args.sender, target=args.target, on_message=_printer)
    sim.start()
    try:
        if not sim.engine.wait_logged_on(args.timeout):
            print("error: OMS session did not log on", file=sys.stderr)  # noqa: T201
            return 1
        for order in orders:
            sim.send_order(order)
        ids = [o.cl_ord_id for o in orders]

        def finished() -> bool:
            return all(sim.allocation_for(i) is not None or (
                (last := sim.last_execution(i)) is not None and last.ord_status == "8")
                for i in ids)

        if not sim.wait(finished, args.timeout):
            print("error: timed out waiting for allocations", file=sys.stderr)  # noqa: T201
            return 1
        return 0
    finally:
        sim.stop()


def add_command(sub: Any) -> None:
    sim = sub.add_parser("sim", help="FIX counterparty simulators for your own testing")
    sims = sim.add_subparsers(dest="sim_command", required=True)

    broker = sims.add_parser("broker", help="an executing broker (FIX acceptor)")
    broker.add_argument("--port", type=int, required=True)
    broker.add_argument("--sender", default="BRKA", help="the broker's SenderCompID")
    broker.add_argument("--target", default="FIXALLOC", help="the gateway's CompID")
    broker.add_argument("--fills", type=int, default=10, help="partial fills per order")
    broker.add_argument("--interval-ms", type=int, default=100)
    broker.add_argument("--lot", type=int, default=100)
    broker.add_argument("--prices", help="comma-separated fill prices, cycled")
    broker.add_argument("--state-dir")
    broker.set_defaults(func=_cmd_broker)

    oms = sims.add_parser("oms", help="an order management system (FIX initiator)")
    oms.add_argument("--port", type=int, required=True)
    oms.add_argument("--host", default="127.0.0.1")
    oms.add_argument("--sender", default="OMS1")
    oms.add_argument("--target", default="FIXALLOC")
    oms.add_argument(
        "--blotter", help="CSV: cl_ord_id,book,symbol,side,qty,ord_type,price,time_in_force")
    oms.add_argument("--cl-ord-id", default="BLOCK-1")
    oms.add_argument("--book", default="SMA-CORE")
    oms.add_argument("--symbol", default="AAPL")
    oms.add_argument("--side", default="buy", choices=["buy", "sell", "sell_short"])
    oms.add_argument("--qty", default="500000")
    oms.add_argument("--price", default="190.50")
    oms.add_argument("--timeout", type=float, default=60.0)
    oms.add_argument("--state-dir")
    oms.set_defaults(func=_cmd_oms)
