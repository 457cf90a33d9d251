"""One account's trade list: value and weights, targets, drift bands, sells, buys.

The steps follow the rules in `engine.rebalance` (and docs/rebalance.md) one by one. An
account is worked on as columns over its row symbols (the model's, in order, plus any
holding outside it) so that what accounts share is made once per run and the per-symbol
arithmetic runs in `map` rather than in a Python loop; each value is still computed by
the same operations on the same operands, in the same order, as the rules state.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, localcontext
from itertools import compress, repeat
from operator import mul, not_, sub

from engine.eligibility import DECIMAL_CONTEXT, ENGINE_RULE_VERSION, SYS_STATUS
from engine.model import Account, Reason
from engine.rebalance.context import Run
from engine.rebalance.rows import (
    _HUNDRED,
    _PCT,
    _ZERO,
    _ZERO_PCT,
    AccountPlan,
    PlanColumns,
    Trade,
    build_plan,
    held_positions,
)
from engine.rebalance.targets import Targets, account_targets
from engine.rebalance.trades import Trading, buy, cap_reason, sell
from engine.rebalance.universe import Universe

_QUANTIZE = Decimal.quantize


def plan_account(run: Run, a: Account) -> AccountPlan:
    """The trade list of one account (rows sorted by symbol)."""
    with localcontext(DECIMAL_CONTEXT):
        held = held_positions(a)
        return build_plan(plan_columns(run, a, held), held)


def plan_columns(run: Run, a: Account, held: Mapping[str, Decimal]) -> PlanColumns:
    """`plan_account` before its rows are made (`held`: `held_positions(a)`); call it under
    DECIMAL_CONTEXT."""
    u = run.universe_for(held)
    value, weight = _value(run, a, held)
    current = dict(zip(weight, map(_QUANTIZE, weight.values(), repeat(_PCT)), strict=True))
    if a.status != "active":
        return _untraded(a, u, value, current, _status_reason(run, a))
    if value <= 0:
        return _untraded(a, u, value, current, run.sys(
            "NO_VALUE", "The account has no cash and no priced holding; there is nothing to "
                        "rebalance."))
    # A row without weight has weight zero from here on.
    w_col = list(map(weight.get, u.symbols, repeat(_ZERO)))
    scope = run.scope(a)
    tg = account_targets(run, a, scope, u, held, weight, w_col)
    drift, diff, gaps = _drift(tg, w_col, a.cash, value)
    drift_q = drift.quantize(_PCT)
    no_price = {i: _no_price(run, u.symbols[i]) for i in u.unpriced}
    if drift <= run.model.account_band_pct and not tg.must_sell:
        band = run.model.account_band_pct
        within = run.shared(("acct_band", band), lambda: run.model_reason(
            "ACCOUNT_WITHIN_BAND", f"The account's drift from model '{run.model.name}' is "
                                   f"within its band of {band}% of value; the account is not "
                                   "traded."))
        return _columns(a, u, value, a.cash, drift_q, current, tg, within, no_price, {})
    st = Trading(a, scope, u, held, value, w_col, current, tg, diff, no_price)
    sells, buys = _classify(run, st, diff, gaps)
    proceeds = sell(run, st, sells)
    # Buys are funded by cash and sell proceeds above the buffer.
    buffer = run.model.cash_buffer_pct * value / _HUNDRED
    spent = buy(run, st, buys, a.cash + proceeds - buffer)
    return _columns(a, u, value, a.cash + proceeds - spent, drift_q, current, tg,
                    _within_position_band(run), st.reasons, st.trades)


def _value(run: Run, a: Account, held: Mapping[str, Decimal]
           ) -> tuple[Decimal, dict[str, Decimal]]:
    """Value V = cash + every holding at its reference price, and each priced holding's
    weight in percent of V (none when V is not positive)."""
    notional = list(map(mul, held.values(), map(run.value_price.get, held, repeat(_ZERO))))
    value = a.cash + sum(notional, _ZERO)
    if value <= 0:
        return value, {}
    k = _HUNDRED / value
    if held.keys() <= run.weighted:
        return value, dict(zip(held, map(mul, notional, repeat(k)), strict=True))
    return value, {s: n * k for s, n in zip(held, notional, strict=True) if s in run.weighted}


def _drift(tg: Targets, w_col: list[Decimal], cash: Decimal, value: Decimal
           ) -> tuple[Decimal, list[Decimal], list[Decimal]]:
    """Half the sum of |weight - target| over securities and cash; also each security's
    target - weight and its absolute value."""
    total = tg.total if tg.total is not None else sum(tg.target, _ZERO)
    cash_tgt = _HUNDRED - total
    cash_w = cash * _HUNDRED / value
    diff = list(map(sub, tg.target, w_col))
    gaps = list(map(abs, diff))
    return (sum(gaps, _ZERO) + abs(cash_tgt - cash_w)) / 2, diff, gaps


def _classify(run: Run, st: Trading, diff: list[Decimal], gaps: list[Decimal]
              ) -> tuple[list[int], list[int]]:
    """Outside the account band: each security trades only if it is outside the position
    band (or must be sold); returns the sells and the buys in symbol order, and records
    why a row at its target or blocked from buying is not traded. Every other row is
    within the position band and keeps the shared reason."""
    tg, u = st.tg, st.u
    n = len(gaps)
    must = {u.index[s] for s in tg.must_sell}
    for i in compress(range(n), map(not_, gaps)):
        if i in must or i in st.reasons:  # no price
            continue
        s = u.symbols[i]
        st.reasons[i] = (tg.blocked.get(s) or cap_reason(run, tg.capped.get(s), st.value)
                         or run.shared("at", lambda: run.model_reason(
                             "AT_TARGET", "The holding is at its target weight; nothing to "
                                          "trade.")))
    band = run.model.position_band_pct
    outside = [i for i in compress(range(n), map(band.__lt__, gaps)) if i not in must]
    below = list(map(_ZERO.__gt__, map(diff.__getitem__, outside)))
    buys: list[int] = []
    for i in compress(outside, map(not_, below)):
        s = u.symbols[i]
        if s in tg.blocked:
            st.reasons[i] = tg.blocked[s]
        else:
            buys.append(i)
    return sorted(must.union(compress(outside, below))), buys


def _columns(a: Account, u: Universe, value: Decimal, cash_after: Decimal, drift_q: Decimal,
             current: dict[str, Decimal], tg: Targets, reason: Reason,
             reasons: dict[int, Reason], trades: dict[int, Trade]) -> PlanColumns:
    return PlanColumns(a.account_id, value, a.cash, cash_after, drift_q, bool(trades), u,
                       current, _ZERO_PCT, tg.target_pct, tg.target_patch, reason, reasons,
                       trades)


def _untraded(a: Account, u: Universe, value: Decimal, current: dict[str, Decimal],
              reason: Reason) -> PlanColumns:
    """Every row not traded for the same reason, at the model's weights."""
    return PlanColumns(a.account_id, value, a.cash, a.cash, _ZERO, False, u, current, _ZERO,
                       None, {}, reason, {}, {})


def _status_reason(run: Run, a: Account) -> Reason:
    label = {"do_not_trade": "flagged do-not-trade"}.get(a.status, a.status)
    return run.shared(("status", a.status), lambda: Reason(
        SYS_STATUS, ENGINE_RULE_VERSION, "ACCOUNT_" + a.status.upper(),
        f"The account is {label}; only active accounts are rebalanced."))


def _no_price(run: Run, s: str) -> Reason:
    return run.sys("NO_PRICE", f"{s} has no reference price; it is neither valued nor traded.")


def _within_position_band(run: Run) -> Reason:
    band = run.model.position_band_pct
    return run.shared(("pos_band", band), lambda: run.model_reason(
        "WITHIN_BAND", f"The holding is within the position band of {band}% of value from "
                       "its target; not traded."))
