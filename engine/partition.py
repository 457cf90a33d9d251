"""Partitions: the slice of an account book one process owns, evaluated and split in place.

An account book (the accounts of one request, in account-id order) is cut into contiguous
partitions, one per worker, and installed once per book version (`install_accounts`). A
decision is then a handful of short rounds over every partition (`Executor.call_partitions`):
each round sends block-level numbers (total, the current water level, a threshold) and gets
small answers back (sums, a page of cap ratios, a best candidate). Per-account work —
eligibility, caps, weights, the lot rounding, the minimum check and the per-account outcome —
stays where the accounts are; only compact columns (bytes and ints) come back at the end.

Every function taking `args` is a top-level "op" so process pools can pickle it. State for
one decision lives in `_STATE` under a session id until `finish` (or eviction).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, localcontext
from typing import Any, TypeVar

from engine.eligibility import (
    DECIMAL_CONTEXT,
    SYS_BUYING_POWER,
    SYS_HOLDINGS,
    SYS_STATUS,
    DecisionContext,
    cel_hits,
    compiled,
    plan_for,
    reset_cel_cache_if_full,
    trade_key,
)
from engine.errors import AllocationError
from engine.methods import MethodInput, raw_weight
from engine.model import Account, Side
from engine.rulebook import Rulebook

# Per-account status codes in the compact columns.
EXCLUDED = 1        # a restriction excludes it (reasons: rule keys)
CAP_EXCLUDED = 2    # a cap leaves room for nothing
DROPPED_MIN = 3     # below its minimum allocation, dropped before the re-run
ZERO = 4            # took part but rounded down to zero
NOT_PARTICIPATING = 5
ALLOCATED = 6
CAPPED = 7

# Per-account flags.
CLIPPED = 1
EXTRA_LOT = 2
ODD_LOT = 4
IN_ALLOC = 8        # the split assigned it a quantity (possibly zero); only these are
                    # checked against their minimum

_ZERO = Decimal(0)

# Account books installed in this process, per space: version -> (global offset, accounts).
# A process pool may host one of its partitions in the calling process, which also runs the
# in-process executor's single partition of the same book: each keeps its own space.
_BOOKS: dict[str, OrderedDict[str, tuple[int, tuple[Account, ...]]]] = {"": OrderedDict()}


class _Space(threading.local):
    # Per thread, so an in-process decision on another thread never sees a pool's space.
    name = ""


_SPACE = _Space()
MAX_BOOKS = 8
_STATE: OrderedDict[str, _Part] = OrderedDict()
_MAX_STATE = 8

MinSpec = tuple[int, Decimal, int]
T = TypeVar("T")
R = TypeVar("R")


def install_accounts(args: tuple[str, int, tuple[Account, ...]]) -> int:
    """Hold `accounts` (a contiguous slice of a book, starting at global index `lo`)."""
    version, lo, accounts = args
    books = _BOOKS.setdefault(_SPACE.name, OrderedDict())
    if version not in books:
        while len(books) >= MAX_BOOKS:
            books.popitem(last=False)
        books[version] = (lo, accounts)
    return len(accounts)


def installed_books() -> list[str]:
    return list(_BOOKS.get(_SPACE.name, ()))


def run_in_space(space: str, fn: Callable[[T], R], arg: T) -> R:
    """`fn(arg)` against the books installed under `space` (not the default one)."""
    prev, _SPACE.name = _SPACE.name, space
    try:
        return fn(arg)
    finally:
        _SPACE.name = prev


def drop_space(space: str) -> None:
    """Forget every book installed under `space`."""
    if space:
        _BOOKS.pop(space, None)


# Per (book, rulebook): each account's scope (book, and its id if it has account rules) and
# custom-rule key (scope, status, categorical fields); plans per (rules_key) of a context.
_STATIC: OrderedDict[tuple[str, str], tuple[list[Any], list[Any]]] = OrderedDict()
_PLANS: OrderedDict[tuple[Any, ...], tuple[dict[Any, Any], dict[Any, Any]]] = OrderedDict()
_MAX_STATIC = 4
_MAX_PLANS = 64


def _static(version: str, accounts: tuple[Account, ...], rulebook: Rulebook
            ) -> tuple[list[Any], list[Any]]:
    key = (version, rulebook.version)
    got = _STATIC.get(key)
    if got is None:
        account_rules = rulebook.account_rules
        scopes = [(a.book, a.account_id if a.account_id in account_rules else None)
                  for a in accounts]
        ckeys = [(scope, a.status, (a.tier, a.strategy, a.vehicle, a.custodian,
                                    a.prime_broker, a.scheme))
                 for scope, a in zip(scopes, accounts, strict=True)]
        while len(_STATIC) >= _MAX_STATIC:
            _STATIC.popitem(last=False)
        got = _STATIC[key] = (scopes, ckeys)
    return got


_WEIGHTS: OrderedDict[tuple[str, str], list[int] | None] = OrderedDict()


def _static_weights(version: str, accounts: tuple[Account, ...], method: str
                    ) -> list[int] | None:
    """Pro-rata and pari-passu weights per account (0 when not positive), computed once per
    book; None for other methods or when a weight is not a whole number."""
    if method not in ("pro_rata", "pari_passu"):
        return None
    key = (version, method)
    if key not in _WEIGHTS:
        raw = [a.intended_qty if method == "pro_rata" else a.nav for a in accounts]
        ints = [int(v) if v is not None and v > 0 else 0 for v in raw]
        whole = all(v is None or v <= 0 or v == i for v, i in zip(raw, ints, strict=True))
        while len(_WEIGHTS) >= 2 * _MAX_STATIC:
            _WEIGHTS.popitem(last=False)
        _WEIGHTS[key] = ints if whole else None
    return _WEIGHTS[key]


class _Part:
    """One decision's view of one partition."""

    __slots__ = (
        "accounts", "alive", "alloc", "begun", "cand", "cap", "capzero", "ctx", "dropped", "el",
        "el_cap", "el_key", "el_min", "excl", "flags", "has_min", "heap", "integral", "jbits",
        "lo",
        "near", "pe", "pending", "popped", "pw", "pw_dec", "rank", "scan", "status", "thr",
        "version",
    )

    def __init__(self, version: str, lo: int, accounts: tuple[Account, ...],
                 ctx: DecisionContext) -> None:
        self.version = version
        self.lo = lo
        self.accounts = accounts
        self.ctx = ctx
        self.status = bytearray(len(accounts))
        self.excl: dict[int, tuple[int | str, ...]] = {}
        self.capzero: dict[int, int | str] = {}
        # Eligible accounts (local index) with their cap, the cap's rule key and minimum.
        self.el: list[int] = []
        self.el_cap: list[int | None] = []
        self.el_key: list[int | str | None] = []
        self.el_min: list[MinSpec | None] = []
        self.dropped: dict[int, int] = {}  # eligible position -> quantity it was offered
        # Participants (positive weight) of the current method: eligible position, weight,
        # cap, tie-break rank; `alive` is cleared when one is dropped below its minimum.
        self.pe: list[int] = []
        self.pw_dec: list[Decimal] = []
        self.integral = True
        self.begun = False
        self.pw: list[int] = []
        self.cap: list[int | None] = []
        self.rank: list[int] = []
        self.alive = bytearray()
        self.jbits = 1
        self.alloc: list[int] = []
        self.flags = bytearray()
        # Water-filling: capped participants by cap per unit of weight, as encoded ints
        # (key << jbits | participant), sorted lazily (a heap, and the prefix popped so far).
        self.heap: list[int] = []
        self.popped: list[int] = []
        self.scan = 0
        self.pending: list[int] = []
        # Lot rounding: candidates for a left-over lot (encoded, sorted) and active accounts
        # without room for a whole lot.
        self.cand: list[int] = []
        self.near: list[int] = []
        # Smallest quantity that meets each participant's minimum (0: none).
        self.thr: list[int] = []
        self.has_min: list[int] = []


def _state(sid: str) -> _Part:
    st = _STATE.get(sid)
    if st is None:
        raise AllocationError(f"decision session {sid} is not open in this process")
    return st


# -- eligibility --------------------------------------------------------------------------


def evaluate(args: tuple[str, str, DecisionContext, Mapping[str, Decimal | None]]) -> int:
    """Evaluate every restriction for this partition's accounts; return how many are eligible."""
    with localcontext(DECIMAL_CONTEXT):
        return _evaluate(*args)


def _evaluate(sid: str, version: str, ctx: DecisionContext,
              issuer_syms: Mapping[str, Decimal | None]) -> int:
    space = _SPACE.name
    books = _BOOKS.get(space)
    book = books.get(version) if books is not None else None
    if book is None:
        raise AllocationError(f"account book {version} is not installed in this process")
    lo, accounts = book
    if space:
        # Per-book caches below are keyed by this; keep them apart from the default space.
        version = f"{version}@{space}"
    rulebook, programs, memo_keys = compiled(ctx.rulebook_version)
    st = _Part(version, lo, accounts, ctx)
    while len(_STATE) >= _MAX_STATE:
        _STATE.popitem(last=False)
    _STATE[sid] = st
    scopes, attrs_list = _static(version, accounts, rulebook)
    is_buy = ctx.side is Side.BUY
    is_sell = ctx.side is Side.SELL
    price = ctx.price
    symbol = ctx.symbol
    cached = _PLANS.get(ctx.rules_key)
    if cached is None:
        while len(_PLANS) >= _MAX_PLANS:
            _PLANS.popitem(last=False)
        cached = _PLANS[ctx.rules_key] = ({}, {})
    # Plans per scope, and custom-rule hits per (scope, status, categorical fields): both
    # depend only on the rulebook and the trade facts, so they are kept across decisions.
    plans, cel_by_attrs = cached
    tkey = trade_key(ctx)
    reset_cel_cache_if_full()
    status = st.status
    excl_out = st.excl
    capzero = st.capzero
    el, el_cap, el_key, el_min = st.el, st.el_cap, st.el_key, st.el_min
    for i, a in enumerate(accounts):
        scope = scopes[i]
        plan = plans.get(scope)
        if plan is None:
            plan = plans[scope] = plan_for(rulebook.rules_for(a.account_id, a.book), ctx,
                                           memo_keys)
        acct_status = a.status
        excl: tuple[int | str, ...] = plan.excl
        if acct_status != "active":
            excl = (SYS_STATUS, *excl)
        if plan.cel:
            # (scope, status, categorical fields)
            ckey = attrs_list[i]
            hits = None
            if plan.cel_categorical:
                # Every custom rule here reads only categorical account fields, so accounts
                # that agree on them share one result.
                hits = cel_by_attrs.get(ckey)
            if hits is None:
                row = (a.account_id, a.book, acct_status, a.nav, a.cash, a.position(symbol),
                       _ZERO, ckey[2])
                hits = cel_hits(plan, row, tkey, programs, memo_keys, ctx=ctx)
                if plan.cel_categorical:
                    cel_by_attrs[ckey] = hits
            if hits:
                excl = (*excl, *hits)
        if excl:
            status[i] = EXCLUDED
            excl_out[i] = excl
            continue
        cap: int | None = None
        key: int | str | None = None
        if plan.cap is not None:
            exposure = _ZERO
            for s, qty in a.positions.items():
                if s in issuer_syms:
                    # The traded symbol is valued at the fill price; related holdings at
                    # their reference price, or the fill price when none is known.
                    px = price if s == symbol else (issuer_syms[s] or price)
                    exposure += qty * px
            money = plan.cap[0] * a.nav / 100 - exposure
            # int() truncates toward zero, the floor for the positive values used here.
            cap = int(money / price) if money > 0 else 0
            key = plan.cap[1]
        if is_buy:
            cash = a.cash
            shares = int(cash / price) if cash > 0 else 0
            if cap is None or shares < cap:
                cap, key = shares, SYS_BUYING_POWER
        elif is_sell:
            shares = max(int(a.position(symbol)), 0)
            if cap is None or shares < cap:
                cap, key = shares, SYS_HOLDINGS
        if cap is not None and cap <= 0:
            status[i] = CAP_EXCLUDED
            capzero[i] = key if key is not None else SYS_BUYING_POWER
            continue
        el.append(i)
        el_cap.append(cap)
        el_key.append(key)
        el_min.append(plan.minimum)
    return len(el)


def report(args: tuple[str]) -> tuple[dict[int, tuple[int | str, ...]], dict[int, int | str],
                                      list[int], list[int | None]]:
    """Eligibility only (pre-trade): exclusions, eligible accounts and caps, by global index."""
    st = _STATE.pop(args[0], None) or _state(args[0])
    lo = st.lo
    return ({lo + i: k for i, k in st.excl.items()}, {lo + i: k for i, k in st.capzero.items()},
            [lo + i for i in st.el], list(st.el_cap))


# -- weights ------------------------------------------------------------------------------


def weigh(args: tuple[str, str, Mapping[str, Decimal], int, int, int | None]
          ) -> tuple[int, int | None]:
    """Weights of the eligible accounts under `method`; (participants, smallest exponent)."""
    with localcontext(DECIMAL_CONTEXT):
        return _weigh(*args)


def _weigh(sid: str, method: str, preallocations: Mapping[str, Decimal], el_base: int,
           n_elig: int, rotation: int | None) -> tuple[int, int | None]:
    st = _state(sid)
    ctx = st.ctx
    accounts = st.accounts
    static = _static_weights(st.version, accounts, method)
    if static is not None:
        # Whole-number weights that do not depend on the trade (see below).
        ws = [static[i] for i in st.el]
        pe = [e for e, w in enumerate(ws) if w]
        return _set_weights(st, pe, [], [ws[e] for e in pe], True, el_base, n_elig, rotation)
    if method == "pro_rata":
        raw: list[Decimal | None] = [accounts[i].intended_qty for i in st.el]
    elif method == "pari_passu":
        raw = [accounts[i].nav for i in st.el]
    else:
        m_in = MethodInput(ctx.side, ctx.price, ctx.symbol, preallocations)
        raw = [raw_weight(method, accounts[i], m_in) for i in st.el]
    pe = [e for e, v in enumerate(raw) if v is not None and v > 0]
    pw_dec = [v for v in raw if v is not None and v > 0]
    ints = [int(v) for v in pw_dec]
    # A split depends only on the ratios of the weights, so whole-number weights are used
    # as they are; otherwise every weight is scaled by the same power of ten (the caller
    # picks it from the smallest exponent of all partitions).
    integral = all(v == i for v, i in zip(pw_dec, ints, strict=True))
    return _set_weights(st, pe, pw_dec, ints, integral, el_base, n_elig, rotation)


def _set_weights(st: _Part, pe: list[int], pw_dec: list[Decimal], ints: list[int],
                 integral: bool, el_base: int, n_elig: int, rotation: int | None
                 ) -> tuple[int, int | None]:
    exp: int | None = None
    if pe:
        exp = 0 if integral else min(int(v.as_tuple().exponent) for v in pw_dec)
    st.integral = integral
    st.pe, st.pw_dec, st.pw = pe, pw_dec, ints
    st.begun = False
    st.dropped = {}
    if rotation:
        off = rotation % n_elig
        st.rank = [(el_base + e - off) % n_elig for e in pe]
    else:
        st.rank = [el_base + e for e in pe]
    el_cap = st.el_cap
    st.cap = [el_cap[e] for e in pe]
    st.alive = bytearray(b"\x01" * len(pe))
    st.jbits = max(len(pe), 1).bit_length()
    st.heap = []
    st.popped = []
    return len(pe), exp


# -- the split (see engine.split for the rules; this is the same computation, distributed) --


def begin(args: tuple[str, int, Sequence[int]]) -> tuple[int, int]:
    """Start a split: drop the given participants; return (Σ weight, participants)."""
    with localcontext(DECIMAL_CONTEXT):
        return _begin(*args)


def _begin(sid: str, shift: int, drop: Sequence[int]) -> tuple[int, int]:
    st = _state(sid)
    first = not st.begun
    if first:
        st.begun = True
        if not st.integral:
            st.pw = [int(v.scaleb(shift)) for v in st.pw_dec]
        elif shift:
            scale = 10 ** shift
            st.pw = [w * scale for w in st.pw]
    if first:
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
    if drop or st.dropped:
        return sum(itertools.compress(pw, alive)), alive.count(1)
    return sum(pw), len(pw)


def _thresholds(st: _Part) -> list[int]:
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


def _next_capped(st: _Part) -> int | None:
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
    st = _state(sid)
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

    A candidate is an active account with room for one more lot; its key orders the
    left-over lots: largest fractional remainder first, then tie-break rank.
    """
    sid, remaining, wsum, n_rank = args
    st = _state(sid)
    lot = st.ctx.lot_size
    alloc, flags, pw, cap, rank, alive = st.alloc, st.flags, st.pw, st.cap, st.rank, st.alive
    jb = st.jbits
    unit = wsum * lot
    given = 0
    active = 0
    cand: list[int] = []
    near: list[int] = []
    for j, w in enumerate(pw):
        if flags[j] or not alive[j]:
            continue
        num = remaining * w
        a = (num // unit) * lot
        alloc[j] = a
        flags[j] = IN_ALLOC
        given += a
        active += 1
        c = cap[j]
        if c is None or a + lot <= c:
            cand.append((((unit - (num - a * wsum)) * n_rank + rank[j]) << jb) | j)
        else:
            near.append(j)
    cand.sort()
    st.cand, st.near = cand, near
    return given, active, len(cand)


def top(args: tuple[str, int]) -> list[int]:
    """The `k` best candidate keys of this partition, best first."""
    sid, k = args
    st = _state(sid)
    jb = st.jbits
    return [x >> jb for x in st.cand[:k]]


def extra(args: tuple[str, int | None, int, int, int]
          ) -> tuple[int, int, int, int] | None:
    """Give one lot to every candidate at or before `threshold`; then the odd-lot candidate.

    Returns (−shortfall, rank, participant, global index) of the active account with the
    largest remaining shortfall that has room for `odd` shares, or None.
    """
    sid, threshold, odd, remaining, wsum = args
    st = _state(sid)
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
    if not odd:
        return None

    def shortfall_key(j: int) -> tuple[int, int, int]:
        return (-(remaining * pw[j] - alloc[j] * wsum), rank[j], j)

    # Accounts that got no extra lot are short by their remainder (>= 0); those that got
    # one are over their exact share, so they come last. Among candidates without an extra
    # lot the first in key order is short the most.
    found = [shortfall_key(cand[given] & mask)] if given < len(cand) else []
    for j in st.near:
        c = cap[j]
        if c is None or alloc[j] + odd <= c:
            found.append(shortfall_key(j))
    if not found:
        for x in cand[:given]:
            j = x & mask
            c = cap[j]
            if c is None or alloc[j] + odd <= c:
                found.append(shortfall_key(j))
    if not found:
        return None
    best = min(found)
    return best[0], best[1], best[2], st.lo + st.el[st.pe[best[2]]]


def odd_clipped(args: tuple[str, int]) -> tuple[int, int, int] | None:
    """First participant in tie-break order whose cap has room for `odd` more shares."""
    sid, odd = args
    st = _state(sid)
    best: tuple[int, int] | None = None
    alloc, cap, rank, alive = st.alloc, st.cap, st.rank, st.alive
    for j, c in enumerate(cap):
        if alive[j] and (c is None or alloc[j] + odd <= c):
            r = rank[j]
            if best is None or r < best[0]:
                best = (r, j)
    if best is None:
        return None
    return best[0], best[1], st.lo + st.el[st.pe[best[1]]]


def check(args: tuple[str, int | None, int]) -> tuple[int, list[int]]:
    """Apply the odd lot (to participant `odd_j`), then the minimums.

    Returns (Σ allocated, participants below their minimum).
    """
    sid, odd_j, odd = args
    st = _state(sid)
    alloc, flags = st.alloc, st.flags
    if odd_j is not None:
        alloc[odd_j] += odd
        flags[odd_j] |= ODD_LOT | IN_ALLOC
    thr = st.thr
    # Only participants with a minimum can be below it.
    below = [j for j in st.has_min if alloc[j] < thr[j] and flags[j] & IN_ALLOC]
    return sum(alloc), below


def gather(args: tuple[str]) -> list[tuple[int, int, int, int | None, int]]:
    """Every live participant as (participant, global index, weight, cap, rank)."""
    st = _state(args[0])
    lo, el, pe, pw, cap, rank = st.lo, st.el, st.pe, st.pw, st.cap, st.rank
    return [(j, lo + el[pe[j]], pw[j], cap[j], rank[j]) for j in range(len(pe))
            if st.alive[j]]


def assign(args: tuple[str, Sequence[tuple[int, int, int]]]) -> None:
    """Take (participant, allocation, flags) from a split run elsewhere."""
    sid, assigned = args
    st = _state(sid)
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
    st = _STATE.pop(args[0], None) or _state(args[0])
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
        if f & CLIPPED:
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
