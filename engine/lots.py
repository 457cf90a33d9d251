"""Tax-lot relief for sells: FIFO, LIFO, HIFO, min-tax, with wash-sale avoidance."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

from engine.model import LotRelief, TaxLot

LONG_TERM_DAYS = 365


def _order(lots: Sequence[TaxLot], method: str, px: Decimal, trade_date: dt.date
           ) -> list[TaxLot]:
    if method == "fifo":
        return sorted(lots, key=lambda t: (t.acquired, t.lot_id))
    if method == "lifo":
        return sorted(lots, key=lambda t: (-t.acquired.toordinal(), t.lot_id))
    if method == "hifo":
        return sorted(lots, key=lambda t: (-t.cost_per_share, t.acquired, t.lot_id))
    if method == "min_tax":
        def bucket(t: TaxLot) -> int:
            if t.cost_per_share >= px:
                return 0  # a loss (or flat) realises no tax
            if (trade_date - t.acquired).days > LONG_TERM_DAYS:
                return 1  # long-term gains are taxed at the lower rate
            return 2
        return sorted(lots, key=lambda t: (bucket(t), -t.cost_per_share, t.acquired, t.lot_id))
    raise ValueError(f"unknown lot relief method {method!r}")


def relieve(lots: Sequence[TaxLot], qty: Decimal, px: Decimal, trade_date: dt.date,
            *, method: str, avoid_wash_sales: bool, wash_days: int
            ) -> tuple[tuple[LotRelief, ...], str]:
    """Pick lots to relieve `qty` shares sold at `px`; return the reliefs and a note."""
    ordered = _order(lots, method, px, trade_date)
    note = f"lots relieved {method.upper()}"
    if avoid_wash_sales:
        recent = [t for t in lots if 0 <= (trade_date - t.acquired).days <= wash_days]
        if recent:
            # Selling at a loss within the window of a purchase would be a wash sale;
            # relieve gain lots first and touch loss lots only if nothing else is left.
            gains = [t for t in ordered if t.cost_per_share <= px]
            losses = [t for t in ordered if t.cost_per_share > px]
            ordered = gains + losses
            last = max(t.acquired for t in recent).isoformat()
            note += f"; loss lots deferred (wash-sale avoidance: shares bought {last})"
    out: list[LotRelief] = []
    left = qty
    for t in ordered:
        if left <= 0:
            break
        take = min(left, t.quantity)
        if take <= 0:
            continue
        out.append(LotRelief(t.lot_id, take, t.cost_per_share, t.acquired,
                             (px - t.cost_per_share) * take))
        left -= take
    if avoid_wash_sales and any(r.realized_gain < 0 for r in out) and "wash" in note:
        note += "; a loss lot had to be relieved and may be a wash sale"
    if left > 0:
        note += f"; {left} shares not covered by recorded lots"
    return tuple(out), note
