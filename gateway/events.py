"""Frozen events handed from the FIX threads to the dispatcher, and its own commands.

Events are named in the past tense and carry `ts_recv` (our clock at receipt); the FIX
edge converts wire messages into these so the dispatcher never touches a quickfix object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class BlockOrderReceived:
    """A block NewOrderSingle from the OMS, already stored as an order row (status received)."""

    session: str
    order_id: str
    duplicate: bool
    cl_ord_id: str
    book: str
    symbol: str
    side: str  # "buy" | "sell" | "sell_short"
    order_qty: Decimal
    ord_type: str
    price: Decimal | None
    time_in_force: str | None
    seq_num: int
    ts_recv: datetime
    trade_date: str
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    preallocation_reason: str | None = None
    stop_px: Decimal | None = None
    peg_offset: Decimal | None = None


@dataclass(frozen=True)
class BlockOrderInvalid:
    """A D that passed the dictionary but that we cannot act on (e.g. no book in Account)."""

    session: str
    cl_ord_id: str
    symbol: str
    side_fix: str
    order_qty: str
    reason: str
    seq_num: int
    ts_recv: datetime
    rejection_id: int = 0
    """The stored rejection's id: the reject ER's ExecID is REJ<id>."""


@dataclass(frozen=True)
class CancelRequested:
    session: str
    cl_ord_id: str
    orig_cl_ord_id: str
    seq_num: int
    ts_recv: datetime


@dataclass(frozen=True)
class BrokerReportReceived:
    """An ExecutionReport from a broker, already persisted and deduplicated."""

    session: str
    report_id: int
    order_id: str | None
    cl_ord_id: str
    broker_order_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal
    avg_px: Decimal
    leaves_qty: Decimal
    text: str | None
    trade_date: str
    poss_dup: bool
    ts_recv: datetime
    exec_ref_id: str | None = None
    """For a bust (H) or correction (G): the ExecID of the fill it changes."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BrokerReportReceived:
        """A stored report (a `broker_reports` row) as the event its arrival made: for
        startup recovery, and for the crossing venue's reports (gateway/crossing_live.py)."""
        def dec(key: str) -> Decimal:
            return Decimal(str(row[key]))

        return cls(
            session=str(row["session_id"]), report_id=int(row["id"]),
            order_id=row["order_id"], cl_ord_id=str(row["cl_ord_id"]),
            broker_order_id=str(row["broker_order_id"]), exec_id=str(row["exec_id"]),
            exec_type=str(row["exec_type"]), ord_status=str(row["ord_status"]),
            last_qty=dec("last_qty"), last_px=dec("last_px"), cum_qty=dec("cum_qty"),
            avg_px=dec("avg_px"), leaves_qty=dec("leaves_qty"), text=row["text"],
            trade_date=str(row["trade_date"]), poss_dup=bool(row["poss_dup"]),
            ts_recv=row["received_at"], exec_ref_id=row.get("exec_ref_id"))


@dataclass(frozen=True)
class ConfirmationReceived:
    """A broker's Confirmation (AK) for one allocation line, stored (pending) before this."""

    session: str
    confirmation_id: int
    fields: Any
    ts_recv: datetime


@dataclass(frozen=True)
class AllocationReportReceived:
    """A broker's AllocationReport (AS): an allocation booked or amended on its side."""

    session: str
    fields: Any
    ts_recv: datetime


@dataclass(frozen=True)
class DeskOrdersSubmitted:
    """Blocks a person handed over (gateway/fix/desk.py), already recorded and decoded:
    the dispatcher takes each like an OMS's D, then completes `reply` (a Future)."""

    events: tuple[Any, ...]
    reply: Any


@dataclass(frozen=True)
class OperatorRequested:
    """A person's action on an allocation (resend/replace/cancel), from HTTP or the CLI.

    `reply` is a concurrent.futures.Future the dispatcher completes with the result.
    """

    action: str
    alloc_id: str
    actor: str
    reason: str
    reply: Any


@dataclass(frozen=True)
class ApprovalRequested:
    """A person's vote on a held allocation (approve | reject, `target` its alloc_id) or
    an override of a rejected one (`target` the order_id, `lines` account -> quantity).

    `reply` is a concurrent.futures.Future the dispatcher completes with the result.
    """

    action: str
    target: str
    actor: str
    roles: tuple[str, ...]
    reason: str
    reply: Any
    lines: Mapping[str, str] | None = None


@dataclass(frozen=True)
class SweepDue:
    """Run the end-of-day sweep of `trade_date` at `checkpoint` (HH:MM New York time).

    From the scheduler (reply None) or a person via HTTP (`reply` a Future for the report).
    """

    checkpoint: str
    trade_date: date
    reply: Any = None


@dataclass(frozen=True)
class CancelRejectedByBroker:
    session: str
    order_id: str
    ord_status: str
    reason: str | None
    text: str | None
    ts_recv: datetime
    cl_ord_id: str = ""
    response_to: str = "1"
    """CxlRejResponseTo(434): 1 our cancel was refused, 2 our cancel/replace."""


@dataclass(frozen=True)
class ReplaceRequested:
    """An OrderCancelReplaceRequest (35=G) from the OMS for one of its blocks."""

    session: str
    fields: Any
    """gateway.fix.replace_codec.ReplaceFields"""
    seq_num: int
    ts_recv: datetime


@dataclass(frozen=True)
class AllocationAckReceived:
    session: str
    alloc_id: str
    alloc_status: str
    rej_code: str | None
    text: str | None
    rejected_lines: tuple[tuple[str, str], ...] = ()  # (IndividualAllocID, code)
    ts_recv: datetime = field(default_factory=lambda: datetime.min)


@dataclass(frozen=True)
class OmsAllocationAckReceived:
    """The OMS's AllocationInstructionAck (P) to its copy of our J."""

    session: str
    alloc_id: str
    alloc_status: str
    rej_code: str | None
    text: str | None
    ts_recv: datetime


@dataclass(frozen=True)
class SessionRejectReceived:
    """A counterparty's Reject (35=3) of one of our messages."""

    session: str
    ref_seq_num: int | None
    ref_msg_type: str | None
    ref_tag: str | None
    reason: str | None
    text: str | None
    ts_recv: datetime


@dataclass(frozen=True)
class SessionStateChanged:
    session: str
    logged_on: bool
    ts_recv: datetime
    reason: str = ""
    """What the peer said last (its Logout text, a reset it asked for), when known."""
    refused: int = 0
    """Logons refused in a row (the session went down without being logged on)."""
    retry_seconds: float = 0.0
    """With `refused`: the pause before our next Logon."""


@dataclass(frozen=True)
class Tick:
    """The clock moved on: the dispatcher checks its deadlines (broker acks)."""

    ts: datetime


@dataclass(frozen=True)
class ReferenceDataChanged:
    """New accounts/securities, validated; the dispatcher swaps them in on its own thread."""

    refdata: Any


@dataclass(frozen=True)
class RulebookChanged:
    version: str


@dataclass(frozen=True)
class Stop:
    """Sentinel: the dispatcher drains what is queued before this, then exits."""
