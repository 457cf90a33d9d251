"""A book that routes to several brokers (`[books.routing]`; engine/broker_split.py says
how a block is split).

    [[books]]
    name = "SMA-MULTI"
    broker = "BRKA"                      # the book's broker where nothing is split
    [books.routing]
    by = "account"                       # each account's metadata names its broker
    account_field = "prime_broker"       # or custodian
    brokers = { PB01 = "BRKA", PB02 = "BRKB", PB03 = "BRKB" }

    [books.routing]
    by = "wheel"                         # target shares per broker
    wheel = { BRKA = "0.6", BRKB = "0.4" }
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BookRouting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    by: Literal["account", "wheel"]
    account_field: Literal["prime_broker", "custodian"] | None = None
    """by = "account": the accounts.csv column whose value names the broker."""
    brokers: dict[str, str] = Field(default_factory=dict)
    """by = "account": that column's value -> broker session name."""
    wheel: dict[str, Decimal] = Field(default_factory=dict)
    """by = "wheel": broker session name -> its target share (shares sum to 1)."""

    @model_validator(mode="after")
    def _complete(self) -> BookRouting:
        if self.by == "account":
            if self.account_field is None or not self.brokers:
                raise ValueError('by = "account" needs account_field and brokers '
                                 '(value -> broker session)')
            if self.wheel:
                raise ValueError('wheel applies to by = "wheel" only')
        else:
            if len(self.wheel) < 2:
                raise ValueError('by = "wheel" needs wheel with two brokers or more')
            if any(s <= 0 for s in self.wheel.values()):
                raise ValueError("every wheel share must be above 0")
            if sum(self.wheel.values()) != 1:
                raise ValueError(f"wheel shares sum to {sum(self.wheel.values())}, not 1")
            if self.brokers or self.account_field:
                raise ValueError('brokers and account_field apply to by = "account" only')
        return self

    def broker_names(self) -> set[str]:
        return set(self.brokers.values()) | set(self.wheel)
