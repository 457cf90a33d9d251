"""How a block is split across brokers, for a book that routes to several.

Two ways, named in the book's `routing` (gateway/config.py):

* **By account**: each account's metadata (its prime broker, custodian, ...) names the
  broker that executes for it. The block's quantity per account (the OMS's
  pre-allocation, or the book's scheme applied to the whole block) is grouped by broker:
  one child order per broker, pre-allocated to its accounts, so each broker's executions
  are allocated over that broker's accounts only. When a broker fills part of its child,
  the pre-allocation is pro-rated (the engine's rule for a partially filled pre-allocated
  block), so every account of that broker gets the same fill rate.
* **By wheel**: target shares per broker (60/40, ...). The quantity is split by
  largest remainder in whole lots; each child is allocated over the whole book when it is
  done, at its own broker's average price.

Pure and deterministic: legs come out in broker-name order, accounts in account order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal


class SplitError(ValueError):
    """The block cannot be split as the book says (the reason names what is missing)."""


@dataclass(frozen=True, slots=True)
class Leg:
    broker: str
    qty: Decimal
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    """(account, qty) for a split by account; empty for a wheel."""


def by_account(lines: Sequence[tuple[str, Decimal]], broker_of: Mapping[str, str]
               ) -> tuple[Leg, ...]:
    """One leg per broker with the accounts it executes for (zero quantities dropped)."""
    missing = sorted({a for a, q in lines if q > 0 and a not in broker_of})
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more"
                                           if len(missing) > 10 else "")
        raise SplitError(f"no broker for account {shown}")
    grouped: dict[str, list[tuple[str, Decimal]]] = {}
    for account, qty in sorted(lines):
        if qty > 0:
            grouped.setdefault(broker_of[account], []).append((account, qty))
    if not grouped:
        raise SplitError("no account has a quantity to route")
    return tuple(Leg(broker, sum((q for _a, q in pre), Decimal(0)), tuple(pre))
                 for broker, pre in sorted(grouped.items()))


def by_wheel(qty: Decimal, shares: Sequence[tuple[str, Decimal]], lot: int = 1
             ) -> tuple[Leg, ...]:
    """Each broker's share of `qty` in whole lots, largest remainder first (ties: broker
    name); what is not a whole lot goes to the broker with the largest share."""
    if not shares or any(s <= 0 for _b, s in shares):
        raise SplitError("a wheel needs a positive share for every broker")
    total = sum((s for _b, s in shares), Decimal(0))
    step = Decimal(lot)
    lots = (qty / step).to_integral_value(rounding=ROUND_FLOOR)
    exact = {b: lots * s / total for b, s in shares}
    whole = {b: v.to_integral_value(rounding=ROUND_FLOOR) for b, v in exact.items()}
    left = int(lots - sum(whole.values()))
    for b in sorted(exact, key=lambda b: (-(exact[b] - whole[b]), b))[:left]:
        whole[b] += 1
    out = {b: n * step for b, n in whole.items()}
    odd = qty - lots * step
    if odd > 0:
        biggest = sorted(shares, key=lambda x: (-x[1], x[0]))[0][0]
        out[biggest] += odd
    return tuple(Leg(b, q) for b, q in sorted(out.items()) if q > 0)
