"""Partition ops, split rounds: water-filling, lot rounding, the odd lot, minimums, columns.

The same computation as `engine.split`, distributed: each round sends block-level numbers
(the total, the current water level, a threshold) and gets small answers back (sums, a page
of keys, a best candidate). The tie-break rank and the orders of the left-over lots and the
odd lot come from `engine.split`, so both paths order accounts the same way.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from collections.abc import Iterable, Sequence
from decimal import localcontext
from typing import Any

from engine.eligibility import DECIMAL_CONTEXT
from engine.partition_state import PartState, close_session, session
from engine.split import lot_keys, odd_key
from engine.status import (
    ALLOCATED,
    BOUND,
    CAPPED,
    CLIPPED,
    DROPPED_MIN,
    EXTRA_LOT,
    HELD,
    IN_ALLOC,
    NOT_PARTICIPATING,
    ODD_LOT,
    ZERO,
)


def begin(args: tuple[str, int, Sequence[int]]) -> tuple[int, int]:
    """Start a split: drop the given participants; return (Σ weight, participants)."""
    with localcontext(DECIMAL_CONTEXT):
        return _begin(*args)


def _begin(sid: str, shift: int, drop: Sequence[int]) -> tuple[int, int]:
    st = session(sid)
    first = not st.begun
    if first:
        st.begun = True
        if not st.integral:
            st.pw = [int(v.scaleb(shift)) for v in st.pw_dec]
        elif shift:
            scale = 10 ** shift
            st.pw = [w * scale for w in st.pw]
        st.thr = _thresholds(st)
        st.has_min = [j for j, t in enumerate(st.thr) if t]
    alive = st.alive
    for j in drop:
        st.dropped[st.pe[j]] = st.alloc[j]
        alive[j] = 0
    n = len(st.pe)
    st.alloc = [0] * n
    st.flags = bytearray(n)
    pw, cap = st.pw, st.cap
    if first:
        # Water-filling visits capped accounts from the tightest cap per unit of weight;
        # equal keys are resolved exactly by `clip`.
        jb = st.jbits
        st.heap = [(((c << 32) // pw[j]) << jb) | j for j, c in enumerate(cap) if c is not None]
        heapq.heapify(st.heap)
        st.popped = []
    st.scan = 0
    st.pending = []
    st.near_odd = []
    if drop or st.dropped:
        return sum(itertools.compress(pw, alive)), alive.count(1)
    return sum(pw), len(pw)


def _thresholds(st: PartState) -> list[int]:
    """Per participant, the smallest quantity q with q >= min_qty and q * price >= min
    notional (both exact: q * price is a product of a whole number and the price)."""
    price = st.ctx.price
    by_min: dict[Any, int] = {}
    el_min = st.el_min
    out = []
    for e in st.pe:
        mini = el_min[e]
        if mini is None:
            out.append(0)
            continue
        t = by_min.get(mini)
        if t is None:
            q_min, notional = mini[0], mini[1]
            t = max(q_min, 0)
            if notional > 0:
                # Start near notional / price and step to the exact boundary.
                n_min = int(notional / price)
                while n_min > 0 and (n_min - 1) * price >= notional:
                    n_min -= 1
                while n_min * price < notional:
                    n_min += 1
                t = max(t, n_min)
            by_min[mini] = t
        out.append(t)
    return out


def _next_capped(st: PartState) -> int | None:
    """The next capped participant in key order (encoded), or None."""
    if st.scan < len(st.popped):
        x = st.popped[st.scan]
    elif st.heap:
        x = heapq.heappop(st.heap)
        st.popped.append(x)
    else:
        return None
    st.scan += 1
    return x


def clip(args: tuple[str, int, int]) -> tuple[int, int, int]:
    """Clip every capped participant whose share at this water level exceeds its cap.

    Clipping only raises everyone else's share, so everything that exceeds now is clipped
    in the end, whatever the order; the caller lowers the level and asks again until no
    partition clips anyone. Returns (Σ clipped quantity, Σ their weight, how many).
    """
    sid, remaining, wsum = args
    st = session(sid)
    lot = st.ctx.lot_size
    pw, cap, alive, flags, alloc = st.pw, st.cap, st.alive, st.flags, st.alloc
    mask = (1 << st.jbits) - 1
    got_sum = w_sum = count = 0

    def exceeds(j: int) -> bool:
        c = cap[j]
        assert c is not None
        return remaining * pw[j] > c * wsum

    def take(j: int) -> None:
        nonlocal got_sum, w_sum, count
        c = cap[j]
        assert c is not None
        got = c - c % lot
        alloc[j] = got
        flags[j] = CLIPPED | IN_ALLOC
        got_sum += got
        w_sum += pw[j]
        count += 1

    # Accounts with the same key as the last one that fitted may still exceed.
    still = []
    for j in st.pending:
        if exceeds(j):
            take(j)
        else:
            still.append(j)
    st.pending = still
    if still:
        return got_sum, w_sum, count
    while True:
        x = _next_capped(st)
        if x is None:
            return got_sum, w_sum, count
        j = x & mask
        if not alive[j]:
            continue
        if exceeds(j):
            take(j)
            continue
        # The first that fits: later keys are larger, except equal ones, checked exactly.
        key = x >> st.jbits
        group = [j]
        while True:
            y = _next_capped(st)
            if y is None:
                break
            if y >> st.jbits != key:
                st.scan -= 1
                break
            k = y & mask
            if alive[k]:
                if exceeds(k):
                    take(k)
                else:
                    group.append(k)
        st.pending = group
        return got_sum, w_sum, count


def floor(args: tuple[str, int, int, int]) -> tuple[int, int, int]:
    """Round every active account down to whole lots; (Σ rounded, active, candidates).

    A candidate is an active account with room for one more lot; its key (`split.lot_keys`)
    orders the left-over lots.
    """
    sid, remaining, wsum, n_rank = args
    st = session(sid)
    lot = st.ctx.lot_size
    alloc, flags, pw, cap, rank, alive = st.alloc, st.flags, st.pw, st.cap, st.rank, st.alive
    jb = st.jbits
    unit = wsum * lot
    given = 0
    cand: list[int] = []
    near: list[tuple[int, int]] = []
    act: list[int] = []
    rems: list[int] = []
    for j, w in enumerate(pw):
        if flags[j] or not alive[j]:
            continue
        num = remaining * w
        a = (num // unit) * lot
        alloc[j] = a
        flags[j] = IN_ALLOC
        given += a
        act.append(j)
        rems.append(num - a * wsum)
    active = len(act)
    for j, key in zip(act, lot_keys(rems, (rank[j] for j in act), unit, n_rank), strict=True):
        c = cap[j]
        if c is None or alloc[j] + lot <= c:
            cand.append((key << jb) | j)
        else:
            near.append((key, j))
    cand.sort()
    st.cand, st.near = cand, near
    return given, active, len(cand)


def top(args: tuple[str, int]) -> list[int]:
    """The `k` best candidate keys of this partition, best first."""
    sid, k = args
    st = session(sid)
    jb = st.jbits
    return [x >> jb for x in st.cand[:k]]


def extra(args: tuple[str, int | None, int, int, int]
          ) -> tuple[int, int, int, int] | None:
    """Give one lot to every candidate at or before `threshold`; then the odd-lot candidate.

    Accounts without room for a lot whose key comes before `threshold` were next in line
    for a lot a later account took: their cap held them. Returns (−shortfall, rank,
    participant, global index) of the active account first in `split.odd_key` order that
    has room for `odd` shares, or None.
    """
    sid, threshold, odd, remaining, wsum = args
    st = session(sid)
    lot = st.ctx.lot_size
    alloc, flags, pw, cap, rank = st.alloc, st.flags, st.pw, st.cap, st.rank
    jb = st.jbits
    mask = (1 << jb) - 1
    cand = st.cand
    given = 0
    if threshold is not None:
        for x in cand:
            if x >> jb > threshold:
                break
            j = x & mask
            alloc[j] += lot
            flags[j] |= EXTRA_LOT
            given += 1
        for key, j in st.near:
            if key < threshold:
                flags[j] |= HELD
    st.near_odd = []
    if not odd:
        return None

    def shortfall_key(j: int) -> tuple[int, int, int]:
        return (*odd_key(remaining * pw[j] - alloc[j] * wsum, rank[j]), j)

    # Accounts that got no extra lot are short by their remainder (>= 0); those that got
    # one are over their exact share, so they come last, after every account that got none.
    # Among candidates without an extra lot the first in key order is short the most, and
    # has room (a lot > the odd lot).
    found = [shortfall_key(cand[given] & mask)] if given < len(cand) else []
    # Active accounts without room for the odd lot; `check` marks those ahead of the winner.
    no_room = st.near_odd

    def sort_out(js: Iterable[int]) -> None:
        for j in js:
            c = cap[j]
            (found if c is None or alloc[j] + odd <= c else no_room).append(shortfall_key(j))

    sort_out(j for _k, j in st.near)
    if not found:
        sort_out(x & mask for x in cand[:given])
    if not found:
        return None
    best = min(found)
    return best[0], best[1], best[2], st.lo + st.el[st.pe[best[2]]]


def odd_clipped(args: tuple[str, int]) -> tuple[int, int, int] | None:
    """First participant in tie-break order whose cap has room for `odd` more shares.

    Asked only when no active account has room for the odd lot: every active account was
    then held by its cap.
    """
    sid, odd = args
    st = session(sid)
    best: tuple[int, int] | None = None
    alloc, cap, rank, alive, flags = st.alloc, st.cap, st.rank, st.alive, st.flags
    for j, c in enumerate(cap):
        if not alive[j]:
            continue
        if flags[j] & IN_ALLOC and not flags[j] & CLIPPED:
            flags[j] |= HELD
        if c is None or alloc[j] + odd <= c:
            r = rank[j]
            if best is None or r < best[0]:
                best = (r, j)
    if best is None:
        return None
    return best[0], best[1], st.lo + st.el[st.pe[best[1]]]


def check(args: tuple[str, int | None, int, tuple[int, int] | None]) -> tuple[int, list[int]]:
    """Apply the odd lot (to participant `odd_j`; `odd_best` is its `split.odd_key`), then
    the minimums. Returns (Σ allocated, participants below their minimum)."""
    sid, odd_j, odd, odd_best = args
    st = session(sid)
    alloc, flags = st.alloc, st.flags
    if odd_j is not None:
        alloc[odd_j] += odd
        flags[odd_j] |= ODD_LOT | IN_ALLOC
    if odd_best is not None:
        # Ahead of the account that took the odd lot, but no room for it under the cap.
        for neg, r, j in st.near_odd:
            if (neg, r) < odd_best:
                flags[j] |= HELD
    thr = st.thr
    # Only participants with a minimum can be below it.
    below = [j for j in st.has_min if alloc[j] < thr[j] and flags[j] & IN_ALLOC]
    return sum(alloc), below


def gather(args: tuple[str]) -> list[tuple[int, int, int, int | None, int]]:
    """Every live participant as (participant, global index, weight, cap, rank)."""
    st = session(args[0])
    lo, el, pe, pw, cap, rank = st.lo, st.el, st.pe, st.pw, st.cap, st.rank
    return [(j, lo + el[pe[j]], pw[j], cap[j], rank[j]) for j in range(len(pe))
            if st.alive[j]]


def assign(args: tuple[str, Sequence[tuple[int, int, int]]]) -> None:
    """Take (participant, allocation, flags) from a split run elsewhere."""
    sid, assigned = args
    st = session(sid)
    st.alloc = [0] * len(st.pe)
    st.flags = bytearray(len(st.pe))
    for j, q, f in assigned:
        st.alloc[j] = q
        st.flags[j] = f


def finish(args: tuple[str]) -> tuple[int, bytes, Sequence[int], bytes, dict[int, Any],
                                      dict[int, Any], dict[int, Any], dict[int, Any]]:
    """Per-account outcome in compact columns; closes the session.

    Returns (offset, status bytes, quantities, flags, exclusions, cap-excluded keys,
    capped (key, cap), dropped (offered quantity, minimum)), dicts keyed by global index.
    """
    st = close_session(args[0])
    lo = st.lo
    n = len(st.accounts)
    status = st.status
    qty = [0] * n
    flags_out = bytearray(n)
    capped: dict[int, Any] = {}
    dropped: dict[int, Any] = {}
    el = st.el
    for i in el:
        status[i] = NOT_PARTICIPATING
    for e, got in st.dropped.items():
        i = el[e]
        status[i] = DROPPED_MIN
        dropped[lo + i] = (got, st.el_min[e])
    alloc, flags, alive = st.alloc, st.flags, st.alive
    for j, e in enumerate(st.pe):
        if not alive[j]:
            status[el[e]] = DROPPED_MIN
            continue
        i = el[e]
        f = flags[j] if j < len(flags) else 0
        q = alloc[j] if f & IN_ALLOC else 0
        flags_out[i] = f & ~IN_ALLOC
        if f & BOUND:
            status[i] = CAPPED
            capped[lo + i] = (st.el_key[e], st.el_cap[e])
            qty[i] = q
        elif q == 0:
            status[i] = ZERO
        else:
            status[i] = ALLOCATED
            qty[i] = q
    try:
        packed: Sequence[int] = array("q", qty)  # pickles as one buffer
    except OverflowError:
        packed = qty
    return (lo, bytes(status), packed, bytes(flags_out),
            {lo + i: k for i, k in st.excl.items()},
            {lo + i: k for i, k in st.capzero.items()}, capped, dropped)
