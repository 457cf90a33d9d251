"""Valid FIX 4.4 messages for each type the gateway handles or might see, as raw fields.

Each template returns (MsgType, body fields). Values come from what the peer has learnt
from the gateway (the broker's child orders, the AllocIDs of the Js it received), so an
unmutated message is one the gateway accepts and acts on: fills that complete orders,
acks of real allocations, cancels of real orders.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.fuzz_wire import Field, stamp

FUZZ_BOOK = "SMA-FUZZ"
FUZZ_ACCOUNTS = tuple(f"FZ{i:04d}" for i in range(1, 11))
SYMBOLS = ("AAPL", "MSFT", "AAPL", "AAPL")


@dataclass
class BrokerOrder:
    """A child order the gateway routed to the fuzzing broker."""

    cl_ord_id: bytes
    order_id: bytes
    symbol: bytes
    side: bytes
    qty: int
    price: bytes
    cum: int = 0
    notional: Decimal = Decimal(0)
    exec_ids: list[bytes] = field(default_factory=list)


@dataclass
class Context:
    """What a fuzzing peer knows; filled in by its reader thread, read by templates."""

    sent_orders: list[tuple[bytes, bytes, bytes, int]] = field(default_factory=list)
    """(ClOrdID, Symbol, Side, OrderQty) of the Ds the OMS peer sent."""
    orders: list[BrokerOrder] = field(default_factory=list)
    cancels: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(ClOrdID, OrigClOrdID) of cancel requests the broker peer received."""
    alloc_ids: list[bytes] = field(default_factory=list)
    last_in_seq: int = 1
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_id(self, prefix: str) -> bytes:
        with self.lock:
            self.counter += 1
            return f"{prefix}{self.counter}".encode()

    def pick(self, rng: random.Random, items: list[object]) -> object | None:
        """One item; one rng draw whatever the list holds (reproducible choices)."""
        draw = rng.random()
        with self.lock:
            return items[int(draw * len(items))] if items else None


def _today() -> bytes:
    return datetime.now(UTC).strftime("%Y%m%d").encode()


def _qty(rng: random.Random) -> int:
    return rng.choice((100, 200, 500, 1000, 1500, 3000))


def _px(rng: random.Random) -> bytes:
    return f"{rng.choice((189.5, 190, 190.25, 190.5, 191))}".encode()


# -- from the OMS -----------------------------------------------------------------------------


def new_order(ctx: Context, rng: random.Random, prealloc: bool = False) -> tuple[str, list[Field]]:
    cl = ctx.next_id("FZD-")
    qty = _qty(rng)
    symbol = rng.choice(SYMBOLS).encode()
    body: list[Field] = [(11, cl), (1, FUZZ_BOOK.encode()), (21, b"1")]
    if prealloc:
        accounts = rng.sample(FUZZ_ACCOUNTS, 2)
        first = (qty // 200) * 100 or 100
        body += [(78, b"2"), (79, accounts[0].encode()), (80, str(first).encode()),
                 (79, accounts[1].encode()), (80, str(qty - first).encode())]
    body += [(55, symbol), (54, b"1"), (60, stamp()), (38, str(qty).encode()), (40, b"2"),
             (44, _px(rng)), (59, b"0")]
    if prealloc:
        body.append((58, b"model split"))
    with ctx.lock:
        ctx.sent_orders.append((cl, symbol, b"1", qty))
    return "D", body


def _sent(ctx: Context, rng: random.Random) -> tuple[bytes, bytes, bytes, int]:
    got = ctx.pick(rng, ctx.sent_orders)  # type: ignore[arg-type]
    return got if isinstance(got, tuple) else (b"FZD-NONE", b"AAPL", b"1", 100)


def cancel(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    orig, symbol, side, qty = _sent(ctx, rng)
    return "F", [(41, orig), (11, ctx.next_id("FZC-")), (55, symbol), (54, side),
                 (60, stamp()), (38, str(qty).encode())]


def replace(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    orig, symbol, side, qty = _sent(ctx, rng)
    return "G", [(41, orig), (11, ctx.next_id("FZR-")), (1, FUZZ_BOOK.encode()), (21, b"1"),
                 (55, symbol), (54, side), (60, stamp()), (38, str(qty * 2).encode()),
                 (40, b"2"), (44, _px(rng))]


def _alloc_id(ctx: Context, rng: random.Random) -> bytes:
    got = ctx.pick(rng, ctx.alloc_ids)  # type: ignore[arg-type]
    return got if isinstance(got, bytes) else b"FZ-NO-ALLOC"


def alloc_ack(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    status = rng.choice((b"0", b"0", b"3", b"1", b"2"))
    body: list[Field] = [(70, _alloc_id(ctx, rng)), (60, stamp()), (87, status)]
    if status == b"1":
        body += [(88, rng.choice((b"0", b"1", b"8"))), (58, b"block rejected")]
    if status == b"2":
        body += [(78, b"1"), (79, rng.choice(FUZZ_ACCOUNTS).encode()), (467, b"1"),
                 (776, b"1")]
    return "P", body


def allocation(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    orig, symbol, side, qty = _sent(ctx, rng)
    return "J", [(70, ctx.next_id("FZJ-")), (71, b"0"), (626, b"1"), (857, b"1"),
                 (73, b"1"), (11, orig), (38, str(qty).encode()), (54, side), (55, symbol),
                 (53, str(qty).encode()), (6, b"190"), (75, _today()), (60, stamp()),
                 (78, b"1"), (79, FUZZ_ACCOUNTS[0].encode()), (80, str(qty).encode())]


def confirmation(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "AK", [(664, ctx.next_id("FZK-")), (666, b"0"), (773, b"1"), (665, b"1"),
                  (60, stamp()), (75, _today()), (55, b"AAPL"), (80, b"100"), (54, b"1"),
                  (862, b"1"), (528, b"A"), (863, b"100"),
                  (79, FUZZ_ACCOUNTS[0].encode()), (6, b"190"), (381, b"19000"),
                  (118, b"19000")]


def dont_know(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "Q", [(37, b"FZO-1"), (17, ctx.next_id("FZX-")), (127, b"A"), (55, b"AAPL"),
                 (54, b"1"), (38, b"100")]


def business_reject(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "j", [(45, str(max(1, ctx.last_in_seq - 1)).encode()), (372, b"8"),
                 (380, rng.choice((b"0", b"3", b"5"))), (58, b"fuzz")]


def cancel_reject(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    got = ctx.pick(rng, ctx.cancels)  # type: ignore[arg-type]
    cl, orig = got if isinstance(got, tuple) else (b"FZ-NONE~C1", b"FZ-NONE")
    return "9", [(37, b"FZO-1"), (11, cl), (41, orig), (39, b"1"), (434, b"1"),
                 (102, b"0"), (58, b"too late to cancel")]


# -- from the broker --------------------------------------------------------------------------


def _order(ctx: Context, rng: random.Random) -> BrokerOrder:
    got = ctx.pick(rng, ctx.orders)  # type: ignore[arg-type]
    if isinstance(got, BrokerOrder):
        return got
    return BrokerOrder(b"FZ-UNKNOWN", b"FZO-UNKNOWN", b"AAPL", b"1", 1000, b"190")


def _report(ctx: Context, order: BrokerOrder, exec_type: bytes, status: bytes,
            last: int = 0, px: bytes = b"0", extra: list[Field] | None = None
            ) -> tuple[str, list[Field]]:
    exec_id = ctx.next_id("FZE-")
    with ctx.lock:
        order.exec_ids.append(exec_id)
        avg = order.notional / order.cum if order.cum else Decimal(0)
        leaves = 0 if status in (b"2", b"4", b"3", b"8") else max(0, order.qty - order.cum)
        cum = order.cum
    body: list[Field] = [(37, order.order_id), (11, order.cl_ord_id), (17, exec_id),
                         (150, exec_type), (39, status), (55, order.symbol), (54, order.side),
                         (38, str(order.qty).encode())]
    if last:
        body += [(32, str(last).encode()), (31, px)]
    body += [(151, str(leaves).encode()), (14, str(cum).encode()),
             (6, f"{avg:.6f}".rstrip("0").rstrip(".").encode() or b"0"), (60, stamp())]
    return "8", body + (extra or [])


def fill(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    # As many draws whatever the order's state: the fields (and so the mutations drawn
    # after them) must not depend on what the gateway happened to send before.
    order = _order(ctx, rng)
    whole = rng.random() < 0.35
    px = _px(rng)
    part = rng.random()
    extra: list[Field] = [(75, _today())] if rng.random() < 0.5 else []
    with ctx.lock:
        remaining = max(0, order.qty - order.cum)
        lots = 1 + int(part * (remaining // 100))
        last = (remaining if whole or remaining <= 100 else 100 * lots) or 100
        order.cum += last
        order.notional += last * Decimal(px.decode())
        status = b"2" if order.cum >= order.qty else b"1"
    return _report(ctx, order, b"F", status, last, px, extra)


def order_ack(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return _report(ctx, _order(ctx, rng), rng.choice((b"0", b"A")), b"0")


def bust(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    order = _order(ctx, rng)
    with ctx.lock:
        ref = order.exec_ids[-1] if order.exec_ids else b"FZE-0"
    kind = rng.choice((b"H", b"G"))
    return _report(ctx, order, kind, b"1", 100, _px(rng), [(19, ref)])


def order_done(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    order = _order(ctx, rng)
    exec_type = rng.choice((b"4", b"3", b"8", b"C", b"D", b"5"))
    status = {b"4": b"4", b"3": b"3", b"8": b"8", b"C": b"C", b"D": b"1", b"5": b"0"}[exec_type]
    extra: list[Field] = [(103, b"0"), (58, b"rejected by fuzz")] if exec_type == b"8" else []
    return _report(ctx, order, exec_type, status, extra=extra)


def unknown_fill(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    ghost = BrokerOrder(ctx.next_id("FZ-GHOST-"), ctx.next_id("FZO-GHOST-"), b"AAPL", b"1",
                        1000, b"190", cum=100, notional=Decimal(19000))
    return _report(ctx, ghost, b"F", b"1", 100, b"190")


def repeat_fill(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    """A fill again under an ExecID already sent (with other economics half of the time)."""
    order = _order(ctx, rng)
    name, body = _report(ctx, order, b"F", b"1", rng.choice((100, 200)), _px(rng))
    pick = rng.random()
    with ctx.lock:
        if len(order.exec_ids) > 1:
            order.exec_ids.pop()
            body[2] = (17, order.exec_ids[int(pick * len(order.exec_ids))])
    return name, body


def broker_new_order(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    name, body = new_order(ctx, rng)
    return name, body


# -- admin and unknown ------------------------------------------------------------------------


def heartbeat(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "0", [(112, b"FZ-HB")] if rng.random() < 0.3 else []


def test_request(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "1", [(112, ctx.next_id("FZ-TR-"))]


def resend_request(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    begin = max(1, ctx.last_in_seq - rng.randint(0, 5))
    return "2", [(7, str(begin).encode()), (16, b"0")]


def session_reject(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "3", [(45, str(max(1, ctx.last_in_seq - 1)).encode()), (371, b"55"),
                 (372, b"8"), (373, rng.choice((b"1", b"5", b"6", b"99"))),
                 (58, b"fuzz reject")]


def logon(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "A", [(98, b"0"), (108, b"30")]


def logout(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    return "5", [(58, b"fuzz logout")]


def unknown_type(ctx: Context, rng: random.Random) -> tuple[str, list[Field]]:
    kind = rng.choice(("ZZ", "U7", "d", "AE", "BE", "8Z"))
    return kind, [(58, b"who knows"), (55, b"AAPL")]


def old_sending_time() -> bytes:
    return stamp(datetime.now(UTC) - timedelta(seconds=5))


Template = Callable[[Context, random.Random], tuple[str, list[Field]]]

# SequenceReset is built by the peer itself (it must know its own next MsgSeqNum).
OMS_TEMPLATES: dict[str, tuple[Template | None, float]] = {
    "D": (new_order, 22), "D_prealloc": (lambda c, r: new_order(c, r, True), 10),
    "F": (cancel, 8), "G": (replace, 3), "P": (alloc_ack, 7), "J": (allocation, 3),
    "AK": (confirmation, 2), "8": (unknown_fill, 3), "9": (cancel_reject, 2),
    "Q": (dont_know, 2), "j": (business_reject, 2), "3": (session_reject, 2),
    "0": (heartbeat, 3), "1": (test_request, 3), "2": (resend_request, 0.7),
    "4": (None, 2), "A": (logon, 0.8), "5": (logout, 0.4), "unknown": (unknown_type, 3),
}
BROKER_TEMPLATES: dict[str, tuple[Template | None, float]] = {
    "8_fill": (fill, 22), "8_ack": (order_ack, 8), "8_bust": (bust, 4),
    "8_done": (order_done, 6), "8_unknown": (unknown_fill, 4), "8_repeat": (repeat_fill, 3),
    "9": (cancel_reject, 4), "P": (alloc_ack, 8), "J": (allocation, 2),
    "AK": (confirmation, 2), "D": (broker_new_order, 2), "F": (cancel, 2),
    "Q": (dont_know, 2), "j": (business_reject, 2), "3": (session_reject, 2),
    "0": (heartbeat, 3), "1": (test_request, 3), "2": (resend_request, 0.5),
    "4": (None, 2), "A": (logon, 0.15), "5": (logout, 0.1), "unknown": (unknown_type, 3),
}
