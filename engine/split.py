"""Integer split of a share quantity by weights, with caps, lot rounding and the odd lot.

Everything here is exact integer arithmetic: an account's exact share is the rational
``total * w / W``; comparisons multiply out instead of dividing. The rules (FIX_ALLOCATION
§4.3):

1. Accounts whose exact share exceeds their cap are clipped to the cap rounded down to a
   whole lot and removed; the rest is re-split over the others (water-filling).
2. Each remaining share is rounded down to the lot size.
3. Left-over whole lots go one at a time by largest fractional remainder; ties by the
   tie-break order (account id, or account id rotated by an offset).
4. The odd lot (total not a multiple of the lot) goes to the account with the largest
   remaining shortfall (exact share minus what it got), same tie-break, among accounts
   with room under their cap.
5. Anything no account can take is returned as left-over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class Entry(NamedTuple):
    # A named tuple rather than a dataclass: it is built once per account per split.
    account_id: str
    weight: int
    cap: int | None = None  # maximum shares; None = unlimited


@dataclass(slots=True)
class SplitResult:
    alloc: dict[str, int] = field(default_factory=dict)
    clipped: set[str] = field(default_factory=set)
    extra_lot: set[str] = field(default_factory=set)
    odd_lot: str | None = None
    leftover: int = 0


def order_keys(account_ids: Sequence[str], rotation: int | None) -> dict[str, int]:
    """Tie-break rank per account: sorted id order, optionally rotated by an offset."""
    ids = sorted(account_ids)
    n = len(ids)
    if not rotation or n == 0:
        return {a: i for i, a in enumerate(ids)}
    off = rotation % n
    return {a: (i - off) % n for i, a in enumerate(ids)}


def split(total: int, lot: int, entries: Sequence[Entry], rank: dict[str, int]) -> SplitResult:
    """Split `total` shares over `entries` (weights > 0) in multiples of `lot`."""
    res = SplitResult()
    if total <= 0 or not entries:
        res.leftover = max(total, 0)
        return res
    remaining = total
    wsum = sum(e.weight for e in entries)
    # Water-filling: clipping an account raises everyone else's share, so visit capped
    # accounts from the tightest cap per unit of weight and stop at the first that fits.
    # The sort key is cap/weight scaled to an integer (exact ratios would cost a Fraction
    # per account); the verification pass below makes the result exact regardless.
    gone: set[str] = set()
    pending = [e for e in entries if e.cap is not None]
    while pending:
        pending.sort(key=lambda e: ((e.cap or 0) << 64) // e.weight)
        for e in pending:
            assert e.cap is not None
            if remaining * e.weight <= e.cap * wsum:
                break
            got = e.cap - e.cap % lot
            res.alloc[e.account_id] = got
            res.clipped.add(e.account_id)
            remaining -= got
            wsum -= e.weight
            gone.add(e.account_id)
        pending = [e for e in pending if e.account_id not in gone
                   and remaining * e.weight > (e.cap or 0) * wsum]
    active = [e for e in entries if e.account_id not in gone] if gone else list(entries)
    if not active:
        return _odd_into_clipped(res, remaining, lot, entries, rank)

    unit = wsum * lot
    given = 0
    rems: list[tuple[int, int, Entry]] = []
    for e in active:
        num = remaining * e.weight
        a = (num // unit) * lot
        res.alloc[e.account_id] = a
        given += a
        rems.append((-(num - a * wsum), rank[e.account_id], e))
    left = remaining - given
    lots, odd = divmod(left, lot)
    if lots:
        rems.sort(key=lambda t: (t[0], t[1]))
        while lots:
            progressed = False
            for _neg, _r, e in rems:
                if lots == 0:
                    break
                a = res.alloc[e.account_id]
                if e.cap is None or a + lot <= e.cap:
                    res.alloc[e.account_id] = a + lot
                    res.extra_lot.add(e.account_id)
                    lots -= 1
                    progressed = True
            if not progressed:
                break
        odd += lots * lot
    if odd:
        best: tuple[int, int, Entry] | None = None
        for e in active:
            a = res.alloc[e.account_id]
            if e.cap is not None and a + odd > e.cap:
                continue
            key = (-(remaining * e.weight - a * wsum), rank[e.account_id], e)
            if best is None or key[:2] < best[:2]:
                best = key
        if best is not None:
            res.alloc[best[2].account_id] += odd
            res.odd_lot = best[2].account_id
            odd = 0
        else:
            return _odd_into_clipped(res, odd, lot, entries, rank)
    return res


def _odd_into_clipped(
    res: SplitResult, left: int, lot: int, entries: Sequence[Entry], rank: dict[str, int]
) -> SplitResult:
    # Every account is at its cap in whole lots, so only the sub-lot part can still go
    # somewhere: to one account whose cap leaves room for it, first in tie-break order.
    # Whole lots nobody can take are reported as unallocated, never forced over a cap.
    odd = left % lot
    res.leftover = left - odd
    if odd:
        for e in sorted(entries, key=lambda x: rank[x.account_id]):
            have = res.alloc.get(e.account_id, 0)
            if e.cap is None or have + odd <= e.cap:
                res.alloc[e.account_id] = have + odd
                res.odd_lot = e.account_id
                odd = 0
                break
    res.leftover += odd
    return res
