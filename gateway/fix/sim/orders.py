"""The broker simulator's orders and their executions, and how busts and corrections
change them (FIX 4.4 Vol. 4: a bust lowers CumQty and raises LeavesQty by the busted
quantity; a correction replaces the fill's LastQty/LastPx; CumQty, LeavesQty and AvgPx are
reported as of the change; a correction of a correction refers to the latest ExecID).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

DONE = ("2", "3", "4", "8")
"""OrdStatus values after which no more fills come: filled, done for day, cancelled,
rejected."""


@dataclass
class SimExecution:
    """One fill and what happened to it since: `latest_exec_id` is the ExecID a further
    correction or bust must refer to (the fill's own, or its latest correction's)."""

    exec_id: str
    qty: Decimal
    px: Decimal
    latest_exec_id: str = ""
    busted: bool = False
    completed_order: bool = False
    """The fill that filled the order: its FIX 4.2 ExecType was 2 (fill), else 1 (partial)."""

    def __post_init__(self) -> None:
        if not self.latest_exec_id:
            self.latest_exec_id = self.exec_id

    def to_json(self) -> dict[str, Any]:
        return {"exec_id": self.exec_id, "qty": str(self.qty), "px": str(self.px),
                "latest_exec_id": self.latest_exec_id, "busted": self.busted,
                "completed_order": self.completed_order}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> SimExecution:
        return cls(exec_id=row["exec_id"], qty=Decimal(row["qty"]), px=Decimal(row["px"]),
                   latest_exec_id=row["latest_exec_id"], busted=bool(row["busted"]),
                   completed_order=bool(row.get("completed_order", False)))


@dataclass
class SimOrder:
    broker_order_id: str
    cl_ord_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal | None
    cum_qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    status: str = "0"
    fills_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    executions: list[SimExecution] = field(default_factory=list)
    current_cl_ord_id: str = ""
    """The ClOrdID of the order since its latest cancel/replace ("": the first one)."""
    prealloc_id: str | None = None
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    """The pre-allocation (AllocID, NoAllocs) of the D or of the latest G changing it."""

    @property
    def avg_px(self) -> Decimal:
        if not self.cum_qty:
            return Decimal(0)
        return (self.notional / self.cum_qty).quantize(Decimal("0.000001"))

    @property
    def leaves_qty(self) -> Decimal:
        return Decimal(0) if self.status in DONE else self.qty - self.cum_qty

    def execution(self, exec_id: str) -> SimExecution:
        """The fill whose chain holds this ExecID (the fill's own or any correction's)."""
        for ex in self.executions:
            if exec_id in (ex.exec_id, ex.latest_exec_id):
                return ex
        raise KeyError(f"order {self.cl_ord_id}: no execution {exec_id}")

    def apply_bust(self, ex: SimExecution) -> None:
        if ex.busted:
            raise ValueError(f"execution {ex.exec_id} is already busted; a bust cannot be busted")
        ex.busted = True
        self.cum_qty -= ex.qty
        self.notional -= ex.qty * ex.px
        self._status_after_change()

    def apply_correction(self, ex: SimExecution, qty: Decimal, px: Decimal) -> None:
        if ex.busted:
            raise ValueError(f"execution {ex.exec_id} is busted; send a new fill instead")
        self.cum_qty += qty - ex.qty
        self.notional += qty * px - ex.qty * ex.px
        ex.qty, ex.px = qty, px
        self._status_after_change()

    def _status_after_change(self) -> None:
        if self.status in ("3", "4", "8"):
            return  # done for day / cancelled stay so: LeavesQty stays 0
        if self.cum_qty >= self.qty:
            self.status = "2"
        else:
            self.status = "1" if self.cum_qty > 0 else "0"

    def to_json(self) -> dict[str, Any]:
        return {"broker_order_id": self.broker_order_id, "cl_ord_id": self.cl_ord_id,
                "symbol": self.symbol, "side": self.side, "qty": str(self.qty),
                "price": None if self.price is None else str(self.price),
                "cum_qty": str(self.cum_qty), "notional": str(self.notional),
                "status": self.status, "fills_sent": self.fills_sent,
                "executions": [ex.to_json() for ex in self.executions],
                "current_cl_ord_id": self.current_cl_ord_id, "prealloc_id": self.prealloc_id,
                "preallocations": [[a, str(q)] for a, q in self.preallocations]}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> SimOrder:
        return cls(
            broker_order_id=row["broker_order_id"], cl_ord_id=row["cl_ord_id"],
            symbol=row["symbol"], side=row["side"], qty=Decimal(row["qty"]),
            price=Decimal(row["price"]) if row["price"] is not None else None,
            cum_qty=Decimal(row["cum_qty"]), notional=Decimal(row["notional"]),
            status=row["status"], fills_sent=int(row["fills_sent"]),
            executions=[SimExecution.from_json(x) for x in row.get("executions", [])],
            current_cl_ord_id=row.get("current_cl_ord_id", ""),
            prealloc_id=row.get("prealloc_id"),
            preallocations=tuple((a, Decimal(q)) for a, q in row.get("preallocations", [])))


def order_root(cl_ord_id: str) -> str:
    """The block's own ClOrdID: the gateway's chain suffixes (`~n`) removed."""
    return cl_ord_id.split("~", maxsplit=1)[0]
