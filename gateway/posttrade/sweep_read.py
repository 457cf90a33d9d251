"""The sweep's reading of one trade date, and the small pieces its judgement is made of."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

from sqlalchemy import or_, select

from gateway.clock import trade_date_of
from gateway.persistence import lifecycle_tables as lt
from gateway.persistence import tables as t
from gateway.persistence.store import Database

H = TypeVar("H")

# A Replace the broker refused leaves the J it meant to replace in force (the lifecycle
# opens a replace_refused exception on it, which the report lists).
NOT_LIVE = frozenset({"block_rejected", "session_rejected", "replaced", "cancelled",
                      "replace_refused"})

# -- reading ---------------------------------------------------------------------------------


@dataclass
class _Day:
    orders: list[dict[str, Any]]
    allocations: dict[str, list[dict[str, Any]]]  # order_id -> oldest first
    lines: dict[str, list[dict[str, Any]]]  # alloc_id -> lines
    confirmations: dict[str, dict[str, Any]]  # individual_alloc_id -> latest AK
    all_confirmations: list[dict[str, Any]]
    corrections: dict[str, list[dict[str, Any]]]  # order_id -> busts/corrections
    open_exceptions: list[dict[str, Any]]


def _load(db: Database, day: str) -> _Day:
    a, ln, c, br = t.allocations, t.allocation_lines, lt.confirmations, t.broker_reports
    allocs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alloc in db.allocations_on(day):
        allocs[alloc["order_id"]].append(alloc)
    for rows in allocs.values():
        rows.sort(key=lambda r: (r["created_at"], r["alloc_id"]))
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    confirmations: dict[str, dict[str, Any]] = {}
    corrections: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with db.engine.connect() as conn:
        for line in conn.execute(select(ln).join(a, a.c.alloc_id == ln.c.alloc_id)
                                 .where(a.c.trade_date == day)
                                 .order_by(ln.c.individual_alloc_id)).mappings():
            lines[line["alloc_id"]].append(dict(line))
        all_confirmations = [dict(r) for r in conn.execute(
            select(c).join(a, a.c.alloc_id == c.c.alloc_id).where(a.c.trade_date == day)
            .order_by(c.c.id)).mappings()]
        for fix in conn.execute(
                select(br.c.order_id, br.c.exec_id, br.c.exec_type, br.c.exec_trans_type,
                       br.c.received_at).join(t.orders, t.orders.c.order_id == br.c.order_id)
                .where(t.orders.c.trade_date == day,
                       or_(br.c.exec_type.in_(("G", "H")), br.c.exec_trans_type.in_(("1", "2"))))
                .order_by(br.c.id)).mappings():
            corrections[fix["order_id"]].append(dict(fix))
    for confirm in all_confirmations:
        if confirm["individual_alloc_id"]:
            confirmations[confirm["individual_alloc_id"]] = confirm
    return _Day(db.orders_on(day), allocs, lines, confirmations, all_confirmations, corrections,
                db.exceptions(state="open"))


def _stored_messages(db: Database, refs: Iterable[str]) -> dict[tuple[str, str, str], set[str]]:
    """(msg_type, direction, ref_id) -> the sessions it is stored on, with its timestamp."""
    m = t.fix_messages
    wanted = sorted(set(refs))
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    with db.engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            query = select(m.c.msg_type, m.c.direction, m.c.ref_id, m.c.session_id).where(
                m.c.msg_type.in_(("J", "P", "AK", "AU")), m.c.ref_id.in_(wanted[i:i + 500]),
                m.c.recorded_at.is_not(None))
            for mt, direction, ref, session in conn.execute(query):
                found[(mt, direction, ref)].add(session)
    return found


# -- judging ---------------------------------------------------------------------------------


def _pct(part: int, whole: int) -> str | None:
    if whole == 0:
        return None
    value = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return str(value)


def _dec(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


@dataclass
class _Tally:
    blocks: set[str] = field(default_factory=set)
    working: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    allocated: set[str] = field(default_factory=set)
    accepted: set[str] = field(default_factory=set)
    tickets: int = 0
    confirmed: int = 0
    affirmed: int = 0
    same_day: int = 0
    by_cutoff: int = 0
    booked_elsewhere: int = 0

    def count(self, line: Mapping[str, Any], trade_date: date, cutoff: datetime) -> None:
        """Count one live line of an allocation.

        A line of a Ready-To-Book J (ticket_state booked_elsewhere) is booked outside
        FIX, e.g. through CTM: the broker owes no AK for it, so it is no ticket awaiting
        affirmation and gets a figure of its own. Once an AK does arrive for it, it is an
        ordinary ticket again (affirmed, rejected, ...).
        """
        state = line.get("ticket_state")
        if state == "booked_elsewhere":
            self.booked_elsewhere += 1
            return
        self.tickets += 1
        self.confirmed += bool(line.get("ak_received_at"))
        if state == "affirmed":
            self.affirmed += 1
            affirmed_at = line.get("affirmed_at")
            if affirmed_at is not None and trade_date_of(affirmed_at) == trade_date:
                self.same_day += 1
            if affirmed_at is not None and affirmed_at <= cutoff:
                self.by_cutoff += 1

    def figures(self) -> dict[str, Any]:
        done = len(self.done)
        return {
            "blocks": len(self.blocks), "blocks_working": len(self.working),
            "blocks_done": done, "allocated": len(self.allocated),
            "allocated_pct": _pct(len(self.allocated), done), "accepted": len(self.accepted),
            "accepted_pct": _pct(len(self.accepted), done), "tickets": self.tickets,
            "confirmed": self.confirmed, "affirmed": self.affirmed,
            "affirmed_pct": _pct(self.affirmed, self.tickets),
            "affirmed_same_day": self.same_day,
            "affirmed_same_day_pct": _pct(self.same_day, self.tickets),
            "affirmed_by_cutoff": self.by_cutoff,
            "affirmed_by_cutoff_pct": _pct(self.by_cutoff, self.tickets),
            "unaffirmed": self.tickets - self.affirmed,
            "booked_elsewhere": self.booked_elsewhere,
        }


@dataclass
class _Problem:
    kind: str
    reason: str
    next_step: str
    order_id: str | None = None
    alloc_id: str | None = None
    individual_alloc_id: str | None = None
    account_id: str | None = None
    broker: str | None = None
    book: str | None = None
    listed: bool = True  # shown among the report's open items
    escalate: bool = False  # wants an open exception

    def item(self) -> dict[str, Any]:
        return {"kind": self.kind, "order_id": self.order_id, "alloc_id": self.alloc_id,
                "individual_alloc_id": self.individual_alloc_id, "account_id": self.account_id,
                "broker": self.broker, "reason": self.reason, "next_step": self.next_step,
                "source": "sweep"}


def _ident(kind: str, row: Mapping[str, Any]) -> tuple[str, str, str]:
    """What makes two problems (or a problem and an exception) the same one."""
    for level in ("individual_alloc_id", "alloc_id", "order_id", "broker"):
        if row.get(level):
            return kind, level, str(row[level])
    return kind, "", ""


def _live(allocs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((a for a in reversed(allocs)
                 if a["status"] not in NOT_LIVE and a["alloc_trans_type"] != "2"), None)


# FIX code tables for the report's texts.
_REJ_CODES = {"0": "unknown account", "1": "incorrect quantity", "2": "incorrect average price",
              "3": "unknown executing broker mnemonic", "4": "commission difference",
              "5": "unknown OrderID", "6": "unknown ListID", "7": "other",
              "8": "incorrect allocated quantity", "9": "calculation difference",
              "10": "unknown or stale ExecID", "11": "mismatched data", "12": "unknown ClOrdID",
              "13": "warehouse request rejected"}
_CONFIRM_STATUS = {"1": "received", "2": "mismatched account",
                   "3": "missing settlement instructions", "4": "confirmed",
                   "5": "request rejected"}


def _spread(values: list[int]) -> dict[str, int] | None:
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    return {"count": n, "median": ordered[(n - 1) // 2],
            "p90": ordered[min(n - 1, -(-9 * n // 10) - 1)], "max": ordered[-1]}


def _unique(items: Iterable[H]) -> list[H]:
    """The items in order, each once."""
    return list(dict.fromkeys(items))
