"""The rebalance's rows and requests: what one account and security trade, or why not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from engine.errors import AllocationError
from engine.model import Account, LotRelief, Reason, Security
from engine.rebalance_model import Model

REBALANCE_ENGINE_VERSION = "rebalance-1"
SYS_REBALANCE = "SYS-REBALANCE"

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_PCT = Decimal("0.0001")
_MONEY = Decimal("0.01")

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

