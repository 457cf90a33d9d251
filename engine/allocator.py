"""allocate(): eligibility -> method -> rounding -> lot relief -> an explained decision.

The per-account work runs in partitions of the account book (engine.partition), in-process
or in pool workers; this module drives the rounds and assembles the decision.
"""

from __future__ import annotations

import hashlib
import itertools
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, TypeVar

from engine import canonical, eligibility, partition, table
from engine.book import AccountBook, book_for
from engine.decision import AllocationDecision
from engine.eligibility import DecisionContext
from engine.errors import AllocationError
from engine.executor import Executor, InProcessExecutor, PartitionedExecutor
from engine.invariants import check_decision
from engine.lots import relieve
from engine.methods import NOT_PARTICIPATING, Outcome, run_flat, run_tiered
from engine.model import (
    AccountResult,
    AllocationRequest,
    EligibilityReport,
    LotRelief,
    OrderIntent,
    Reason,
    Security,
    Side,
)
from engine.reasons import ReasonBook
from engine.rulebook import DEFAULT_SCHEME, Rulebook, Scheme

# Below this many accounts the pool is bypassed. Measured with `fixalloc bench engine
# --force-pool` on a 2-core machine: ~1.1x at 5,000-10,000 accounts, 1.3x or more at 20,000,
# ~1.55x at 100,000 (docs/engine.md); the small gain below 20,000 is within the machine's
# run-to-run noise, and below ~5,000 the rounds' fixed cost outweighs the halved work.
PARALLEL_MIN_ACCOUNTS = 20_000
_LOCAL = InProcessExecutor()
_sessions = itertools.count(1)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Run:
    """One decision's partitions."""

    ex: PartitionedExecutor
    sid: str
    parts: int
    ctx: DecisionContext
    n_eligible: list[int]
    pending: Callable[[], list[int]] | None = None

    def ready(self) -> None:
        """Wait for the eligibility started by `_open`."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.n_eligible = pending()

    def all(self, fn: Callable[[Any], R], *args: Any) -> list[R]:
        """`fn((sid, *args))` in every partition."""
        a = (self.sid, *args)
        return self.ex.call_partitions(fn, [a] * self.parts)

    def each(self, fn: Callable[[Any], R], args: Sequence[tuple[Any, ...]]) -> list[R]:
        return self.ex.call_partitions(fn, [(self.sid, *a) for a in args])


def _open(rulebook: Rulebook, symbol: str, side: Side, price: Decimal, *,
          securities: Mapping[str, Security], book: AccountBook,
          executor: Executor | None) -> _Run:
    ctx = eligibility.build_context(rulebook, symbol, side, price, securities)
    ex: Any = executor or _LOCAL
    if (len(book.ids) < getattr(ex, "min_accounts", PARALLEL_MIN_ACCOUNTS)
            or not hasattr(ex, "start_partitions")):
        ex = _LOCAL
    ex.prepare(rulebook)
    ex.prepare_accounts(book.version, book.sorted)
    issuer_syms = eligibility.issuer_symbols(symbol, securities)
    run = _Run(ex, f"s{next(_sessions)}", int(ex.partitions), ctx, [])
    # Started here, collected by `ready` so the caller can work while partitions evaluate.
    run.pending = ex.start_partitions(partition.evaluate,
                                      [(run.sid, book.version, ctx, issuer_syms)] * run.parts)
    return run


def prepare_accounts(accounts: Sequence[Any], executor: Executor | None = None) -> None:
    """Prepare an account book ahead of its first block (call when reference data loads).

    Computes what depends only on the accounts (id order, the accounts' part of the inputs
    hash) and, if `executor` has partitions and the book is at least its `min_accounts`,
    installs the accounts in them, so the first block pays none of it. Pass the same tuple
    that will be in `AllocationRequest.accounts` (books are memoised on its identity).
    """
    book = book_for(accounts)
    book.hash_bytes()
    ex: Any = executor
    if (ex is not None and hasattr(ex, "start_partitions")
            and len(book.ids) >= getattr(ex, "min_accounts", PARALLEL_MIN_ACCOUNTS)):
        ex.prepare_accounts(book.version, book.sorted)


def _scheme_for(book: AccountBook, rulebook: Rulebook) -> Scheme:
    names = book.schemes
    if len(names) > 1:
        raise AllocationError(
            f"accounts in one block must share one allocation scheme, got {', '.join(names)}"
        )
    if not names:
        return rulebook.scheme("default")
    if names[0] in rulebook.schemes:
        return rulebook.schemes[names[0]]
    books = rulebook.content.get("books", {})
    if book.first is not None:
        book_scheme = books.get(book.first.book, {}).get("scheme")
        if book_scheme:
            return rulebook.schemes[book_scheme]
    return rulebook.schemes.get("default", DEFAULT_SCHEME)


def _validate(req: AllocationRequest, book: AccountBook) -> int:
    if req.executed_qty < 0 or req.executed_qty != req.executed_qty.to_integral_value():
        raise AllocationError(f"executed_qty must be a whole number of shares, was "
                              f"{req.executed_qty}")
    if req.avg_px <= 0:
        raise AllocationError(f"avg_px must be positive, was {req.avg_px}")
    if req.symbol not in req.securities:
        raise AllocationError(f"unknown security {req.symbol!r}")
    if book.duplicates:
        raise AllocationError("duplicate account ids in the request")
    if req.preallocations is not None:
        index = book.index
        unknown = sorted(k for k in set(req.preallocations) if k not in index)
        if unknown:
            raise AllocationError(f"pre-allocation names unknown accounts: {', '.join(unknown)}")
        if not (req.preallocation_reason or "").strip():
            raise AllocationError("a pre-allocation needs a reason")
    return int(req.executed_qty)


def inputs_hash(req: AllocationRequest) -> str:
    """sha256 over every input that can change the decision (not the decision time)."""
    return _inputs_hash(req, book_for(req.accounts))


def _inputs_hash(req: AllocationRequest, book: AccountBook) -> str:
    h = hashlib.sha256()
    head = {
        "block_id": req.block_id, "symbol": req.symbol, "side": req.side.value,
        "executed_qty": req.executed_qty, "avg_px": req.avg_px,
        "trade_date": req.trade_date, "method": req.method,
        "preallocations": dict(sorted((req.preallocations or {}).items())),
        "preallocation_reason": req.preallocation_reason,
        "rotation_offset": req.rotation_offset,
        "securities": {s: [v.issuer, v.sector, v.country, sorted(v.esg_tags), v.lot_size,
                           v.related_to, v.price] for s, v in sorted(req.securities.items())},
    }
    h.update(canonical.dumps(head).encode())
    # Accounts are hashed in id order so that permuting the input gives the same hash; a
    # flat string per account, built once per account book (engine.book).
    h.update(book.hash_bytes())
    return h.hexdigest()


def allocate(request: AllocationRequest, rulebook: Rulebook,
             executor: Executor | None = None) -> AllocationDecision:
    """Split the block's executed quantity over its accounts under `rulebook`."""
    # A caller's decimal context (precision, traps) must not change the decision.
    with localcontext(eligibility.DECIMAL_CONTEXT):
        return _allocate(request, rulebook, executor)


# -- the split, distributed over partitions (same rules and results as engine.split) -----


@dataclass(slots=True)
class _Split:
    allocated: int = 0
    odd_lot: int | None = None    # global index of the account that took the odd lot
    participants: bool = False    # anyone left with a positive weight at the end


def _split_all(run: _Run, book: AccountBook, total: int, lot: int, method: str, shift: int,
               n_rank: int) -> _Split:
    """Split, drop accounts below their minimum, re-split until stable."""
    out = _Split()
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
        odd = 0
        flat = None if method == "tiered" else _flat(run, total, lot, wsum, n_rank)
        if flat is None:
            odd_lot = _serial(run, book, total, lot, method)
        else:
            odd, odd_target = flat
            odd_lot = odd_target[2] if odd_target is not None else None
        checked = run.each(partition.check, [
            (odd_target[1] if odd_target is not None and odd_target[0] == k else None, odd)
            for k in range(run.parts)])
        out.allocated = sum(c[0] for c in checked)
        out.odd_lot = odd_lot
        if not any(c[1] for c in checked):
            return out
        # Drop every account under its minimum at once and re-run over the rest.
        drops = [c[1] for c in checked]


_MAX_CLIP_ROUNDS = 64


def _flat(run: _Run, total: int, lot: int, wsum: int, n_rank: int
          ) -> tuple[int, tuple[int, int, int] | None] | None:
    """A flat split (engine.split.split) over the partitions; None if it needs the serial path.

    Returns the odd lot and who takes it (partition, participant, global index).
    """
    remaining = total
    # Water-filling: the set of clipped accounts does not depend on the order they are
    # clipped in (each clip only raises everyone else's share), so clip everyone who
    # exceeds at the current level, lower the level, repeat.
    for _ in range(_MAX_CLIP_ROUNDS):
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
        return odd, _odd_clipped(run, odd) if odd else None
    lots, odd = divmod(remaining - given, lot)
    if lots > sum(f[2] for f in floors):
        return None  # some lots need a second pass; rare, done serially
    threshold = None
    if lots:
        keys = sorted(itertools.chain.from_iterable(run.all(partition.top, lots)))
        threshold = keys[lots - 1]
    if threshold is None and not odd:
        return 0, None
    best = run.all(partition.extra, threshold, odd, remaining, wsum)
    if not odd:
        return 0, None
    cands = [(b[0], b[1], k, b[2], b[3]) for k, b in enumerate(best) if b is not None]
    if cands:
        _neg, _rank, k, j, g = min(cands)
        return odd, (k, j, g)
    return odd, _odd_clipped(run, odd)


def _odd_clipped(run: _Run, odd: int) -> tuple[int, int, int] | None:
    found = [(r[0], k, r[1], r[2]) for k, r in enumerate(run.all(partition.odd_clipped, odd))
             if r is not None]
    if not found:
        return None
    _rank, k, j, g = min(found)
    return k, j, g


def _serial(run: _Run, book: AccountBook, total: int, lot: int, method: str) -> int | None:
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
            f = 0 if q is None else partition.IN_ALLOC
            if aid in outcome.clipped:
                f |= partition.CLIPPED
            if aid in outcome.extra_lot:
                f |= partition.EXTRA_LOT
            if outcome.odd_lot == aid:
                f |= partition.ODD_LOT
            assigned.append((j, q or 0, f))
        args.append((assigned,))
    run.each(partition.assign, args)
    return book.index[outcome.odd_lot] if outcome.odd_lot is not None else None


# -- the decision -------------------------------------------------------------------------


def _allocate(req: AllocationRequest, rulebook: Rulebook,
              executor: Executor | None) -> AllocationDecision:
    book = book_for(req.accounts)
    total = _validate(req, book)
    lot = req.securities[req.symbol].lot_size
    price = req.avg_px
    scheme = _scheme_for(book, rulebook)
    methods = [req.method or ("manual" if req.preallocations else scheme.method)]
    methods += [m for m in scheme.fallback if m not in methods]
    run = _open(rulebook, req.symbol, req.side, price, securities=req.securities, book=book,
                executor=executor)
    try:
        ih = _inputs_hash(req, book)
        rb = ReasonBook(rulebook, run.ctx, req.symbol)
    finally:
        run.ready()
    n_elig = sum(run.n_eligible)
    bases = [sum(run.n_eligible[:k]) for k in range(run.parts)]
    rotation = req.rotation_offset if scheme.tie_break == "rotation" else None
    prealloc = req.preallocations or {}
    method = ""
    tried: list[str] = []
    split = _Split()
    for candidate in methods:
        base = scheme.sub_method if candidate == "tiered" else candidate
        weighed = run.each(partition.weigh, [(base, prealloc, bases[k], n_elig, rotation)
                                             for k in range(run.parts)])
        if not sum(w[0] for w in weighed):
            tried.append(candidate)
            continue
        method = candidate
        emin = min(w[1] for w in weighed if w[1] is not None)
        split = _split_all(run, book, total, lot, method, -emin if emin < 0 else 0, n_elig)
        break
    cols = _columns(run, book, req, rb, scheme, method, methods, lot)
    allocated = split.allocated if method else 0
    unallocated = total - allocated
    dropped = sorted(cols.dropped)
    params: dict[str, Any] = {
        **scheme.params(),
        "method": method or None,
        "methods_tried_without_participants": tried,
        "price_basis": "block average price",
        "lot_size": lot,
        "rotation_offset": rotation,
        "odd_lot_account": book.ids[split.odd_lot] if split.odd_lot is not None else None,
        "min_allocation_rerun_dropped": [book.ids[g] for g in dropped],
    }
    if req.preallocation_reason:
        params["preallocation_reason"] = req.preallocation_reason
    decision = AllocationDecision(
        decision_id=canonical.sha256_hex(f"{ih}:{rulebook.version}"),
        block_id=req.block_id, symbol=req.symbol, side=req.side, trade_date=req.trade_date,
        decided_at=req.decided_at, method=method or "none", method_params=params,
        rulebook_version=rulebook.version, inputs_hash=ih,
        executed_qty=Decimal(total), allocated_qty=Decimal(allocated),
        unallocated_qty=Decimal(unallocated),
        unallocated_reason=rb.unallocated(unallocated, n_elig > 0, methods, bool(dropped),
                                          split.participants),
        avg_px=price, lot_size=lot, lines=table.lines_table(cols, price),
        results=table.results_table(cols),
    )
    check_decision(decision)
    return decision


def _columns(run: _Run, book: AccountBook, req: AllocationRequest, rb: ReasonBook,
             scheme: Scheme, method: str, methods: Sequence[str], lot: int
             ) -> table.DecisionColumns:
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
        if code in (partition.ALLOCATED, partition.NOT_PARTICIPATING, partition.ZERO):
            r = shared.get(code)
            if r is None:
                if code == partition.ALLOCATED:
                    r = (rb.allocated(scheme, method),)
                elif code == partition.ZERO:
                    r = (rb.zero(method, lot),)
                else:
                    r = (rb.not_participating(method or methods[0], why),)
                shared[code] = r
            return r
        a = accounts[i]
        if code == partition.EXCLUDED:
            return tuple(rb.exclusion(k, a) for k in excluded[i])
        if code == partition.CAP_EXCLUDED:
            return (rb.cap(cap_excluded[i], a, 0),)
        if code == partition.CAPPED:
            key, cap = capped[i]
            return (rb.cap(key, a, cap or 0),)
        if code == partition.DROPPED_MIN:
            got, mini = dropped[i]
            return (rb.minimum(mini, got),)
        raise AssertionError(f"unknown status code {code}")

    def note(f: int) -> str:
        return rb.note(bool(f & partition.CLIPPED), bool(f & partition.EXTRA_LOT),
                       bool(f & partition.ODD_LOT))

    return table.DecisionColumns(
        accounts=accounts, ids=book.ids, ids_unique=not book.duplicates, status=status,
        qty=qty, flags=flags,
        excluded=excluded, cap_excluded=cap_excluded, capped=capped, dropped=dropped,
        reliefs=reliefs, reason=reason, note=note, ids_json=book.ids_json)


def evaluate_eligibility(order: OrderIntent, accounts: Sequence[Any],
                         securities: Mapping[str, Security], rulebook: Rulebook,
                         executor: Executor | None = None) -> EligibilityReport:
    """Pre-trade compliance: the same restrictions as allocate(), for an order intent."""
    with localcontext(eligibility.DECIMAL_CONTEXT):
        return _evaluate_eligibility(order, accounts, securities, rulebook, executor)


def _evaluate_eligibility(order: OrderIntent, accounts: Sequence[Any],
                          securities: Mapping[str, Security], rulebook: Rulebook,
                          executor: Executor | None) -> EligibilityReport:
    if order.symbol not in securities:
        raise AllocationError(f"unknown security {order.symbol!r}")
    price = order.limit_px or securities[order.symbol].price
    if price is None or price <= 0:
        raise AllocationError(f"no price for {order.symbol}: give a limit price or a "
                              "reference price in the security master")
    book = book_for(accounts)
    run = _open(rulebook, order.symbol, order.side, price, securities=securities, book=book,
                executor=executor)
    run.ready()
    rb = ReasonBook(rulebook, run.ctx, order.symbol)
    excluded: dict[int, tuple[int | str, ...]] = {}
    cap_excluded: dict[int, int | str] = {}
    eligible: list[int] = []
    caps: dict[str, Decimal] = {}
    ids, sorted_accounts = book.ids, book.sorted
    for excl, capzero, el, el_caps in run.all(partition.report):
        excluded.update(excl)
        cap_excluded.update(capzero)
        eligible.extend(el)
        for g, cap in zip(el, el_caps, strict=True):
            if cap is not None:
                caps[ids[g]] = Decimal(cap)
    out: list[AccountResult] = []
    for g in sorted(itertools.chain(excluded, cap_excluded)):
        a = sorted_accounts[g]
        if g in excluded:
            out.append(AccountResult(a.account_id, "excluded", Decimal(0),
                                     tuple(rb.exclusion(k, a) for k in excluded[g])))
        else:
            out.append(AccountResult(a.account_id, "excluded", Decimal(0),
                                     (rb.cap(cap_excluded[g], a, 0),)))
    return EligibilityReport(order.block_id, tuple(ids[g] for g in eligible), tuple(out),
                             rulebook.version, caps)


__all__ = ["PARALLEL_MIN_ACCOUNTS", "Outcome", "allocate", "evaluate_eligibility",
           "inputs_hash", "prepare_accounts"]
