"""Allocation methods: each turns eligible accounts into integer weights, then splits.

A method that finds no account with a positive weight is "not applicable" and the
scheme's fallback order is tried next. Tiered sequencing fills priority tiers in order
(tier 1 first), each up to its accounts' demand, splitting within a tier by a sub-method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from engine.model import Account, Side
from engine.split import Entry, split


@dataclass(frozen=True, slots=True)
class MethodInput:
    side: Side
    price: Decimal
    symbol: str
    preallocations: Mapping[str, Decimal]


@dataclass(slots=True)
class Outcome:
    alloc: dict[str, int] = field(default_factory=dict)
    clipped: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    extra_lot: set[str] = field(default_factory=set)
    odd_lot: str | None = None


NOT_PARTICIPATING = {
    "pro_rata": "it has no intended quantity for this block",
    "pari_passu": "it has no positive NAV",
    "target_weight": "it has no shortfall to its target weight (or no target weight)",
    "equal": "",
    "manual": "it is not named in the order's pre-allocation",
}


def raw_weight(method: str, a: Account, m: MethodInput) -> Decimal:
    if method == "pro_rata":
        return a.intended_qty if a.intended_qty is not None else Decimal(0)
    if method == "pari_passu":
        return a.nav
    if method == "target_weight":
        if a.target_weight is None:
            return Decimal(0)
        # Shortfall in money (target value minus held value) is proportional to the
        # shortfall in shares at one price, and stays exact without a division.
        target = a.target_weight * a.nav
        held = a.position(m.symbol) * m.price
        return target - held if m.side is Side.BUY else held - target
    if method == "equal":
        return Decimal(1)
    if method == "manual":
        return m.preallocations.get(a.account_id, Decimal(0))
    raise ValueError(f"no weight for method {method!r}")


def run_flat(total: int, lot: int, weights: Mapping[str, int], caps: Mapping[str, int | None],
             rank: dict[str, int]) -> Outcome:
    entries = [Entry(a, w, caps.get(a)) for a, w in weights.items()]
    res = split(total, lot, entries, rank)
    return Outcome(alloc=res.alloc, clipped=res.clipped, held=res.held,
                   extra_lot=res.extra_lot, odd_lot=res.odd_lot)


def run_tiered(total: int, lot: int, accounts: Sequence[Account], weights: Mapping[str, int],
               *, caps: Mapping[str, int | None], rank: dict[str, int]) -> Outcome:
    """Fill tiers in ascending order; a tier takes up to its demand before the next one.

    An account's demand is its intended quantity cut to its cap. When the cap is what cut it
    and the account got its demand (no room for another lot under the cap), the cap decided
    its quantity: it is reported clipped, exactly as a flat method reports a clipped share.
    """
    by_tier: dict[int, list[Account]] = {}
    for a in accounts:
        if a.account_id in weights:
            by_tier.setdefault(a.tier, []).append(a)
    out = Outcome()
    remaining = total
    for tier in sorted(by_tier):
        if remaining <= 0:
            break
        members = by_tier[tier]
        demand: dict[str, int | None] = {}
        cut_by_cap: list[str] = []
        for a in members:
            hard = caps.get(a.account_id)
            want = int(a.intended_qty) if a.intended_qty is not None else None
            demand[a.account_id] = want if hard is None else (hard if want is None else min(
                want, hard))
            if hard is not None and (want is None or hard < want):
                cut_by_cap.append(a.account_id)
        unlimited = any(d is None for d in demand.values())
        lot_demand = sum((d - d % lot) for d in demand.values() if d is not None)
        give = remaining if unlimited or lot_demand >= remaining else lot_demand
        entries = [Entry(a.account_id, weights[a.account_id], demand[a.account_id])
                   for a in sorted(members, key=lambda x: x.account_id)]
        res = split(give, lot, entries, rank)
        out.alloc.update(res.alloc)
        out.clipped |= {aid for aid in cut_by_cap
                        if res.alloc.get(aid, 0) + lot > (caps[aid] or 0)}
        out.extra_lot |= res.extra_lot
        out.odd_lot = res.odd_lot or out.odd_lot
        remaining -= give - res.leftover
    if remaining > 0:
        # Every tier got its demand and shares are left: spread them over all participants
        # by weight, within what their caps leave (an account already at its cap takes part
        # with no room, so it is reported as held by its cap).
        entries = []
        for aid, w in sorted(weights.items()):
            hard = caps.get(aid)
            entries.append(Entry(aid, w, None if hard is None else hard - out.alloc.get(aid, 0)))
        res = split(remaining, lot, entries, rank)
        for aid, q in res.alloc.items():
            out.alloc[aid] = out.alloc.get(aid, 0) + q
        out.clipped |= res.clipped
        out.held |= res.held - out.clipped
        out.extra_lot |= res.extra_lot
        out.odd_lot = res.odd_lot or out.odd_lot
    return out
