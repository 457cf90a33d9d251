"""The coordinator: one decision as a few short rounds over every partition of the book.

`open_run` starts eligibility in every partition; `split_all` drives the split (the same
rules as `engine.split`, distributed: water-filling rounds, lot rounding with a global
threshold, the odd lot, the minimum-allocation re-runs); `columns` gathers each partition's
compact per-account outcome into the decision's columns.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from engine import eligibility, partition, table
from engine.book import AccountBook
from engine.eligibility import DecisionContext
from engine.executor import Executor, InProcessExecutor, PartitionedExecutor
from engine.lots import relieve
from engine.methods import NOT_PARTICIPATING, run_flat, run_tiered
from engine.model import AllocationRequest, LotRelief, Reason, Security, Side
from engine.reasons import ReasonBook
from engine.rulebook import Rulebook, Scheme
from engine.status import (
    ALLOCATED,
    CAP_EXCLUDED,
    CAPPED,
    CLIPPED,
    DROPPED_MIN,
    EXCLUDED,
    EXTRA_LOT,
    HELD,
    IN_ALLOC,
    ODD_LOT,
    SHARED_REASON,
    ZERO,
)

# Below this many accounts the pool is bypassed. Measured with `fixalloc bench engine
# --force-pool` on a 2-core machine: ~1.1x at 5,000-10,000 accounts, 1.3x or more at 20,000,
# ~1.55x at 100,000 (docs/engine.md); the small gain below 20,000 is within the machine's
# run-to-run noise, and below ~5,000 the rounds' fixed cost outweighs the halved work.
PARALLEL_MIN_ACCOUNTS = 20_000
_LOCAL = InProcessExecutor()
_sessions = itertools.count(1)
R = TypeVar("R")


@dataclass(slots=True)
class Run:
    """One decision's partitions."""

    ex: PartitionedExecutor
    sid: str
    parts: int
    ctx: DecisionContext
    n_eligible: list[int]
    pending: Callable[[], list[int]] | None = None

    def ready(self) -> None:
        """Wait for the eligibility started by `open_run`."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.n_eligible = pending()

    def all(self, fn: Callable[[Any], R], *args: Any) -> list[R]:
        """`fn((sid, *args))` in every partition."""
        a = (self.sid, *args)
        return self.ex.call_partitions(fn, [a] * self.parts)

    def each(self, fn: Callable[[Any], R], args: Sequence[tuple[Any, ...]]) -> list[R]:
        return self.ex.call_partitions(fn, [(self.sid, *a) for a in args])


def uses_partitions(executor: Any, n_accounts: int) -> bool:
    """Whether `executor` runs a book of `n_accounts` in its own partitions."""
    return (executor is not None and hasattr(executor, "start_partitions")
            and n_accounts >= getattr(executor, "min_accounts", PARALLEL_MIN_ACCOUNTS))


def open_run(rulebook: Rulebook, symbol: str, side: Side, price: Decimal, *,
             securities: Mapping[str, Security], book: AccountBook,
             executor: Executor | None) -> Run:
    ctx = eligibility.build_context(rulebook, symbol, side, price, securities)
    ex: Any = executor if uses_partitions(executor, len(book.ids)) else _LOCAL
    ex.prepare(rulebook)
    ex.prepare_accounts(book.version, book.sorted)
    issuer_syms = eligibility.issuer_symbols(symbol, securities)
    run = Run(ex, f"s{next(_sessions)}", int(ex.partitions), ctx, [])
    # Started here, collected by `ready` so the caller can work while partitions evaluate.
    run.pending = ex.start_partitions(partition.evaluate,
                                      [(run.sid, book.version, ctx, issuer_syms)] * run.parts)
    return run


@dataclass(slots=True)
class Split:
    allocated: int = 0
    odd_lot: int | None = None    # global index of the account that took the odd lot
    participants: bool = False    # anyone left with a positive weight at the end


def split_all(run: Run, book: AccountBook, total: int, lot: int, method: str, shift: int,
              n_rank: int) -> Split:
    """Split, drop accounts below their minimum, re-split until stable."""
    out = Split()
    drops: list[list[int]] = [[] for _ in range(run.parts)]
    while True:
        begun = run.each(partition.begin, [(shift, d) for d in drops])
        wsum = sum(b[0] for b in begun)
        if sum(b[1] for b in begun) == 0:
            out.allocated, out.odd_lot, out.participants = 0, None, False
            return out
        out.participants = True
        if total <= 0:
            # Nothing to split: nobody is assigned a quantity or checked against a minimum.
            out.allocated, out.odd_lot = 0, None
            return out
        odd_target: tuple[int, int, int] | None = None  # partition, participant, global
        odd_best: tuple[int, int] | None = None
        odd = 0
        flat = None if method == "tiered" else _flat(run, total, lot, wsum, n_rank)
        if flat is None:
            odd_lot = _serial(run, book, total, lot, method)
        else:
            odd, odd_target, odd_best = flat
            odd_lot = odd_target[2] if odd_target is not None else None
        checked = run.each(partition.check, [
            (odd_target[1] if odd_target is not None and odd_target[0] == k else None, odd,
             odd_best) for k in range(run.parts)])
        out.allocated = sum(c[0] for c in checked)
        out.odd_lot = odd_lot
        if not any(c[1] for c in checked):
            return out
        # Drop every account under its minimum at once and re-run over the rest.
        drops = [c[1] for c in checked]


MAX_CLIP_ROUNDS = 64
_Flat = tuple[int, tuple[int, int, int] | None, tuple[int, int] | None]


def _flat(run: Run, total: int, lot: int, wsum: int, n_rank: int) -> _Flat | None:
    """A flat split (`engine.split.split`) over the partitions; None if it needs the serial
    path. Returns the odd lot, who takes it (partition, participant, global index) and, when
    it went by largest shortfall, the winner's `split.odd_key`."""
    remaining = total
    # Water-filling: the set of clipped accounts does not depend on the order they are
    # clipped in (each clip only raises everyone else's share), so clip everyone who
    # exceeds at the current level, lower the level, repeat.
    for _ in range(MAX_CLIP_ROUNDS):
        clipped = run.all(partition.clip, remaining, wsum)
        if not any(c[2] for c in clipped):
            break
        remaining -= sum(c[0] for c in clipped)
        wsum -= sum(c[1] for c in clipped)
    else:
        return None  # a long cascade of caps; done serially
    floors = run.all(partition.floor, remaining, wsum, n_rank)
    given = sum(f[0] for f in floors)
    if sum(f[1] for f in floors) == 0:
        # Everyone is at a cap: only the odd part can go, to the first account in tie-break
        # order with room for it; whole lots stay unallocated.
        odd = remaining % lot
        return odd, _odd_clipped(run, odd) if odd else None, None
    lots, odd = divmod(remaining - given, lot)
    if lots > sum(f[2] for f in floors):
        return None  # some lots need a second pass; rare, done serially
    threshold = None
    if lots:
        keys = sorted(itertools.chain.from_iterable(run.all(partition.top, lots)))
        threshold = keys[lots - 1]
    if threshold is None and not odd:
        return 0, None, None
    best = run.all(partition.extra, threshold, odd, remaining, wsum)
    if not odd:
        return 0, None, None
    cands = [(b[0], b[1], k, b[2], b[3]) for k, b in enumerate(best) if b is not None]
    if cands:
        neg, rank, k, j, g = min(cands)
        return odd, (k, j, g), (neg, rank)
    return odd, _odd_clipped(run, odd), None


def _odd_clipped(run: Run, odd: int) -> tuple[int, int, int] | None:
    found = [(r[0], k, r[1], r[2]) for k, r in enumerate(run.all(partition.odd_clipped, odd))
             if r is not None]
    if not found:
        return None
    _rank, k, j, g = min(found)
    return k, j, g


def _serial(run: Run, book: AccountBook, total: int, lot: int, method: str) -> int | None:
    """Gather the participants and split them here (tiered sequencing, rare flat cases)."""
    gathered = run.all(partition.gather)
    ids = book.ids
    weights: dict[str, int] = {}
    caps: dict[str, int | None] = {}
    rank: dict[str, int] = {}
    for part in gathered:
        for _j, g, w, cap, r in part:
            aid = ids[g]
            weights[aid] = w
            caps[aid] = cap
            rank[aid] = r
    if method == "tiered":
        members = [book.sorted[g] for part in gathered for _j, g, *_ in part]
        outcome = run_tiered(total, lot, members, weights, caps=caps, rank=rank)
    else:
        outcome = run_flat(total, lot, weights, caps, rank)
    args = []
    for part in gathered:
        assigned = []
        for j, g, *_rest in part:
            aid = ids[g]
            q = outcome.alloc.get(aid)
            f = 0 if q is None else IN_ALLOC
            if aid in outcome.clipped:
                f |= CLIPPED
            elif aid in outcome.held:
                f |= HELD
            if aid in outcome.extra_lot:
                f |= EXTRA_LOT
            if outcome.odd_lot == aid:
                f |= ODD_LOT
            assigned.append((j, q or 0, f))
        args.append((assigned,))
    run.each(partition.assign, args)
    return book.index[outcome.odd_lot] if outcome.odd_lot is not None else None


def columns(run: Run, book: AccountBook, req: AllocationRequest, rb: ReasonBook,
            scheme: Scheme, method: str, methods: Sequence[str], lot: int
            ) -> table.DecisionColumns:
    """Every partition's outcome, closed and joined into the decision's columns."""
    finished = run.all(partition.finish)
    status = b"".join(f[1] for f in finished)
    qty: Sequence[int]
    arrays = [f[2] for f in finished if isinstance(f[2], array)]
    if len(arrays) == len(finished):
        packed: array[int] = array("q")
        for a in arrays:
            packed.extend(a)
        qty = packed
    else:
        qty = list(itertools.chain.from_iterable(f[2] for f in finished))
    flags = b"".join(f[3] for f in finished)
    excluded: dict[int, tuple[int | str, ...]] = {}
    cap_excluded: dict[int, int | str] = {}
    capped: dict[int, tuple[int | str, int]] = {}
    dropped: dict[int, tuple[int, tuple[int, Decimal, int]]] = {}
    for f in finished:
        excluded.update(f[4])
        cap_excluded.update(f[5])
        capped.update(f[6])
        dropped.update(f[7])
    accounts = book.sorted
    reliefs: dict[int, tuple[tuple[LotRelief, ...], str]] = {}
    if req.side is Side.SELL:
        for i in itertools.compress(range(len(qty)), qty):
            held = accounts[i].lots.get(req.symbol)
            if held:
                reliefs[i] = relieve(held, Decimal(qty[i]), req.avg_px, req.trade_date,
                                     method=scheme.lot_relief,
                                     avoid_wash_sales=scheme.avoid_wash_sales,
                                     wash_days=scheme.wash_sale_days)
    why = NOT_PARTICIPATING.get(scheme.sub_method if method == "tiered" else method, "")
    shared: dict[int, tuple[Reason, ...]] = {}

    def reason(code: int, i: int) -> tuple[Reason, ...]:
        if code in SHARED_REASON:
            r = shared.get(code)
            if r is None:
                if code == ALLOCATED:
                    r = (rb.allocated(scheme, method),)
                elif code == ZERO:
                    r = (rb.zero(method, lot),)
                else:
                    r = (rb.not_participating(method or methods[0], why),)
                shared[code] = r
            return r
        a = accounts[i]
        if code == EXCLUDED:
            return tuple(rb.exclusion(k, a) for k in excluded[i])
        if code == CAP_EXCLUDED:
            return (rb.cap(cap_excluded[i], a, 0),)
        if code == CAPPED:
            key, cap = capped[i]
            return (rb.cap(key, a, cap or 0),)
        if code == DROPPED_MIN:
            got, mini = dropped[i]
            return (rb.minimum(mini, got),)
        raise AssertionError(f"unknown status code {code}")

    def note(f: int) -> str:
        return rb.note(bool(f & CLIPPED), bool(f & EXTRA_LOT), bool(f & ODD_LOT),
                       held=bool(f & HELD))

    return table.DecisionColumns(
        accounts=accounts, ids=book.ids, ids_unique=not book.duplicates, status=status,
        qty=qty, flags=flags,
        excluded=excluded, cap_excluded=cap_excluded, capped=capped, dropped=dropped,
        reliefs=reliefs, reason=reason, note=note, ids_json=book.ids_json)
