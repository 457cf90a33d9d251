"""A partition's plans on their way back from a worker process.

Pickled as they are, plans cost a Python call per reason and lot (dataclass state) and a
string round trip per Decimal, more than computing them. Here they travel as their columns
(`PlanColumns`) in plain strings and integers: a reason or a shared target column once per
partition, the rest per account only where it is the account's own. The caller, which has
the same accounts and reference data, makes the same plans from them: every Decimal goes
through `str` and back, which keeps its value and exponent. A partition that runs in the
calling process is never pickled, and its columns are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from engine.model import Account, LotRelief, Reason
from engine.rebalance.rows import (
    AccountPlan,
    PlanColumns,
    TargetPct,
    Trade,
    build_plan,
    held_positions,
)
from engine.rebalance.universe import Universes

_LotFields = tuple[str, str, str, Any, str]
_TradeFields = tuple[str, str, tuple[_LotFields, ...]]
# (reasons, target columns, one tuple per account in the partition's order)
Packed = tuple[list[tuple[str, str, str, str]],
               list[tuple[tuple[str, ...], tuple[tuple[int, str], ...]]],
               list[tuple[Any, ...]]]


class PartitionPlans:
    """A partition's plan columns, packed only if they are pickled."""

    __slots__ = ("columns", "packed")

    def __init__(self, columns: list[PlanColumns] | None, packed: Packed | None = None
                 ) -> None:
        self.columns = columns
        self.packed = packed

    def __len__(self) -> int:
        if self.columns is not None:
            return len(self.columns)
        assert self.packed is not None
        return len(self.packed[2])

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        packed = self.packed if self.columns is None else pack(self.columns)
        return PartitionPlans, (None, packed)

    def plans(self, universes: Universes, accounts: Sequence[Account]) -> list[AccountPlan]:
        """The plans of `accounts` (the partition's, in its order)."""
        if self.columns is not None:
            return [build_plan(c, held_positions(a))
                    for c, a in zip(self.columns, accounts, strict=True)]
        assert self.packed is not None
        return unpack(self.packed, universes, accounts)


def pack(plans: Sequence[PlanColumns]) -> Packed:
    """The partition's plans as strings and integers (see `unpack`)."""
    reasons: list[tuple[str, str, str, str]] = []
    reason_at: dict[int, int] = {}
    columns: list[tuple[tuple[str, ...], tuple[tuple[int, str], ...]]] = []
    column_at: dict[int, int] = {}

    def reason(r: Reason) -> int:
        # By identity: the plans keep every reason alive while this runs.
        k = reason_at.get(id(r))
        if k is None:
            k = reason_at[id(r)] = len(reasons)
            reasons.append((r.rule_id, r.rule_version, r.code, r.text))
        return k

    def column(c: TargetPct | None) -> int:
        if c is None:
            return -1
        k = column_at.get(id(c))
        if k is None:
            k = column_at[id(c)] = len(columns)
            columns.append((tuple(map(str, c.kinds)),
                            tuple((i, str(v)) for i, v in c.overrides.items())))
        return k

    out = [(str(c.value), str(c.cash_after), str(c.drift_pct), c.traded,
            ",".join(map(str, c.current.values())), str(c.current_default),
            column(c.target_pct), {i: str(v) for i, v in c.target_patch.items()},
            reason(c.reason), {i: reason(r) for i, r in c.reason_patch.items()},
            {i: _pack_trade(t) for i, t in c.trades.items()})
           for c in plans]
    return reasons, columns, out


def unpack(packed: Packed, universes: Universes, accounts: Sequence[Account]
           ) -> list[AccountPlan]:
    """The plans of `accounts` (the partition's, in its order) from `pack`."""
    reasons_in, columns_in, plans = packed
    decimals = _Decimals()
    reasons = [Reason(*r) for r in reasons_in]
    columns = [TargetPct(list(map(Decimal, kinds)), {i: Decimal(v) for i, v in shown},
                         universes.weight_kind) for kinds, shown in columns_in]
    out = []
    for a, (value, cash_after, drift, traded, current, default, col, target_patch, reason,
            reason_patch, trades) in zip(accounts, plans, strict=True):
        held = held_positions(a)
        v = Decimal(value)
        # The weighted holdings, in holding order, as the plan's `current` has them.
        weighted = universes.weighted_symbols(held) if v > 0 else []
        c = PlanColumns(
            a.account_id, v, a.cash, Decimal(cash_after), Decimal(drift), traded,
            universes.of(held),
            dict(zip(weighted, map(decimals.__getitem__, current.split(",")), strict=True))
            if weighted else {},
            Decimal(default), columns[col] if col >= 0 else None,
            {i: Decimal(t) for i, t in target_patch.items()}, reasons[reason],
            {i: reasons[r] for i, r in reason_patch.items()},
            {i: _unpack_trade(t) for i, t in trades.items()})
        out.append(build_plan(c, held))
    return out


class _Decimals(dict[str, Decimal]):
    """Decimal(text), made once per text: weights in percent to four places repeat across
    accounts, and a Decimal is immutable."""

    def __missing__(self, text: str) -> Decimal:
        got = self[text] = Decimal(text)
        return got


def _pack_trade(t: Trade) -> _TradeFields:
    side, qty, lots = t
    return side, str(qty), tuple((r.lot_id, str(r.quantity), str(r.cost_per_share), r.acquired,
                                  str(r.realized_gain)) for r in lots)


def _unpack_trade(t: _TradeFields) -> Trade:
    side, qty, lots = t
    return side, Decimal(qty), tuple(
        LotRelief(lot_id, Decimal(q), Decimal(cost), acquired, Decimal(gain))
        for lot_id, q, cost, acquired, gain in lots)
