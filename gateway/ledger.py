"""Per-order fill ledger in Decimal, reconciled against the broker's CumQty and AvgPx.

The broker's figures are the reference; ours are computed from the fills we applied.
A difference in quantity, or in price beyond one unit of the agreed precision, is a
discrepancy the dispatcher raises as an alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

AVG_PX_PLACES = 4
AVG_PX_QUANTUM = Decimal(1).scaleb(-AVG_PX_PLACES)
"""Average prices go on the wire rounded once to 4 decimals (FIX_ALLOCATION.md §4.3)."""


@dataclass
class FillLedger:
    fills: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    broker_cum_qty: Decimal = Decimal(0)
    broker_avg_px: Decimal = Decimal(0)
    last_fill_at: datetime | None = None
    changed_by_correction: bool = False
    """A bust or correction changed the fills since the order was last allocated."""
    _chains: dict[str, str] = field(default_factory=dict)
    """Every ExecID of a correction chain -> the ExecID the fill is kept under."""
    # Running sums: each fill's fold costs the same however many came before (summing
    # the list on every fill made a 2,000-fill block quadratic). Appends add in list
    # order, as sum() would; a bust or correction re-sums the list.
    _cum: Decimal = field(default=Decimal(0), repr=False)
    _notional: Decimal = field(default=Decimal(0), repr=False)

    def __post_init__(self) -> None:
        self._resum()

    def _resum(self) -> None:
        self._cum = sum((q for _, q, _ in self.fills), Decimal(0))
        self._notional = sum((q * p for _, q, p in self.fills), Decimal(0))

    def apply_fill(self, exec_id: str, qty: Decimal, px: Decimal) -> None:
        self.fills.append((exec_id, qty, px))
        self._cum += qty
        self._notional += qty * px

    def _root(self, exec_ref_id: str) -> int | None:
        key = self._chains.get(exec_ref_id, exec_ref_id)
        return next((i for i, (e, _, _) in enumerate(self.fills) if e == key), None)

    def bust(self, exec_ref_id: str, exec_id: str) -> bool:
        """Remove the fill that `exec_ref_id` (or a correction of it) names; False if unknown.

        A correction of a correction names the latest ExecID of its chain, so every ExecID
        of a chain leads to the one entry the fill is kept under.
        """
        index = self._root(exec_ref_id)
        if index is None:
            return False
        key = self.fills[index][0]
        del self.fills[index]
        self._resum()
        self._chains[exec_id] = key
        self.changed_by_correction = True
        return True

    def correct(self, exec_ref_id: str, exec_id: str, qty: Decimal, px: Decimal) -> bool:
        """Replace the quantity and price of the fill the chain names; False if unknown."""
        index = self._root(exec_ref_id)
        if index is None:
            return False
        key = self.fills[index][0]
        self.fills[index] = (key, qty, px)
        self._resum()
        self._chains[exec_id] = key
        self.changed_by_correction = True
        return True

    def observe_totals(self, cum_qty: Decimal, avg_px: Decimal) -> None:
        self.broker_cum_qty = cum_qty
        self.broker_avg_px = avg_px

    @property
    def cum_qty(self) -> Decimal:
        return self._cum

    @property
    def notional(self) -> Decimal:
        return self._notional

    @property
    def vwap(self) -> Decimal:
        qty = self.cum_qty
        return self.notional / qty if qty else Decimal(0)

    @property
    def avg_px(self) -> Decimal:
        """The block average price, rounded once; used for the J and every line."""
        return self.vwap.quantize(AVG_PX_QUANTUM, rounding=ROUND_HALF_EVEN)

    def discrepancies(self) -> list[str]:
        problems = []
        if self.cum_qty != self.broker_cum_qty:
            problems.append(
                f"sum of LastQty {self.cum_qty} differs from broker CumQty {self.broker_cum_qty}"
            )
        if self.cum_qty and abs(self.avg_px - self.broker_avg_px) > AVG_PX_QUANTUM:
            problems.append(
                f"volume-weighted price {self.avg_px} differs from broker AvgPx "
                f"{self.broker_avg_px} by more than {AVG_PX_QUANTUM}"
            )
        return problems
