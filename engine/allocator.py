"""allocate(): eligibility -> method -> rounding -> lot relief -> an explained decision.

The per-account work runs in partitions of the account book (engine.partition), in-process
or in pool workers; `engine.rounds` drives the rounds, this module validates the request and
assembles the decision.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext
from typing import Any

from engine import canonical, eligibility, partition, rounds, table
from engine.book import AccountBook, book_for
from engine.decision import AllocationDecision
from engine.errors import AllocationError
from engine.executor import Executor
from engine.invariants import check_decision
from engine.model import (
    AccountResult,
    AllocationRequest,
    EligibilityReport,
    OrderIntent,
    Security,
)
from engine.reasons import ReasonBook
from engine.rounds import PARALLEL_MIN_ACCOUNTS
from engine.rulebook import DEFAULT_SCHEME, Rulebook, Scheme


def prepare_accounts(accounts: Sequence[Any], executor: Executor | None = None) -> None:
    """Prepare an account book ahead of its first block (call when reference data loads).

    Computes what depends only on the accounts (id order, the accounts' part of the inputs
    hash) and, if `executor` has partitions and the book is at least its `min_accounts`,
    installs the accounts in them, so the first block pays none of it. Pass the same tuple
    that will be in `AllocationRequest.accounts` (books are memoised on its identity).
    """
    book = book_for(accounts)
    book.hash_bytes()
    if executor is not None and rounds.uses_partitions(executor, len(book.ids)):
        executor.prepare_accounts(book.version, book.sorted)  # type: ignore[attr-defined]


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


def _allocate(req: AllocationRequest, rulebook: Rulebook,
              executor: Executor | None) -> AllocationDecision:
    book = book_for(req.accounts)
    total = _validate(req, book)
    lot = req.securities[req.symbol].lot_size
    price = req.avg_px
    scheme = _scheme_for(book, rulebook)
    methods = [req.method or ("manual" if req.preallocations else scheme.method)]
    methods += [m for m in scheme.fallback if m not in methods]
    run = rounds.open_run(rulebook, req.symbol, req.side, price, securities=req.securities,
                          book=book, executor=executor)
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
    split = rounds.Split()
    for candidate in methods:
        base = scheme.sub_method if candidate == "tiered" else candidate
        weighed = run.each(partition.weigh, [(base, prealloc, bases[k], n_elig, rotation)
                                             for k in range(run.parts)])
        if not sum(w[0] for w in weighed):
            tried.append(candidate)
            continue
        method = candidate
        emin = min(w[1] for w in weighed if w[1] is not None)
        split = rounds.split_all(run, book, total, lot, method, -emin if emin < 0 else 0,
                                 n_elig)
        break
    cols = rounds.columns(run, book, req, rb, scheme, method, methods, lot)
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
        unallocated_reason=rb.unallocated(unallocated, cols, methods, split.participants),
        avg_px=price, lot_size=lot, lines=table.lines_table(cols, price),
        results=table.results_table(cols),
    )
    check_decision(decision)
    return decision


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
    run = rounds.open_run(rulebook, order.symbol, order.side, price, securities=securities,
                          book=book, executor=executor)
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


__all__ = ["PARALLEL_MIN_ACCOUNTS", "allocate", "evaluate_eligibility",
           "inputs_hash", "prepare_accounts"]
