"""The broker simulator's allocation book: what it booked from each J, the confirmation
ticket of each account, and the fragments of a J still being assembled. Plain data with
its JSON form (the book is saved with the orders and survives a restart); no quickfix.

A ticket is one account's confirmation across a J and its Replaces: it keeps every
ConfirmID it was sent under (the latest is what an AU, a BH or the next AK 666=1/2 refers
to) and the AK it still owes (`pending`: 0 new, 1 replace, 2 cancel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from gateway.fix.allocation_codec import JReceived

CENT = Decimal("0.01")
LIVE = ("received", "accepted", "account_rejected")
"""Booking statuses a Replace or Cancel may refer to (a block-rejected J is dead)."""


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass
class Line:
    account: str
    individual_alloc_id: str
    qty: Decimal
    avg_px: Decimal

    def to_json(self) -> dict[str, str]:
        return {"account": self.account, "individual_alloc_id": self.individual_alloc_id,
                "qty": str(self.qty), "avg_px": str(self.avg_px)}

    @classmethod
    def from_json(cls, row: Mapping[str, str]) -> Line:
        return cls(row["account"], row["individual_alloc_id"], Decimal(row["qty"]),
                   Decimal(row["avg_px"]))


def lines_of(j: JReceived) -> list[Line]:
    """The J's lines as booked: AllocAvgPx (else the block AvgPx), an IndividualAllocID
    (else `<AllocID>-<n>`, so that AK, BH and AU can still name the line)."""
    out = []
    for n, raw in enumerate(j.lines, start=1):
        px = raw.get("avg_px")
        out.append(Line(account=str(raw["account"]),
                        individual_alloc_id=str(raw.get("individual_alloc_id")
                                                or f"{j.alloc_id}-{n}"),
                        qty=Decimal(str(raw["qty"])),
                        avg_px=Decimal(str(px)) if px is not None else j.avg_px))
    return out


@dataclass
class Booking:
    """One J as the broker recorded it, whatever its answer was."""

    alloc_id: str
    trans_type: str
    alloc_type: str
    ref_alloc_id: str | None
    cl_ord_ids: tuple[str, ...]
    symbol: str
    side: str
    quantity: Decimal
    avg_px: Decimal
    trade_date: str
    settl_date: str | None
    lines: list[Line]
    number: int
    """This J's rank among the Js of its order (1 = the first)."""
    status: str = "received"
    """received, accepted, block_rejected, account_rejected, replaced, cancelled."""
    tickets: dict[str, str] = field(default_factory=dict)
    """Account -> ticket id."""
    replaced_by: str | None = None

    @classmethod
    def of(cls, j: JReceived, number: int) -> Booking:
        return cls(alloc_id=j.alloc_id, trans_type=j.alloc_trans_type, alloc_type=j.alloc_type,
                   ref_alloc_id=j.ref_alloc_id, cl_ord_ids=j.cl_ord_ids, symbol=j.symbol,
                   side=j.side, quantity=j.quantity, avg_px=j.avg_px, trade_date=j.trade_date,
                   settl_date=j.settl_date, lines=lines_of(j), number=number)

    def to_json(self) -> dict[str, Any]:
        return {"alloc_id": self.alloc_id, "trans_type": self.trans_type,
                "alloc_type": self.alloc_type, "ref_alloc_id": self.ref_alloc_id,
                "cl_ord_ids": list(self.cl_ord_ids), "symbol": self.symbol, "side": self.side,
                "quantity": str(self.quantity), "avg_px": str(self.avg_px),
                "trade_date": self.trade_date, "settl_date": self.settl_date,
                "lines": [ln.to_json() for ln in self.lines], "number": self.number,
                "status": self.status, "tickets": dict(self.tickets),
                "replaced_by": self.replaced_by}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Booking:
        return cls(alloc_id=row["alloc_id"], trans_type=row["trans_type"],
                   alloc_type=row["alloc_type"], ref_alloc_id=row["ref_alloc_id"],
                   cl_ord_ids=tuple(row["cl_ord_ids"]), symbol=row["symbol"],
                   side=row["side"], quantity=Decimal(row["quantity"]),
                   avg_px=Decimal(row["avg_px"]), trade_date=row["trade_date"],
                   settl_date=row["settl_date"],
                   lines=[Line.from_json(x) for x in row["lines"]], number=int(row["number"]),
                   status=row["status"], tickets=dict(row["tickets"]),
                   replaced_by=row["replaced_by"])


@dataclass(frozen=True)
class Economics:
    qty: Decimal
    avg_px: Decimal
    gross: Decimal
    commission: Decimal | None
    net_money: Decimal
    settl_date: str | None


@dataclass
class Ticket:
    ticket_id: str
    alloc_id: str
    individual_alloc_id: str
    account: str
    symbol: str
    side: str
    qty: Decimal
    avg_px: Decimal
    trade_date: str
    settl_date: str | None
    commission_per_share: Decimal | None = None
    variation: str | None = None
    """`mismatch:<field>` or `status:<665 code>`: how the ticket's first AK is off."""
    held: bool = False
    """A missing AK: nothing is sent until a BH asks for it."""
    pending: str | None = "0"
    """The AK owed: 0 new, 1 replace, 2 cancel; None when nothing is owed."""
    confirm_req_id: str | None = None
    """The BH the next AK answers (echoed as ConfirmReqID)."""
    confirm_ids: list[str] = field(default_factory=list)
    last_kind: str | None = None
    """What the latest AK sent was: confirm, mismatch, status or cancel."""
    last_confirm: tuple[str, str] = ("2", "4")
    """(ConfirmType, ConfirmStatus) of the latest AK sent."""
    affirm_status: str | None = None
    """AffirmStatus(940) of the latest AU received for the latest ConfirmID."""
    void: bool = False
    """Dropped (cancelled or replaced away) before any AK was sent."""

    @property
    def state(self) -> str:
        if self.void:
            return "void"
        if self.last_kind == "cancel":
            return "cancelled"
        if self.pending is not None:
            return "held" if self.held else "pending"
        if self.affirm_status == "3":
            return "affirmed"
        if self.affirm_status == "2":
            return "rejected"
        return "status" if self.last_kind == "status" else "sent"

    def economics(self, wrong: str | None = None) -> Economics:
        """The ticket's economics, or with one field off (a `mismatch` ticket's first AK)."""
        qty, px, settl = self.qty, self.avg_px, self.settl_date
        if wrong == "qty":
            qty -= 1
        if wrong == "avg_px":
            px += CENT
        if wrong == "settl_date" and settl:
            iso = date.fromisoformat(settl if "-" in settl else
                                     f"{settl[:4]}-{settl[4:6]}-{settl[6:]}")
            settl = (iso + timedelta(days=1)).isoformat()
        gross = cents(qty * px)
        commission = None
        if self.commission_per_share is not None:
            commission = cents(qty * self.commission_per_share)
        if wrong == "commission":
            commission = (commission or Decimal(0)) + Decimal("5.00")
        sign = 1 if self.side == "buy" else -1
        net = gross + sign * (commission or Decimal(0))
        if wrong == "net_money":
            net += Decimal("1.00")
        return Economics(qty=qty, avg_px=px, gross=gross, commission=commission,
                         net_money=net, settl_date=settl)

    def to_json(self) -> dict[str, Any]:
        return {"ticket_id": self.ticket_id, "alloc_id": self.alloc_id,
                "individual_alloc_id": self.individual_alloc_id, "account": self.account,
                "symbol": self.symbol, "side": self.side, "qty": str(self.qty),
                "avg_px": str(self.avg_px), "trade_date": self.trade_date,
                "settl_date": self.settl_date,
                "commission_per_share": None if self.commission_per_share is None
                else str(self.commission_per_share),
                "variation": self.variation, "held": self.held, "pending": self.pending,
                "confirm_req_id": self.confirm_req_id, "confirm_ids": list(self.confirm_ids),
                "last_kind": self.last_kind, "last_confirm": list(self.last_confirm),
                "affirm_status": self.affirm_status, "void": self.void}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Ticket:
        cps = row["commission_per_share"]
        return cls(ticket_id=row["ticket_id"], alloc_id=row["alloc_id"],
                   individual_alloc_id=row["individual_alloc_id"], account=row["account"],
                   symbol=row["symbol"], side=row["side"], qty=Decimal(row["qty"]),
                   avg_px=Decimal(row["avg_px"]), trade_date=row["trade_date"],
                   settl_date=row["settl_date"],
                   commission_per_share=None if cps is None else Decimal(cps),
                   variation=row["variation"], held=bool(row["held"]), pending=row["pending"],
                   confirm_req_id=row["confirm_req_id"], confirm_ids=list(row["confirm_ids"]),
                   last_kind=row["last_kind"],
                   last_confirm=(row["last_confirm"][0], row["last_confirm"][1]),
                   affirm_status=row["affirm_status"], void=bool(row["void"]))


def _line_json(ln: Mapping[str, object]) -> dict[str, str | None]:
    px = ln.get("avg_px")
    iid = ln.get("individual_alloc_id")
    return {"account": str(ln["account"]), "qty": str(ln["qty"]),
            "individual_alloc_id": None if iid is None else str(iid),
            "avg_px": None if px is None else str(px)}


def _line_from_json(row: Mapping[str, Any]) -> dict[str, object]:
    return {"account": row["account"], "qty": Decimal(row["qty"]),
            "individual_alloc_id": row["individual_alloc_id"],
            "avg_px": None if row["avg_px"] is None else Decimal(row["avg_px"])}


def j_to_json(j: JReceived) -> dict[str, Any]:
    """The parts of a J the simulator keeps: its header and its lines."""
    return {"alloc_id": j.alloc_id, "alloc_trans_type": j.alloc_trans_type,
            "alloc_type": j.alloc_type, "quantity": str(j.quantity), "avg_px": str(j.avg_px),
            "symbol": j.symbol, "side": j.side, "trade_date": j.trade_date,
            "settl_date": j.settl_date, "cl_ord_ids": list(j.cl_ord_ids),
            "ref_alloc_id": j.ref_alloc_id, "tot_no_allocs": j.tot_no_allocs,
            "last_fragment": j.last_fragment, "lines": [_line_json(ln) for ln in j.lines]}


def j_from_json(row: Mapping[str, Any]) -> JReceived:
    return JReceived(
        alloc_id=row["alloc_id"], alloc_trans_type=row["alloc_trans_type"],
        alloc_type=row["alloc_type"], quantity=Decimal(row["quantity"]),
        avg_px=Decimal(row["avg_px"]), symbol=row["symbol"], side=row["side"],
        trade_date=row["trade_date"], settl_date=row["settl_date"],
        cl_ord_ids=tuple(row["cl_ord_ids"]),
        lines=tuple(_line_from_json(ln) for ln in row["lines"]),
        ref_alloc_id=row["ref_alloc_id"], tot_no_allocs=row["tot_no_allocs"],
        last_fragment=row["last_fragment"])


def line_key(raw: Mapping[str, object]) -> str:
    """A fragment's line is known by its IndividualAllocID (else by its account)."""
    return str(raw.get("individual_alloc_id") or f"acct:{raw['account']}")


@dataclass
class FragmentSet:
    """A fragmented J (TotNoAllocs/LastFragment) being assembled, keyed by its AllocID; its
    lines are keyed by IndividualAllocID, so a fragment sent twice counts once."""

    header: JReceived
    lines: dict[str, Mapping[str, object]] = field(default_factory=dict)
    fragments: int = 0
    problem: str | None = None

    def add(self, j: JReceived) -> bool:
        """Add a fragment; False when every line of it was already here (a repeat)."""
        fresh = False
        for raw in j.lines:
            key = line_key(raw)
            seen = self.lines.get(key)
            if seen is None:
                self.lines[key] = raw
                fresh = True
            elif (seen["account"], Decimal(str(seen["qty"]))) != \
                    (raw["account"], Decimal(str(raw["qty"]))):
                self.problem = f"IndividualAllocID {key} repeated with other economics"
        if not fresh and j.lines:
            return False
        self.fragments += 1
        if j.tot_no_allocs != self.header.tot_no_allocs:
            self.problem = (f"TotNoAllocs {j.tot_no_allocs} on fragment {self.fragments}, "
                            f"{self.header.tot_no_allocs} on the first")
        return True

    def assembled(self) -> JReceived:
        h = self.header
        return JReceived(alloc_id=h.alloc_id, alloc_trans_type=h.alloc_trans_type,
                         alloc_type=h.alloc_type, quantity=h.quantity, avg_px=h.avg_px,
                         symbol=h.symbol, side=h.side, trade_date=h.trade_date,
                         settl_date=h.settl_date, cl_ord_ids=h.cl_ord_ids,
                         lines=tuple(self.lines.values()), ref_alloc_id=h.ref_alloc_id,
                         tot_no_allocs=h.tot_no_allocs, last_fragment=True)

    def incomplete(self) -> str | None:
        """Why the set cannot be booked, if it cannot."""
        if self.problem:
            return self.problem
        expected = self.header.tot_no_allocs or 0
        if len(self.lines) != expected:
            return f"fragment set incomplete: {len(self.lines)} of {expected} lines"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"header": j_to_json(self.header), "fragments": self.fragments,
                "problem": self.problem, "lines": [_line_json(x) for x in self.lines.values()]}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> FragmentSet:
        lines = [_line_from_json(x) for x in row["lines"]]
        return cls(header=j_from_json(row["header"]), lines={line_key(x): x for x in lines},
                   fragments=int(row["fragments"]), problem=row["problem"])
