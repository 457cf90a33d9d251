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


def _describe_broker(kind: str, payload: Any) -> str | None:
    if kind == "ack":
        return (f"P   {payload.alloc_id} status={payload.alloc_status}"
                + (f" rej={payload.rej_code}" if payload.rej_code else "")
                + (f" text={payload.text!r}" if payload.text else ""))
    if kind == "confirmation":
        ref = f" ref={payload.confirm_ref_id}" if payload.confirm_ref_id else ""
        req = f" req={payload.confirm_req_id}" if payload.confirm_req_id else ""
        return (f"AK  {payload.confirm_id} trans={payload.trans_type}{ref}{req} "
                f"type={payload.confirm_type} status={payload.confirm_status} "
                f"{payload.account} qty={payload.qty} avg={payload.avg_px} "
                f"net={payload.net_money}")
    if kind == "affirmation":
        return (f"AU  {payload.confirm_id} affirm={payload.affirm_status}"
                + (f" reason={payload.rej_reason}" if payload.rej_reason else ""))
    if kind == "confirmation_request":
        return (f"BH  {payload.confirm_req_id} alloc={payload.alloc_id} "
                f"line={payload.individual_alloc_id} {payload.account}")
    if kind == "allocation_report_ack":
        return f"AT  {payload.report_id} alloc={payload.alloc_id} status={payload.status}"
    if kind == "bust":
        return f"ER  {payload[0]} bust ref={payload[1]}"
    if kind == "correction":
        return f"ER  {payload[0]} correction ref={payload[1]} -> {payload[2]}@{payload[3]}"
    return None


def _printer(kind: str, payload: Any) -> None:
    from gateway.fix.sim.oms import describe

    line = _describe_broker(kind, payload) or describe(kind, payload)
    print(line, flush=True)  # noqa: T201


def _state(arg: str | None, prefix: str) -> Path:
    return Path(arg) if arg else Path(tempfile.mkdtemp(prefix=prefix))


def _pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.rpartition(":")
    if not sep or not key or not value:
        raise ValueError(f"{what}: expected KEY:VALUE, got {text!r}")
    return key, value


def post_trade_plan(args: argparse.Namespace) -> Any:
    """The PostTradePlan the `sim broker` flags describe."""
    from gateway.fix.sim.plans import PostTradePlan

    try:
        mismatch = {}
        for item in args.mismatch:
            acct, _, fld = item.partition(":")
            mismatch[acct] = fld or "net_money"
        as_move = None
        if args.as_move:
            src, dst, qty = args.as_move.split(":")
            as_move = (src, dst, Decimal(qty))
        return PostTradePlan(
            acks=args.ak, ak_delay_ms=args.ak_delay_ms,
            commission_per_share=Decimal(args.commission) if args.commission else None,
            missing_ak=frozenset(args.missing_ak), mismatch=mismatch,
            status_confirm=dict(_pair(x, "--status-confirm") for x in args.status_confirm),
            reject_block={int(n): code for n, code in
                          (_pair(x, "--reject-block") for x in args.reject_block)},
            reject_account=dict(_pair(x, "--reject-account") for x in args.reject_account),
            reject_replace_after_accept=args.reject_replace_after_accept,
            reject_cancel_after_accept=args.reject_cancel_after_accept,
            withhold_final_p=args.withhold_final_p,
            bust_after_j=tuple(args.bust_after_j),
            correct_after_j=tuple((int(i), Decimal(px)) for i, px in
                                  (_pair(x, "--correct-after-j") for x in args.correct_after_j)),
            send_as=args.send_as or as_move is not None, as_move=as_move,
            fix42_corrections=args.fix42_corrections, fix42_only=args.fix42_only)
    except (ValueError, ArithmeticError) as exc:
        raise SystemExit(f"error: {exc}") from exc


def _cmd_broker(args: argparse.Namespace) -> int:
    from gateway.fix.sim.broker import BrokerSimulator, FillPlan

    prices = tuple(Decimal(p) for p in args.prices.split(",")) if args.prices else ()
    plan = FillPlan(fills=args.fills, interval_ms=args.interval_ms, prices=prices, lot=args.lot)
    sim = BrokerSimulator(port=args.port, state_dir=_state(args.state_dir, "fixalloc-broker-"),
                          sender=args.sender, target=args.target, plan=plan,
                          post_trade=post_trade_plan(args), on_message=_printer)
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
        try:
            orders = read_blotter(Path(args.blotter))
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)  # noqa: T201
            return 2
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
    _add_post_trade_flags(broker)
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


def _add_post_trade_flags(broker: Any) -> None:
    g = broker.add_argument_group("post-trade lifecycle (the PostTradePlan)")
    g.add_argument("--ak", action=argparse.BooleanOptionalAction, default=True,
                   help="send one AK per line once a J is accepted (default: yes)")
    g.add_argument("--ak-delay-ms", type=int, default=0, help="time between two AKs")
    g.add_argument("--commission", metavar="PER_SHARE",
                   help="commission per share on every AK (net = gross +/- commission)")
    g.add_argument("--missing-ak", action="append", default=[], metavar="ACCT",
                   help="hold this account's AK until a BH asks for it (repeatable)")
    g.add_argument("--mismatch", action="append", default=[], metavar="ACCT[:FIELD]",
                   help="this account's first AK has one field off: net_money (default), "
                        "commission, avg_px, qty or settl_date")
    g.add_argument("--status-confirm", action="append", default=[], metavar="ACCT:CODE",
                   help="this account's first AK is a status confirm (773=1) with "
                        "ConfirmStatus 2 (mismatched account) or 3 (missing SSI)")
    g.add_argument("--reject-block", action="append", default=[], metavar="N:CODE",
                   help="the Nth J of an order gets P 87=1 with AllocRejCode CODE")
    g.add_argument("--reject-account", action="append", default=[], metavar="ACCT:CODE",
                   help="a J with this account gets P 87=2, the line with "
                        "IndividualAllocRejCode CODE")
    g.add_argument("--reject-replace-after-accept", action="store_true",
                   help="refuse a J Replace of an accepted J (manual amendment)")
    g.add_argument("--reject-cancel-after-accept", action="store_true",
                   help="refuse a J Cancel of an accepted J")
    g.add_argument("--withhold-final-p", action="store_true",
                   help="answer each J with P 87=3 only")
    g.add_argument("--bust-after-j", action="append", default=[], type=int, metavar="IDX",
                   help="bust fill IDX (0 = first) of the order once its J is accepted")
    g.add_argument("--correct-after-j", action="append", default=[], metavar="IDX:PX",
                   help="correct fill IDX to price PX once the J is accepted (twice: a "
                        "correction of the correction)")
    g.add_argument("--send-as", action="store_true",
                   help="send an AllocationReport (AS) after accepting a J")
    g.add_argument("--as-move", metavar="FROM:TO:QTY",
                   help="the AS (and the AKs) book QTY of account FROM on account TO")
    g.add_argument("--fix42-corrections", action="store_true",
                   help="busts and corrections also carry ExecTransType(20)")
    g.add_argument("--fix42-only", action="store_true",
                   help="busts and corrections in the FIX 4.2 form only (150=1/2 with 20)")
