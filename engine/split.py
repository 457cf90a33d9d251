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

The tie-break rank and the orders of rules 3 and 4 are defined here once; the partitioned
split (`engine.partition_split`) uses the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    # Passed over for a left-over lot or the odd lot for lack of room under the cap.
    held: set[str] = field(default_factory=set)
    extra_lot: set[str] = field(default_factory=set)
    odd_lot: str | None = None
    leftover: int = 0


def tie_ranks(positions: Iterable[int], n: int, rotation: int | None) -> list[int]:
    """Tie-break rank of the accounts at `positions` among `n` in account-id order.

    Without a rotation the rank is the position; with one, the order starts at position
    `rotation` (mod n) and wraps, so a gateway that advances the offset per block spreads
    ties fairly over time.
    """
    if not rotation or not n:
        return list(positions)
    off = rotation % n
    return [(p - off) % n for p in positions]


def lot_keys(rems: Iterable[int], ranks: Iterable[int], unit: int, n_rank: int) -> list[int]:
    """Order of the left-over lots (smallest key first): largest fractional remainder
    `rem/unit` first, then tie-break rank (every rank < `n_rank`)."""
    return [(unit - rem) * n_rank + rank for rem, rank in zip(rems, ranks, strict=True)]


def odd_key(shortfall: int, rank: int) -> tuple[int, int]:
    """Order of the odd lot (smallest first): largest shortfall first, then tie-break rank."""
    return (-shortfall, rank)


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
    n_rank = max(rank[e.account_id] for e in active) + 1
    given = 0
    rems: list[int] = []
    for e in active:
        num = remaining * e.weight
        a = (num // unit) * lot
        res.alloc[e.account_id] = a
        given += a
        rems.append(num - a * wsum)
    order = list(zip(lot_keys(rems, (rank[e.account_id] for e in active), unit, n_rank),
                     active, strict=True))
    left = remaining - given
    lots, odd = divmod(left, lot)
    if lots:
        order.sort(key=lambda t: t[0])
        while lots:
            progressed = False
            skipped: list[str] = []
            for _key, e in order:
                if lots == 0:
                    break
                a = res.alloc[e.account_id]
                if e.cap is None or a + lot <= e.cap:
                    res.alloc[e.account_id] = a + lot
                    res.extra_lot.add(e.account_id)
                    lots -= 1
                    progressed = True
                    # Everyone skipped so far was next in line and had no room.
                    res.held.update(skipped)
                    skipped = []
                else:
                    skipped.append(e.account_id)
            if not progressed:
                break
        odd += lots * lot
    if odd:
        best: tuple[tuple[int, int], Entry] | None = None
        no_room: list[tuple[tuple[int, int], str]] = []
        for e in active:
            a = res.alloc[e.account_id]
            key = odd_key(remaining * e.weight - a * wsum, rank[e.account_id])
            if e.cap is not None and a + odd > e.cap:
                no_room.append((key, e.account_id))
                continue
            if best is None or key < best[0]:
                best = (key, e)
        if best is not None:
            res.alloc[best[1].account_id] += odd
            res.odd_lot = best[1].account_id
            res.held.update(aid for key, aid in no_room if key < best[0])
            odd = 0
        else:
            return _odd_into_clipped(res, odd, lot, entries, rank)
    res.held -= res.clipped
    return res


def _odd_into_clipped(
    res: SplitResult, left: int, lot: int, entries: Sequence[Entry], rank: dict[str, int]
) -> SplitResult:
    # Every account is at its cap in whole lots, so only the sub-lot part can still go
    # somewhere: to one account whose cap leaves room for it, first in tie-break order.
    # Whole lots nobody can take are reported as unallocated, never forced over a cap.
    odd = left % lot
    res.leftover = left - odd
    # Nobody could take the rest: every account that is not clipped was held by its cap
    # (any held earlier, for a left-over lot, is among them).
    res.held = {e.account_id for e in entries if e.account_id not in res.clipped}
    if odd:
        for e in sorted(entries, key=lambda x: rank[x.account_id]):
            have = res.alloc[e.account_id]  # every entry was given its clip or its floor
            if e.cap is None or have + odd <= e.cap:
                res.alloc[e.account_id] = have + odd
                res.odd_lot = e.account_id
                odd = 0
                break
    res.leftover += odd
    return res
