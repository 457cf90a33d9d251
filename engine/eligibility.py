"""Eligibility: what the rulebook means for one trade, decided once per decision.

Everything that depends only on the security and side (does an exclusion match? is a side
forbidden? which issuer cap applies?) is decided here once per decision in
`build_context`, and per scope of rules in `plan_for`; per account the partitions
(`engine.partition_eligibility`) only look up the plan that applies and do the arithmetic
that needs the account's own numbers (NAV, cash, holdings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation
from typing import Any

from engine import custom_rules
from engine.errors import AllocationError
from engine.model import Security, Side
from engine.rulebook import Restriction, Rulebook

ENGINE_RULE_VERSION = "engine-1"

# Built-in restrictions always apply; they are versioned with the engine itself.
SYS_STATUS = "SYS-STATUS"
SYS_BUYING_POWER = "SYS-BUYING-POWER"
SYS_HOLDINGS = "SYS-HOLDINGS"

# The decision's arithmetic, whatever context the caller has set.
DECIMAL_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation,
                                                                       DivisionByZero])

# Custom rules are compiled once per rulebook version per process (`Executor.prepare`;
# gateway.pool ships this function to its workers).
install = custom_rules.install


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
_MAX_CONTEXTS = 4096  # a 500-security model needs 1,000 (symbol, side) contexts per run


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
        cel_security=custom_rules.security_binding(chain),
        cel_order=custom_rules.order_binding(side, symbol),
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the rules of one scope (book, or book + account rules) mean for this trade."""

    excl: tuple[int, ...]
    cap: tuple[Decimal, int] | None  # tightest issuer cap: (% of NAV, rule index)
    minimum: tuple[int, Decimal, int] | None
    cel: tuple[int, ...]
    cel_categorical: bool


def plan_for(rules: Sequence[int], ctx: DecisionContext,
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
        memo_keys.get(i) is not None and custom_rules.CATEGORICAL.issuperset(memo_keys[i] or ())
        for i in cel_list)
    return _Plan(tuple(excl), cap, minimum, tuple(cel_list), categorical)
