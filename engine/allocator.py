"""allocate(): eligibility -> method -> rounding -> lot relief -> an explained decision."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from engine import canonical, eligibility
from engine.decision import AllocationDecision
from engine.eligibility import ChunkTask, DecisionContext, Verdict
from engine.errors import AllocationError
from engine.executor import Executor, InProcessExecutor
from engine.invariants import check_decision
from engine.lots import relieve
from engine.methods import (
    NOT_PARTICIPATING,
    MethodInput,
    Outcome,
    integer_weights,
    raw_weight,
    run_flat,
    run_tiered,
)
from engine.model import (
    Account,
    AccountResult,
    AllocationLine,
    AllocationRequest,
    EligibilityReport,
    OrderIntent,
    Reason,
    Security,
    Side,
)
from engine.reasons import ReasonBook
from engine.rulebook import DEFAULT_SCHEME, Rulebook, Scheme
from engine.split import order_keys

# Below this many accounts the pool is bypassed. Measured with `fixalloc bench engine` on a
# 2-core machine, the pool never beat in-process up to 100,000 accounts (0.58x at 200,
# 0.88x at 20,000, 0.93x at 100,000): eligibility is ~15% of a decision, the split and
# result assembly are serial. So the pool is opt-in (min_accounts) until that changes.
PARALLEL_MIN_ACCOUNTS = 1_000_000
_LOCAL = InProcessExecutor()


@dataclass(frozen=True, slots=True)
class _Eligibility:
    context: DecisionContext
    verdicts: dict[str, Verdict]


def _evaluate(rulebook: Rulebook, symbol: str, side: Side, price: Decimal,
              *, securities: Mapping[str, Security], accounts: Sequence[Account],
              executor: Executor | None) -> _Eligibility:
    ctx = eligibility.build_context(rulebook, symbol, side, price, securities)
    ex: Executor = executor or _LOCAL
    if len(accounts) < getattr(ex, "min_accounts", PARALLEL_MIN_ACCOUNTS):
        ex = _LOCAL
    ex.prepare(rulebook)
    issuer_syms = eligibility.issuer_symbols(symbol, securities)
    rows = [eligibility.account_row(a, symbol, price, issuer_syms) for a in accounts]
    n_chunks = max(1, min(len(rows), 2 * int(getattr(ex, "workers", 1))))
    size = -(-len(rows) // n_chunks) if rows else 1
    tasks = [ChunkTask(ctx, tuple(rows[i:i + size])) for i in range(0, len(rows), size)]
    verdicts: dict[str, Verdict] = {}
    for part in ex.map_chunks(eligibility.evaluate_chunk, tasks):
        for v in part:
            verdicts[v[0]] = v
    return _Eligibility(ctx, verdicts)


def _scheme_for(accounts: Sequence[Account], rulebook: Rulebook) -> Scheme:
    names = sorted({a.scheme for a in accounts})
    if len(names) > 1:
        raise AllocationError(
            f"accounts in one block must share one allocation scheme, got {', '.join(names)}"
        )
    if not names:
        return rulebook.scheme("default")
    if names[0] in rulebook.schemes:
        return rulebook.schemes[names[0]]
    books = rulebook.content.get("books", {})
    for a in accounts[:1]:
        book_scheme = books.get(a.book, {}).get("scheme")
        if book_scheme:
            return rulebook.schemes[book_scheme]
    return rulebook.schemes.get("default", DEFAULT_SCHEME)


def _validate(req: AllocationRequest) -> int:
    if req.executed_qty < 0 or req.executed_qty != req.executed_qty.to_integral_value():
        raise AllocationError(f"executed_qty must be a whole number of shares, was "
                              f"{req.executed_qty}")
    if req.avg_px <= 0:
        raise AllocationError(f"avg_px must be positive, was {req.avg_px}")
    if req.symbol not in req.securities:
        raise AllocationError(f"unknown security {req.symbol!r}")
    ids = [a.account_id for a in req.accounts]
    if len(set(ids)) != len(ids):
        raise AllocationError("duplicate account ids in the request")
    if req.preallocations is not None:
        unknown = sorted(set(req.preallocations) - set(ids))
        if unknown:
            raise AllocationError(f"pre-allocation names unknown accounts: {', '.join(unknown)}")
        if not (req.preallocation_reason or "").strip():
            raise AllocationError("a pre-allocation needs a reason")
    return int(req.executed_qty)


def inputs_hash(req: AllocationRequest) -> str:
    """sha256 over every input that can change the decision (not the decision time)."""
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
    # Accounts are hashed in id order so that permuting the input gives the same hash;
    # a flat string per account is several times cheaper than canonical JSON.
    for a in sorted(req.accounts, key=lambda x: x.account_id):
        lots = "" if not a.lots else repr(sorted(
            (s, [(t.lot_id, str(t.quantity), str(t.cost_per_share), t.acquired.isoformat())
                 for t in ls]) for s, ls in a.lots.items()))
        pos = "" if not a.positions else repr(sorted((s, str(q)) for s, q in a.positions.items()))
        h.update(repr((a.account_id, a.book, a.status, str(a.nav), str(a.cash), a.tier,
                       str(a.intended_qty), str(a.target_weight), a.custodian, a.prime_broker,
                       a.strategy, a.vehicle, a.scheme, pos, lots)).encode())
    return h.hexdigest()


def allocate(request: AllocationRequest, rulebook: Rulebook,
             executor: Executor | None = None) -> AllocationDecision:
    """Split the block's executed quantity over its accounts under `rulebook`."""
    # A caller's decimal context (precision, traps) must not change the decision.
    with localcontext(eligibility.DECIMAL_CONTEXT):
        return _allocate(request, rulebook, executor)


def _allocate(req: AllocationRequest, rulebook: Rulebook,
              executor: Executor | None) -> AllocationDecision:
    total = _validate(req)
    lot = req.securities[req.symbol].lot_size
    price = req.avg_px
    scheme = _scheme_for(req.accounts, rulebook)
    methods = [req.method or ("manual" if req.preallocations else scheme.method)]
    methods += [m for m in scheme.fallback if m not in methods]
    evaluated = _evaluate(rulebook, req.symbol, req.side, price, securities=req.securities,
                          accounts=req.accounts, executor=executor)
    rb = ReasonBook(rulebook, evaluated.context, req.symbol)

    results: dict[str, AccountResult] = {}
    eligible: list[Account] = []
    caps: dict[str, int | None] = {}
    cap_key: dict[str, int | str] = {}
    minimum: dict[str, tuple[int, Decimal, int]] = {}
    for a in req.accounts:
        _, excl, cap_list, mini = evaluated.verdicts[a.account_id]
        if excl:
            results[a.account_id] = AccountResult(a.account_id, "excluded", Decimal(0),
                                                  tuple(rb.exclusion(k, a) for k in excl))
            continue
        cap: int | None = None
        for key, shares in cap_list:
            if cap is None or shares < cap:
                cap, cap_key[a.account_id] = shares, key
        if cap is not None and cap <= 0:
            results[a.account_id] = AccountResult(
                a.account_id, "excluded", Decimal(0), (rb.cap(cap_key[a.account_id], a, 0),))
            continue
        caps[a.account_id] = cap
        if mini is not None:
            minimum[a.account_id] = mini
        eligible.append(a)

    m_in = MethodInput(req.side, price, req.symbol, req.preallocations or {})
    method, weights, outcome = "", {}, Outcome(leftover=total)
    tried: list[str] = []
    rank = order_keys([a.account_id for a in eligible],
                      req.rotation_offset if scheme.tie_break == "rotation" else None)
    dropped: dict[str, int] = {}
    for candidate in methods:
        base = scheme.sub_method if candidate == "tiered" else candidate
        weights = integer_weights({a.account_id: raw_weight(base, a, m_in) for a in eligible})
        if not weights:
            tried.append(candidate)
            continue
        method = candidate
        while True:
            if method == "tiered":
                outcome = run_tiered(total, lot, eligible, weights, caps=caps, rank=rank)
            else:
                outcome = run_flat(total, lot, weights, caps, rank)
            below = {a: q for a, q in outcome.alloc.items()
                     if a in minimum and (q < minimum[a][0] or q * price < minimum[a][1])}
            if not below:
                break
            # Drop every account under its minimum at once and re-run over the rest.
            dropped.update(below)
            weights = {a: w for a, w in weights.items() if a not in below}
            if not weights:
                outcome = Outcome(leftover=total)
                break
        break

    for a in eligible:
        aid = a.account_id
        if aid in dropped:
            results[aid] = AccountResult(aid, "dropped", Decimal(0),
                                         (rb.minimum(minimum[aid], dropped[aid]),))
        elif aid not in outcome.weights:
            why = NOT_PARTICIPATING.get(scheme.sub_method if method == "tiered" else method, "")
            results[aid] = AccountResult(aid, "not_participating", Decimal(0),
                                         (rb.not_participating(method or methods[0], why),))
    lines: list[AllocationLine] = []
    wash = scheme.avoid_wash_sales
    for a in eligible:
        aid = a.account_id
        if aid in results:
            continue
        q = outcome.alloc.get(aid, 0)
        note = rb.rounding_note(aid, outcome, lot)
        if aid in outcome.clipped:
            reasons: tuple[Reason, ...] = (rb.cap(cap_key[aid], a, caps[aid] or 0),)
            status = "capped"
        elif q == 0:
            results[aid] = AccountResult(aid, "dropped", Decimal(0), (rb.zero(method, lot),), note)
            continue
        else:
            reasons, status = (rb.allocated(scheme, method),), "allocated"
        qty = Decimal(q)
        results[aid] = AccountResult(aid, status, qty, reasons, note)
        if q > 0:
            reliefs: tuple[Any, ...] = ()
            lots_held = a.lots.get(req.symbol) if req.side is Side.SELL else None
            if lots_held:
                reliefs, lot_note = relieve(lots_held, qty, price, req.trade_date,
                                            method=scheme.lot_relief, avoid_wash_sales=wash,
                                            wash_days=scheme.wash_sale_days)
                results[aid] = AccountResult(aid, status, qty, reasons,
                                             f"{note}; {lot_note}" if note else lot_note)
            lines.append(AllocationLine(aid, qty, price, reliefs))
    lines.sort(key=lambda x: x.account_id)
    allocated = sum(outcome.alloc.values()) if method else 0
    unallocated = total - allocated
    params: dict[str, Any] = {
        **scheme.params(),
        "method": method or None,
        "methods_tried_without_participants": tried,
        "price_basis": "block average price",
        "lot_size": lot,
        "rotation_offset": req.rotation_offset if scheme.tie_break == "rotation" else None,
        "odd_lot_account": outcome.odd_lot,
        "min_allocation_rerun_dropped": sorted(dropped),
    }
    if req.preallocation_reason:
        params["preallocation_reason"] = req.preallocation_reason
    ih = inputs_hash(req)
    decision = AllocationDecision(
        decision_id=canonical.sha256_hex(f"{ih}:{rulebook.version}"),
        block_id=req.block_id, symbol=req.symbol, side=req.side, trade_date=req.trade_date,
        decided_at=req.decided_at, method=method or "none", method_params=params,
        rulebook_version=rulebook.version, inputs_hash=ih,
        executed_qty=Decimal(total), allocated_qty=Decimal(allocated),
        unallocated_qty=Decimal(unallocated),
        unallocated_reason=rb.unallocated(unallocated, eligible, methods, dropped, outcome),
        avg_px=price, lot_size=lot, lines=tuple(lines),
        results=tuple(results[k] for k in sorted(results)),
    )
    check_decision(decision)
    return decision


def evaluate_eligibility(order: OrderIntent, accounts: Sequence[Account],
                         securities: Mapping[str, Security], rulebook: Rulebook,
                         executor: Executor | None = None) -> EligibilityReport:
    """Pre-trade compliance: the same restrictions as allocate(), for an order intent."""
    with localcontext(eligibility.DECIMAL_CONTEXT):
        return _evaluate_eligibility(order, accounts, securities, rulebook, executor)


def _evaluate_eligibility(order: OrderIntent, accounts: Sequence[Account],
                          securities: Mapping[str, Security], rulebook: Rulebook,
                          executor: Executor | None) -> EligibilityReport:
    if order.symbol not in securities:
        raise AllocationError(f"unknown security {order.symbol!r}")
    price = order.limit_px or securities[order.symbol].price
    if price is None or price <= 0:
        raise AllocationError(f"no price for {order.symbol}: give a limit price or a "
                              "reference price in the security master")
    ev = _evaluate(rulebook, order.symbol, order.side, price, securities=securities,
                   accounts=accounts, executor=executor)
    rb = ReasonBook(rulebook, ev.context, order.symbol)
    eligible: list[str] = []
    excluded: list[AccountResult] = []
    caps: dict[str, Decimal] = {}
    for a in sorted(accounts, key=lambda x: x.account_id):
        _, excl, cap_list, _m = ev.verdicts[a.account_id]
        cap = min((s for _k, s in cap_list), default=None)
        if excl:
            excluded.append(AccountResult(a.account_id, "excluded", Decimal(0),
                                          tuple(rb.exclusion(k, a) for k in excl)))
        elif cap is not None and cap <= 0:
            key = next(k for k, s in cap_list if s == cap)
            excluded.append(AccountResult(a.account_id, "excluded", Decimal(0),
                                          (rb.cap(key, a, 0),)))
        else:
            eligible.append(a.account_id)
            if cap is not None:
                caps[a.account_id] = Decimal(cap)
    return EligibilityReport(order.block_id, tuple(eligible), tuple(excluded), rulebook.version,
                             caps)
