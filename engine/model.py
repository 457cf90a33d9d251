"""Frozen value types the engine consumes and produces.

Quantities and prices are `Decimal` everywhere; share counts handed to FIX are whole
numbers. Mappings are stored as given (callers hand in immutable data by convention) and
are never mutated by the engine.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ACCOUNT_STATUSES = frozenset({"active", "closed", "frozen", "do_not_trade"})


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"
    SELL_SHORT = "sell_short"

    @property
    def is_sell(self) -> bool:
        return self is not Side.BUY


@dataclass(frozen=True, slots=True)
class Security:
    symbol: str
    issuer: str
    sector: str
    country: str
    esg_tags: frozenset[str] = frozenset()
    lot_size: int = 1
    related_to: str | None = None
    price: Decimal | None = None

    def __post_init__(self) -> None:
        if self.lot_size < 1:
            raise ValueError(f"invalid `lot_size` less than 1, was {self.lot_size}")


@dataclass(frozen=True, slots=True)
class TaxLot:
    lot_id: str
    quantity: Decimal
    cost_per_share: Decimal
    acquired: dt.date


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    book: str
    status: str = "active"
    nav: Decimal = Decimal(0)
    cash: Decimal = Decimal(0)
    positions: Mapping[str, Decimal] = field(default_factory=dict)
    lots: Mapping[str, tuple[TaxLot, ...]] = field(default_factory=dict)
    tier: int = 1
    intended_qty: Decimal | None = None
    target_weight: Decimal | None = None
    custodian: str = ""
    prime_broker: str = ""
    strategy: str = ""
    vehicle: str = ""
    scheme: str = "default"

    def __post_init__(self) -> None:
        if self.status not in ACCOUNT_STATUSES:
            raise ValueError(
                f"invalid `status` for {self.account_id}, expected one of "
                f"{sorted(ACCOUNT_STATUSES)}, was {self.status!r}"
            )

    def position(self, symbol: str) -> Decimal:
        qty = self.positions.get(symbol)
        if qty is not None:
            return qty
        lots = self.lots.get(symbol)
        return sum((lot.quantity for lot in lots), Decimal(0)) if lots else Decimal(0)


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    block_id: str
    symbol: str
    side: Side
    executed_qty: Decimal
    avg_px: Decimal
    trade_date: dt.date
    accounts: tuple[Account, ...]
    securities: Mapping[str, Security]
    decided_at: dt.datetime
    method: str | None = None
    preallocations: Mapping[str, Decimal] | None = None
    preallocation_reason: str | None = None
    # Rotation tie-break offset; the gateway advances it per block so ties are fair over time.
    rotation_offset: int = 0


@dataclass(frozen=True, slots=True)
class OrderIntent:
    block_id: str
    symbol: str
    side: Side
    qty: Decimal
    limit_px: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    rule_id: str
    rule_version: str
    code: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "code": self.code,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class LotRelief:
    lot_id: str
    quantity: Decimal
    cost_per_share: Decimal
    acquired: dt.date
    realized_gain: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "lot_id": self.lot_id,
            "quantity": self.quantity,
            "cost_per_share": self.cost_per_share,
            "acquired": self.acquired.isoformat(),
            "realized_gain": self.realized_gain,
        }


@dataclass(frozen=True, slots=True)
class AllocationLine:
    account_id: str
    qty: Decimal
    avg_px: Decimal
    lots: tuple[LotRelief, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "qty": self.qty,
            "avg_px": self.avg_px,
            "lots": [lot.to_json() for lot in self.lots],
        }


RESULT_STATUSES = frozenset({"allocated", "excluded", "capped", "dropped", "not_participating"})


@dataclass(frozen=True, slots=True)
class AccountResult:
    account_id: str
    status: str
    qty: Decimal
    reasons: tuple[Reason, ...] = ()
    rounding: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "status": self.status,
            "qty": self.qty,
            "reasons": [r.to_json() for r in self.reasons],
            "rounding": self.rounding,
        }


@dataclass(frozen=True, slots=True)
class EligibilityReport:
    block_id: str
    eligible: tuple[str, ...]
    excluded: tuple[AccountResult, ...]
    rulebook_version: str
    # Accounts that stay eligible but whose quantity a cap would clip, with the cap in shares.
    caps: Mapping[str, Decimal] = field(default_factory=dict)
