"""The rebalance's rows and requests: what one account and security trade, or why not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from typing import Any, NamedTuple, cast

from engine.errors import AllocationError
from engine.model import Account, LotRelief, Reason, Security
from engine.rebalance.universe import Universe
from engine.rebalance_model import Model

REBALANCE_ENGINE_VERSION = "rebalance-1"
SYS_REBALANCE = "SYS-REBALANCE"

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_PCT = Decimal("0.0001")
_MONEY = Decimal("0.01")
_ZERO_PCT = _ZERO.quantize(_PCT)  # the current_pct of a row without weight

# Codes of rows that trade.
TRADED_CODES = frozenset({
    "BUY_TO_TARGET", "BUY_CASH_LIMITED", "BUY_ISSUER_CAP", "SELL_TO_TARGET",
    "SELL_EXCLUDED", "SELL_NOT_IN_MODEL", "SELL_WASH_SALE_REDUCED",
})


class RebalanceError(AllocationError):
    """The rebalance cannot run as asked (bad input, not a bug)."""


class TradeRow(NamedTuple):
    """One account and security: the trade (side, qty > 0) or the trade not made (qty 0)."""

    account_id: str
    symbol: str
    side: str              # "buy", "sell", or "" when not traded
    qty: Decimal
    price: Decimal | None  # reference price, None when the security has none
    current_qty: Decimal
    model_pct: Decimal     # the model's target weight (0 for a holding not in the model)
    target_pct: Decimal    # the account's own target after restrictions and caps
    current_pct: Decimal
    reason: Reason
    lots: tuple[LotRelief, ...] = ()

    @property
    def traded(self) -> bool:
        return self.qty > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id, "symbol": self.symbol, "side": self.side,
            "status": "traded" if self.traded else "not_traded",
            "qty": self.qty, "price": self.price, "current_qty": self.current_qty,
            "notional": (self.qty * self.price).quantize(_MONEY)
            if self.price is not None else _ZERO,
            "model_pct": self.model_pct, "target_pct": self.target_pct,
            "current_pct": self.current_pct,
            "reason": self.reason.to_json(),
            "lots": [lot.to_json() for lot in self.lots],
            "realized_gain": sum((lot.realized_gain for lot in self.lots), _ZERO),
        }


@dataclass(frozen=True, slots=True)
class AccountPlan:
    account_id: str
    value: Decimal          # cash + holdings at reference prices
    cash_before: Decimal
    cash_after: Decimal
    drift_pct: Decimal
    traded: bool            # the account was outside its band and had a trade
    rows: tuple[TradeRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "value": self.value,
                "cash_before": self.cash_before, "cash_after": self.cash_after,
                "drift_pct": self.drift_pct, "traded": self.traded, "rows": len(self.rows)}


@dataclass(frozen=True, slots=True)
class RebalanceRequest:
    model: Model
    accounts: tuple[Account, ...]
    securities: Mapping[str, Security]
    trade_date: dt.date


# A trade on a row: side, quantity, lots relieved.
Trade = tuple[str, Decimal, tuple[LotRelief, ...]]


class TargetPct:
    """A model-universe `target_pct` column, made from one value per kind of model weight
    (`Universes.weight_kind`) and the rows that differ, so that it travels as those."""

    __slots__ = ("column", "kinds", "overrides")

    def __init__(self, kinds: list[Decimal], overrides: dict[int, Decimal],
                 weight_kind: list[int]) -> None:
        column = list(map(kinds.__getitem__, weight_kind))
        for i, v in overrides.items():
            column[i] = v
        self.column = column
        self.kinds = kinds
        self.overrides = overrides


@dataclass(slots=True)
class PlanColumns:
    """An account's plan as columns over its row symbols, before the rows are made. Most
    of it is shared with other accounts of the run (the universe, the target column, the
    default reason), so what is per account is only its weights and the rows whose reason,
    target or trade differ from the shared ones."""

    account_id: str
    value: Decimal
    cash_before: Decimal
    cash_after: Decimal
    drift_pct: Decimal
    traded: bool
    universe: Universe
    current: dict[str, Decimal]     # weighted holding -> weight in percent, quantized
    current_default: Decimal        # the current_pct of every other row
    target_pct: TargetPct | None    # None: the model's weights
    target_patch: dict[int, Decimal]
    reason: Reason
    reason_patch: dict[int, Reason]
    trades: dict[int, Trade]


def held_positions(a: Account) -> Mapping[str, Decimal]:
    """The account's long holdings (in the order the account lists them)."""
    pos = a.positions
    if not pos or min(pos.values()) > 0:
        return pos
    return {s: q for s, q in pos.items() if q > 0}


def build_plan(c: PlanColumns, held: Mapping[str, Decimal]) -> AccountPlan:
    """The account's plan with its rows, one per symbol, in symbol order."""
    u = c.universe
    n = len(u.symbols)
    target_pct = u.model_pct if c.target_pct is None else u.from_model(c.target_pct.column)
    if c.target_patch:
        target_pct = list(target_pct)
        for i, v in c.target_patch.items():
            target_pct[i] = v
    reasons = [c.reason] * n
    for i, r in c.reason_patch.items():
        reasons[i] = r
    side: Any = repeat("")
    qty: Any = repeat(_ZERO)
    lots: Any = repeat(())
    if c.trades:
        side, qty, lots = [""] * n, [_ZERO] * n, [()] * n
        for i, (sd, q, relief) in c.trades.items():
            side[i], qty[i], lots[i] = sd, q, relief
    current_pct = map(c.current.get, u.symbols, repeat(c.current_default))
    current_qty = map(held.get, u.symbols, repeat(_ZERO))
    # tuple.__new__ is what TradeRow(...) calls, without a Python frame per row.
    rows = map(_NEW_ROW, repeat(TradeRow), zip(
        repeat(c.account_id), u.symbols, side, qty, u.price, current_qty, u.model_pct,
        target_pct, current_pct, reasons, lots))
    return AccountPlan(c.account_id, c.value, c.cash_before, c.cash_after, c.drift_pct,
                       c.traded, cast(tuple[TradeRow, ...], tuple(rows)))


_NEW_ROW: Any = tuple.__new__
