"""Partition ops, first rounds: who may take part (eligibility, caps) and with what weight.

Run where the partition's accounts are installed (`engine.partition_state`), in-process or
in a pool worker. Everything that depends only on the rulebook and the trade was decided
once in `engine.eligibility.build_context`; per account this does the lookups and the
arithmetic that need its own numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal, localcontext
from typing import Any

from engine import custom_rules
from engine.eligibility import (
    DECIMAL_CONTEXT,
    SYS_BUYING_POWER,
    SYS_HOLDINGS,
    SYS_STATUS,
    DecisionContext,
    plan_for,
)
from engine.methods import MethodInput, raw_weight
from engine.model import Account, Side
from engine.partition_state import (
    PartState,
    close_session,
    current_space,
    installed_book,
    open_session,
    session,
)
from engine.rulebook import Rulebook
from engine.split import tie_ranks
from engine.status import CAP_EXCLUDED, EXCLUDED

_ZERO = Decimal(0)

# Per (book, rulebook): each account's scope (book, and its id if it has account rules) and
# custom-rule key (scope, status, categorical fields); plans per `rules_key` of a context.
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
        ckeys = [(scope, a.status, custom_rules.categorical(a))
                 for scope, a in zip(scopes, accounts, strict=True)]
        while len(_STATIC) >= _MAX_STATIC:
            _STATIC.popitem(last=False)
        got = _STATIC[key] = (scopes, ckeys)
    return got


def evaluate(args: tuple[str, str, DecisionContext, Mapping[str, Decimal | None]]) -> int:
    """Evaluate every restriction for this partition's accounts; return how many are eligible."""
    with localcontext(DECIMAL_CONTEXT):
        return _evaluate(*args)


def _evaluate(sid: str, version: str, ctx: DecisionContext,
              issuer_syms: Mapping[str, Decimal | None]) -> int:
    lo, accounts = installed_book(version)
    space = current_space()
    if space:
        # Per-book caches below are keyed by this; keep them apart from the default space.
        version = f"{version}@{space}"
    rulebook, programs, memo_keys = custom_rules.compiled(ctx.rulebook_version)
    st = PartState(version, lo, accounts, ctx)
    open_session(sid, st)
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
    tkey = custom_rules.trade_key(ctx.rulebook_version, ctx.cel_security, ctx.cel_order)
    custom_rules.reset_cache_if_full()
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
            ckey = attrs_list[i]
            hits = None
            if plan.cel_categorical:
                # Every custom rule here reads only categorical account fields, so accounts
                # that agree on them share one result.
                hits = cel_by_attrs.get(ckey)
            if hits is None:
                binding = custom_rules.account_binding(a, symbol)
                hits = custom_rules.hits(plan.cel, binding, tkey, programs, memo_keys,
                                         ctx.cel_security, ctx.cel_order)
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
    st = close_session(args[0])
    lo = st.lo
    return ({lo + i: k for i, k in st.excl.items()}, {lo + i: k for i, k in st.capzero.items()},
            [lo + i for i in st.el], list(st.el_cap))


# -- weights ------------------------------------------------------------------------------

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


def weigh(args: tuple[str, str, Mapping[str, Decimal], int, int, int | None]
          ) -> tuple[int, int | None]:
    """Weights of the eligible accounts under `method`; (participants, smallest exponent)."""
    with localcontext(DECIMAL_CONTEXT):
        return _weigh(*args)


def _weigh(sid: str, method: str, preallocations: Mapping[str, Decimal], el_base: int,
           n_elig: int, rotation: int | None) -> tuple[int, int | None]:
    st = session(sid)
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


def _set_weights(st: PartState, pe: list[int], pw_dec: list[Decimal], ints: list[int],
                 integral: bool, el_base: int, n_elig: int, rotation: int | None
                 ) -> tuple[int, int | None]:
    exp: int | None = None
    if pe:
        exp = 0 if integral else min(int(v.as_tuple().exponent) for v in pw_dec)
    st.integral = integral
    st.pe, st.pw_dec, st.pw = pe, pw_dec, ints
    st.begun = False
    st.dropped = {}
    # Ranked by position among all eligible accounts of the book (not only this partition).
    st.rank = tie_ranks((el_base + e for e in pe), n_elig, rotation)
    el_cap = st.el_cap
    st.cap = [el_cap[e] for e in pe]
    st.alive = bytearray(b"\x01" * len(pe))
    st.jbits = max(len(pe), 1).bit_length()
    st.heap = []
    st.popped = []
    return len(pe), exp
