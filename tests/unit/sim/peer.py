"""A minimal gateway for driving the broker simulator: a real quickfix initiator on
127.0.0.1 (FIXALLOC -> BRKA) that sends D, J, AU, BH and AT, and records what comes back.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import quickfix as fix

from gateway.fix import allocation_codec, codec, confirm_codec
from gateway.fix import tags as T
from gateway.fix.allocation_codec import JBlock, JLine
from gateway.fix.sim.broker import BrokerSimulator, FillPlan, PostTradePlan
from gateway.fix.sim.common import DEFAULT_DICTIONARY, SimApplication, SimEngine
from gateway.ports import free_port
from tests.support.eventually import eventually

TRADE_DATE = date.today().isoformat()
SETTL_DATE = (date.today() + timedelta(days=1)).isoformat()
FAST = FillPlan(fills=2, interval_ms=5, first_fill_delay_ms=5)


@dataclass(frozen=True)
class ErSeen:
    fields: codec.ExecutionReportFields
    exec_ref_id: str | None
    exec_trans_type: str | None
    wire_exec_type: str


class GatewayPeer(SimApplication):
    def __init__(self, *, port: int, state_dir: Path, extra: dict[str, str] | None = None,
                 broker: str = "BRKA") -> None:
        super().__init__(None)
        self.port = port
        self.executions: list[ErSeen] = []
        self.acks: list[allocation_codec.AllocAckFields] = []
        self.confirmations: list[confirm_codec.ConfirmationFields] = []
        self.reports: list[confirm_codec.AllocationReportFields] = []
        self.other: list[str] = []
        self.order_seen: list[str] = []
        """ExecIDs and ConfirmIDs in the order their ER / AK arrived."""
        self.sent_at: dict[str, datetime] = {}
        """SendingTime (when the broker handed it to quickfix) of each AK by ConfirmID and
        of each P by `P:<AllocID>:<AllocStatus>`."""
        self.engine = SimEngine(self, role="initiator", sender="FIXALLOC", target=broker,
                                port=port, state_dir=state_dir, extra=extra)

    def stop(self) -> None:
        """Drop the connection at once (a graceful Logout costs quickfix a second)."""
        if self.engine.engine is not None:
            self.engine.engine.stop(True)
            self.engine.engine = None
            gc.collect()

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        if codec.msg_type(message) == "3":
            self.other.append(message.toString().replace("\x01", "|"))

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type in ("8", "AK"):
            self.order_seen.append(codec.require_str(message, 17 if msg_type == "8" else 664))
        sent = datetime.strptime(message.getHeader().getField(52), "%Y%m%d-%H:%M:%S.%f")
        if msg_type == "AK":
            self.sent_at[codec.require_str(message, 664)] = sent
        elif msg_type == "P":
            self.sent_at[f"P:{codec.require_str(message, 70)}:{codec.require_str(message, 87)}"] \
                = sent
        if msg_type == "8":
            self.executions.append(ErSeen(
                codec.parse_execution_report(message), codec.get_str(message, T.ExecRefID),
                codec.get_str(message, T.ExecTransType), codec.require_str(message, T.ExecType)))
        elif msg_type == "P":
            self.acks.append(allocation_codec.parse_allocation_ack(message))
        elif msg_type == "AK":
            self.confirmations.append(confirm_codec.parse_confirmation(message))
        elif msg_type == "AS":
            self.reports.append(confirm_codec.parse_allocation_report(message))
        else:
            self.other.append(message.toString().replace("\x01", "|"))

    # -- what a test reads -------------------------------------------------------------------

    def acks_for(self, alloc_id: str) -> list[str]:
        return [a.alloc_status for a in self.acks if a.alloc_id == alloc_id]

    def final_ack(self, alloc_id: str) -> allocation_codec.AllocAckFields:
        return eventually(lambda: next((a for a in self.acks if a.alloc_id == alloc_id
                                        and a.alloc_status != "3"), None),
                          timeout=10, description=f"a final P for {alloc_id}")

    def aks(self, alloc_id: str | None = None) -> list[confirm_codec.ConfirmationFields]:
        return [c for c in self.confirmations if alloc_id is None or c.alloc_id == alloc_id]

    def aks_of(self, order: str) -> list[confirm_codec.ConfirmationFields]:
        """Every AK about the order's Js (AllocIDs `<order>-...`), in arrival order."""
        return [c for c in self.confirmations if (c.alloc_id or "").startswith(f"{order}-")]

    def answer_to(self, req_id: str) -> confirm_codec.ConfirmationFields:
        """The AK that echoes this ConfirmReqID."""
        found = eventually(lambda: [a for a in self.confirmations if a.confirm_req_id == req_id],
                           timeout=10, description=f"an AK answering {req_id}")
        return found[0]

    def wait_aks(self, n: int, alloc_id: str | None = None,
                 timeout: float = 10) -> list[confirm_codec.ConfirmationFields]:
        eventually(lambda: len(self.aks(alloc_id)) >= n, timeout=timeout,
                   description=f"{n} AKs for {alloc_id}")
        return self.aks(alloc_id)

    # -- what a test sends -------------------------------------------------------------------

    def send_order(self, cl_ord_id: str, qty: Decimal, price: Decimal = Decimal("190.00"),
                   side: str = "buy") -> None:
        self.engine.send(codec.build_new_order_single(
            cl_ord_id=cl_ord_id, symbol="AAPL", side=side, qty=qty, ord_type="2", price=price,
            time_in_force="0", transact_time=datetime.now(UTC)))

    def filled(self, cl_ord_id: str, qty: Decimal, side: str = "buy") -> ErSeen:
        """Send a D and wait for the fill that completes it."""
        self.send_order(cl_ord_id, qty, side=side)
        return eventually(lambda: next((e for e in self.executions
                                        if e.fields.cl_ord_id == cl_ord_id
                                        and e.fields.ord_status == "2"), None),
                          timeout=10, description=f"{cl_ord_id} filled")

    def fills(self, cl_ord_id: str) -> list[ErSeen]:
        return [e for e in self.executions
                if e.fields.cl_ord_id == cl_ord_id and e.fields.exec_type == "F"]

    def send_j(self, alloc_id: str, done: ErSeen, split: Mapping[str, Decimal], *,
               trans: str = "0", ref: str | None = None, side: str = "buy",
               fragments: int | None = None, alloc_type: str = "1",
               ids: Mapping[str, str] | None = None) -> list[fix.Message]:
        """A J for the order `done` completed, split over accounts (in `fragments` messages
        when given); returns the messages sent."""
        er = done.fields
        avg = er.avg_px.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
        block = JBlock(alloc_id=alloc_id, alloc_trans_type=trans, alloc_type=alloc_type,
                       cl_ord_id=er.cl_ord_id, broker_order_id=er.broker_order_id,
                       order_qty=er.cum_qty, side=side, symbol="AAPL",
                       quantity=sum(split.values(), Decimal(0)), avg_px=avg,
                       trade_date=TRADE_DATE, settl_date=SETTL_DATE,
                       transact_time=datetime.now(UTC), ref_alloc_id=ref)
        lines = [JLine(individual_alloc_id=(ids or {}).get(acct, f"{alloc_id}-{acct}"),
                       account_id=acct, qty=qty, avg_px=avg, custodian=None,
                       prime_broker=None, strategy=None, vehicle=None)
                 for acct, qty in split.items()]
        if trans == "2":
            lines = []
        if fragments is None:
            msgs = [allocation_codec.build_allocation_instruction(block, lines)]
        else:
            gross, net = allocation_codec.block_totals(lines)
            block = dataclasses.replace(block, gross=gross, net_money=net)
            size = -(-len(lines) // fragments)
            chunks = [lines[i:i + size] for i in range(0, len(lines), size)]
            msgs = [allocation_codec.build_allocation_instruction(
                block, chunk, fragment=(len(lines), n == len(chunks) - 1))
                for n, chunk in enumerate(chunks)]
        for msg in msgs:
            self.engine.send(msg)
        return msgs

    def resend(self, msg: fix.Message) -> None:
        """The same message again under a new MsgSeqNum with PossDupFlag=Y."""
        self.send_repeat(fix.Message(msg.toString(), _dictionary(), False))  # groups kept

    def affirm(self, confirm_id: str, status: str = "3", reason: str | None = None) -> None:
        self.engine.send(confirm_codec.build_confirmation_ack(
            confirm_id=confirm_id, trade_date=TRADE_DATE, affirm_status=status,
            transact_time=datetime.now(UTC), rej_reason=reason))

    def request(self, req_id: str, alloc_id: str, individual_alloc_id: str,
                account: str) -> None:
        self.engine.send(confirm_codec.build_confirmation_request(
            confirm_req_id=req_id, alloc_id=alloc_id, individual_alloc_id=individual_alloc_id,
            account=account, transact_time=datetime.now(UTC)))

    def ack_report(self, report_id: str, alloc_id: str | None, status: str) -> None:
        self.engine.send(confirm_codec.build_allocation_report_ack(
            report_id=report_id, alloc_id=alloc_id, status=status,
            transact_time=datetime.now(UTC)))


@functools.lru_cache(maxsize=1)
def _dictionary() -> fix.DataDictionary:
    return fix.DataDictionary(str(DEFAULT_DICTIONARY))


_orders = itertools.count(1)


def new_order(broker: BrokerSimulator, plan: PostTradePlan | None = None) -> str:
    """A ClOrdID no other test of the run uses; `plan` becomes its order's own plan (its Js
    are then named `<ClOrdID>-A1`, ... by the tests)."""
    cl_ord_id = f"O{next(_orders)}"
    if plan is not None:
        broker.set_post_trade(cl_ord_id, plan)
    return cl_ord_id


def broker_at(port: int, state: Path, post_trade: PostTradePlan | None = None,
              plan: FillPlan = FAST, **kw: Any) -> BrokerSimulator:
    """A started broker simulator (a restart passes the same `sender` as before)."""
    broker = BrokerSimulator(port=port, state_dir=state, plan=plan, post_trade=post_trade, **kw)
    broker.start()
    return broker


@contextmanager
def pair(tmp: Path, post_trade: PostTradePlan | None = None, *, plan: FillPlan = FAST,
         peer_extra: dict[str, str] | None = None, comp: str = "BRKA", **kw: Any,
         ) -> Iterator[tuple[BrokerSimulator, GatewayPeer]]:
    """The broker simulator (SenderCompID `comp`) and the peer, logged on to each other.
    quickfix keeps one session per ID in a process: a pair alive beside another needs a
    `comp` of its own."""
    port = free_port()
    broker = broker_at(port, tmp / "broker", post_trade, plan, sender=comp, **kw)
    peer = GatewayPeer(port=port, state_dir=tmp / "peer", extra=peer_extra, broker=comp)
    try:
        peer.start()
        eventually(peer.engine.is_logged_on, timeout=15, description="the peer logged on")
        yield broker, peer
    finally:
        peer.stop()
        broker.stop()


def money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def split_of(total: Decimal, accounts: Sequence[str]) -> dict[str, Decimal]:
    """Equal whole-share lines, the last one taking the remainder."""
    each = (total / len(accounts)).quantize(Decimal(1), rounding="ROUND_DOWN")
    out = {a: each for a in accounts}
    out[accounts[-1]] += total - each * len(accounts)
    return out
