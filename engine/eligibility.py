"""Eligibility and caps per account, evaluated in chunks (in-process or in pool workers).

The hot path is shaped for large books: everything that depends only on the security
and side (does an exclusion match? is a side forbidden?) is decided once per decision in
`build_context`; per account the worker only looks up the rules that apply to it and
does the arithmetic that needs its own numbers (NAV, cash, holdings). Accounts travel to
workers as tuples of primitives because pickling dataclasses costs several times more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    localcontext,
)
from typing import Any

import cel

from engine.errors import AllocationError
from engine.model import Account, Security, Side
from engine.rulebook import Restriction, Rulebook

ENGINE_RULE_VERSION = "engine-1"

# Built-in restrictions always apply; they are versioned with the engine itself.
SYS_STATUS = "SYS-STATUS"
SYS_BUYING_POWER = "SYS-BUYING-POWER"
SYS_HOLDINGS = "SYS-HOLDINGS"

# (account_id, book, status, nav, cash, position, issuer exposure, CEL attributes): a tuple
# so that chunks pickle cheaply.
Row = tuple[str, str, str, Decimal, Decimal, Decimal, Decimal, tuple[Any, ...]]
# Worker output per account: (account_id, exclusions, caps, minimum) where exclusions are
# rule keys (int index into the rulebook or a SYS-* id), caps are (key, max shares) and
# minimum is (min_qty shares, min_notional, key) or None.
Verdict = tuple[
    str,
    tuple[int | str, ...],
    tuple[tuple[int | str, int], ...],
    tuple[int, Decimal, int] | None,
]

_CEL_ACCOUNT_FIELDS = (
    "account_id", "book", "status", "tier", "strategy", "vehicle", "custodian",
    "prime_broker", "scheme", "nav", "cash", "position",
)
_ACCOUNT_REF = re.compile(r"\baccount\b")
_ACCOUNT_FIELD_REF = re.compile(r"\baccount\.([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True)
class DecisionContext:
    rulebook_version: str
    symbol: str
    side: Side
    price: Decimal
    lot_size: int
    # rule index -> (reason code, what matched), for rules that fire on this trade
    excluding: Mapping[int, tuple[str, str]]
    caps: Mapping[int, Decimal]  # rule index -> max % of NAV
    minimums: Mapping[int, tuple[Decimal | None, Decimal | None]]
    cel_rules: frozenset[int]
    cel_security: Mapping[str, Any]
    cel_order: Mapping[str, Any]
    # Identifies everything above except the price (rulebook version, side, look-through
    # chain), so per-scope plans can be reused across decisions.
    rules_key: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkTask:
    context: DecisionContext
    rows: tuple[Row, ...]


def lookthrough_chain(symbol: str, securities: Mapping[str, Security]) -> tuple[Security, ...]:
    """The security and every instrument it refers to via `related_to`, nearest first."""
    chain: list[Security] = []
    seen: set[str] = set()
    cur: str | None = symbol
    while cur is not None and cur not in seen:
        seen.add(cur)
        sec = securities.get(cur)
        if sec is None:
            if not chain:
                raise AllocationError(f"unknown security {cur!r}")
            break
        chain.append(sec)
        cur = sec.related_to
    return tuple(chain)


def ultimate_issuer(symbol: str, securities: Mapping[str, Security]) -> str:
    return lookthrough_chain(symbol, securities)[-1].issuer


_MATCH_LABEL = {
    "symbols": ("SECURITY", "security"),
    "issuers": ("ISSUER", "issuer"),
    "sectors": ("SECTOR", "sector"),
    "countries": ("COUNTRY", "country"),
    "esg_tags": ("ESG_TAG", "ESG tag"),
}


def _exclusion_hit(r: Restriction, chain: Sequence[Security]) -> tuple[str, str] | None:
    """(code suffix, human detail) of the first match along the look-through chain."""
    candidates = chain if r.look_through else chain[:1]
    for depth, sec in enumerate(candidates):
        attrs = {
            "symbols": {sec.symbol},
            "issuers": {sec.issuer},
            "sectors": {sec.sector},
            "countries": {sec.country},
            "esg_tags": sec.esg_tags,
        }
        for key, values in sorted(r.match.items()):
            found = sorted(values & attrs[key])
            if found:
                code, label = _MATCH_LABEL[key]
                via = f" (look-through from {chain[0].symbol} to {sec.symbol})" if depth else ""
                return code, f"{label} {found[0]}{via}"
    return None


def build_context(
    rulebook: Rulebook, symbol: str, side: Side, price: Decimal,
    securities: Mapping[str, Security],
) -> DecisionContext:
    """Decide every security-only predicate once per decision (memoised without the price)."""
    chain = lookthrough_chain(symbol, securities)
    key = (rulebook.version, symbol, side.value, chain)
    base = _CONTEXTS.get(key)
    if base is None:
        base = _build_context(rulebook, symbol, side, chain)
        while len(_CONTEXTS) >= _MAX_CONTEXTS:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = base
    return replace(base, price=price)


_CONTEXTS: dict[tuple[Any, ...], DecisionContext] = {}
_MAX_CONTEXTS = 256


def _build_context(rulebook: Rulebook, symbol: str, side: Side, chain: tuple[Security, ...]
                   ) -> DecisionContext:
    sec = chain[0]
    excluding: dict[int, tuple[str, str]] = {}
    caps: dict[int, Decimal] = {}
    minimums: dict[int, tuple[Decimal | None, Decimal | None]] = {}
    cel_rules: set[int] = set()
    for i, r in enumerate(rulebook.restrictions):
        if r.kind == "exclude":
            hit = _exclusion_hit(r, chain)
            if hit is not None:
                excluding[i] = ("EXCLUDED_" + hit[0], hit[1])
        elif r.kind == "side":
            hit = _exclusion_hit(r, chain) if r.match else ("", f"any {symbol}")
            if side in r.forbid and hit is not None:
                excluding[i] = ("SIDE_FORBIDDEN", hit[1])
        elif r.kind == "issuer_cap":
            if side is Side.BUY and r.max_pct_nav is not None:
                caps[i] = r.max_pct_nav
        elif r.kind == "min_allocation":
            minimums[i] = (r.min_qty, r.min_notional)
        elif r.kind == "cel":
            cel_rules.add(i)
    return DecisionContext(
        rulebook_version=rulebook.version,
        symbol=symbol,
        side=side,
        price=Decimal(0),
        lot_size=sec.lot_size,
        excluding=excluding,
        caps=caps,
        minimums=minimums,
        cel_rules=frozenset(cel_rules),
        cel_security={
            "symbol": sec.symbol,
            "issuer": sec.issuer,
            "ultimate_issuer": chain[-1].issuer,
            "sector": sec.sector,
            "country": sec.country,
            "esg_tags": sorted(set().union(*(s.esg_tags for s in chain))),
            "lot_size": sec.lot_size,
            "related_to": sec.related_to or "",
        },
        cel_order={"side": side.value, "symbol": symbol},
        rules_key=(rulebook.version, symbol, side.value, chain),
    )


def issuer_symbols(symbol: str, securities: Mapping[str, Security]) -> dict[str, Decimal | None]:
    """Symbols whose ultimate issuer is the traded one, with the price to value them at."""
    issuer = ultimate_issuer(symbol, securities)
    return {
        s: sec.price
        for s, sec in securities.items()
        if ultimate_issuer(s, securities) == issuer
    }


def account_row(a: Account, symbol: str, price: Decimal, issuer_syms: Mapping[str, Decimal | None]
                ) -> Row:
    positions = a.positions
    pos = a.position(symbol)
    exposure = Decimal(0)
    for s, qty in positions.items():
        if s in issuer_syms:
            # The traded symbol is valued at the fill price; related holdings at their
            # reference price, or the fill price when none is known.
            px = price if s == symbol else (issuer_syms[s] or price)
            exposure += qty * px
    attrs = (a.tier, a.strategy, a.vehicle, a.custodian, a.prime_broker, a.scheme)
    return (a.account_id, a.book, a.status, a.nav, a.cash, pos, exposure, attrs)


# CEL programs are not picklable; each process compiles once per rulebook version.
_COMPILED: dict[str, tuple[Rulebook, dict[int, Any], dict[int, tuple[str, ...] | None]]] = {}
_MAX_VERSIONS = 8


def install(rulebook: Rulebook) -> None:
    """Make `rulebook` available in this process, compiling its CEL rules once."""
    if rulebook.version in _COMPILED:
        return
    programs: dict[int, Any] = {}
    keys: dict[int, tuple[str, ...] | None] = {}
    for i, r in enumerate(rulebook.restrictions):
        if r.kind == "cel" and r.expr:
            programs[i] = cel.compile(r.expr)
            fields = _ACCOUNT_FIELD_REF.findall(r.expr)
            # Memoise on the account fields the expression reads; if it reaches the
            # account any other way (e.g. indexing) fall back to the whole account.
            if len(fields) == len(_ACCOUNT_REF.findall(r.expr)):
                keys[i] = tuple(sorted(set(fields)))
            else:
                keys[i] = None
    while len(_COMPILED) >= _MAX_VERSIONS:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[rulebook.version] = (rulebook, programs, keys)


def installed(version: str) -> bool:
    return version in _COMPILED


def _cel_account(row: Row) -> dict[str, Any]:
    acct_id, book, status, nav, cash, pos, _exposure, attrs = row
    tier, strategy, vehicle, custodian, prime_broker, scheme = attrs
    # CEL has no decimal type; money and quantities are exposed as whole units (truncated)
    # so expressions compare integers and no binary float is involved.
    return {
        "account_id": acct_id, "book": book, "status": status,
        "tier": tier, "strategy": strategy, "vehicle": vehicle, "custodian": custodian,
        "prime_broker": prime_broker, "scheme": scheme,
        "nav": int(nav), "cash": int(cash), "position": int(pos),
    }


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the rules of one scope (book, or book + account rules) mean for this trade."""

    excl: tuple[int, ...]
    cap: tuple[Decimal, int] | None  # tightest issuer cap: (% of NAV, rule index)
    minimum: tuple[int, Decimal, int] | None
    cel: tuple[int, ...]
    cel_categorical: bool


_CATEGORICAL = frozenset({"tier", "strategy", "vehicle", "custodian", "prime_broker", "scheme",
                          "book", "status"})


def _plan(rules: Sequence[int], ctx: DecisionContext,
          memo_keys: Mapping[int, tuple[str, ...] | None]) -> _Plan:
    excl: list[int] = []
    cap: tuple[Decimal, int] | None = None
    minimum: tuple[int, Decimal, int] | None = None
    cel_list: list[int] = []
    for i in rules:
        if i in ctx.excluding:
            excl.append(i)
        elif i in ctx.caps:
            if cap is None or ctx.caps[i] < cap[0]:
                cap = (ctx.caps[i], i)
        elif i in ctx.minimums:
            mq, mn = ctx.minimums[i]
            q = int(mq) if mq is not None else 0
            n = mn if mn is not None else Decimal(0)
            if minimum is None or (q, n) > minimum[:2]:
                minimum = (q, n, i)
        elif i in ctx.cel_rules:
            cel_list.append(i)
    categorical = all(
        memo_keys.get(i) is not None and _CATEGORICAL.issuperset(memo_keys[i] or ())
        for i in cel_list)
    return _Plan(tuple(excl), cap, minimum, tuple(cel_list), categorical)


# Custom-rule results by (rulebook version, trade facts, rule, account fields it reads):
# CEL is side-effect free, so a result can be reused across accounts and decisions.
_CEL_RESULTS: dict[tuple[Any, ...], bool | str] = {}
_CEL_RESULTS_MAX = 500_000
DECIMAL_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation,
                                                                       DivisionByZero])


def evaluate_chunk(task: ChunkTask) -> list[Verdict]:
    """Evaluate every restriction for a chunk of accounts (top-level so pools can pickle it)."""
    with localcontext(DECIMAL_CONTEXT):
        return _evaluate_chunk(task)


def compiled(version: str) -> tuple[Rulebook, dict[int, Any], dict[int, tuple[str, ...] | None]]:
    """The installed rulebook `version` with its compiled custom rules and memo keys."""
    entry = _COMPILED.get(version)
    if entry is None:
        raise AllocationError(f"rulebook {version[:12]} is not installed in this process")
    return entry


def trade_key(ctx: DecisionContext) -> tuple[Any, ...]:
    """The trade facts a custom rule may read, as a hashable key for its cached results."""
    return (ctx.rulebook_version, *sorted(
        (k, tuple(v) if isinstance(v, list) else v) for k, v in ctx.cel_security.items()),
        *sorted(ctx.cel_order.items()))


def reset_cel_cache_if_full() -> None:
    if len(_CEL_RESULTS) > _CEL_RESULTS_MAX:
        _CEL_RESULTS.clear()


def _evaluate_chunk(task: ChunkTask) -> list[Verdict]:
    ctx = task.context
    rulebook, programs, memo_keys = compiled(ctx.rulebook_version)
    account_rules = rulebook.account_rules
    is_buy = ctx.side is Side.BUY
    is_sell = ctx.side is Side.SELL
    price = ctx.price
    plans: dict[tuple[str, str | None], _Plan] = {}
    cel_by_attrs: dict[tuple[Any, ...], list[int | str]] = {}
    tkey = trade_key(ctx)
    reset_cel_cache_if_full()
    out: list[Verdict] = []
    for row in task.rows:
        acct_id, book, status, nav, cash, pos, exposure, _attrs = row
        scope = (book, acct_id if acct_id in account_rules else None)
        plan = plans.get(scope)
        if plan is None:
            plan = plans[scope] = _plan(rulebook.rules_for(acct_id, book), ctx, memo_keys)
        excl: list[int | str] = list(plan.excl)
        if status != "active":
            excl.insert(0, SYS_STATUS)
        if plan.cel and plan.cel_categorical:
            # Every custom rule here reads only categorical account fields, so accounts
            # that agree on them share one result.
            ckey = (scope, status, _attrs)
            hits = cel_by_attrs.get(ckey)
            if hits is None:
                hits = cel_by_attrs[ckey] = _cel_hits(plan, row, tkey, programs, memo_keys,
                                                      ctx=ctx)
            excl.extend(hits)
        elif plan.cel:
            excl.extend(_cel_hits(plan, row, tkey, programs, memo_keys, ctx=ctx))
        caps: list[tuple[int | str, int]] = []
        if plan.cap is not None:
            caps.append((plan.cap[1], _shares(plan.cap[0] * nav / 100 - exposure, price)))
        if is_buy:
            caps.append((SYS_BUYING_POWER, _shares(cash, price)))
        elif is_sell:
            caps.append((SYS_HOLDINGS, max(int(pos), 0)))
        out.append((acct_id, tuple(excl), tuple(caps), plan.minimum))
    return out


def _cel_hits(plan: _Plan, row: Row, trade_key: tuple[Any, ...], programs: dict[int, Any],
              memo_keys: dict[int, tuple[str, ...] | None], *, ctx: DecisionContext
              ) -> list[int | str]:
    cel_acct = _cel_account(row)
    hits: list[int | str] = []
    for i in plan.cel:
        fields = memo_keys[i]
        key = ((trade_key, i, *(cel_acct.get(f) for f in fields)) if fields is not None
               else (trade_key, i, *cel_acct.values()))
        hit = _CEL_RESULTS.get(key)
        if hit is None:
            hit = _CEL_RESULTS[key] = _run_cel(programs[i], cel_acct, ctx)
        if hit is not False:
            hits.append(i if hit is True else f"CEL_ERROR:{i}:{hit}")
    return hits


plan_for = _plan
cel_hits = _cel_hits


def _shares(money: Decimal, price: Decimal) -> int:
    # int() truncates toward zero, which is the floor for the positive values used here.
    return int(money / price) if money > 0 else 0


def _run_cel(program: Any, account: dict[str, Any], ctx: DecisionContext) -> bool | str:
    try:
        result = program.execute(
            {"account": account, "security": dict(ctx.cel_security), "order": dict(ctx.cel_order)}
        )
    except (ValueError, RuntimeError, TypeError, KeyError) as e:
        # Fail closed: a rule that cannot be evaluated excludes rather than silently passes.
        return (str(e).splitlines() or [type(e).__name__])[0][:200]
    if not isinstance(result, bool):
        return f"expression returned {type(result).__name__}, not a boolean"
    return result
