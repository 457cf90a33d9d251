"""An account's trades (rules 4 and 5): sells first, from tax lots, then buys funded by cash
and sell proceeds above the buffer, each row explained."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from engine import lots
from engine.model import Account, LotRelief, Reason, Side
from engine.rebalance.restrictions import Scope
from engine.rebalance.rows import _HUNDRED, _MONEY, _PCT, _ZERO, _ZERO_PCT, Trade
from engine.rebalance.targets import Targets
from engine.rulebook import Scheme

_ZERO_PCT_TEXT = str(_ZERO_PCT)

if TYPE_CHECKING:
    from engine.rebalance.context import Run
    from engine.rebalance.universe import Universe


@dataclass(slots=True)
class Trading:
    """One account while its trades are decided: its numbers, and the rows decided so far
    (by row index) that differ from the shared ones."""

    a: Account
    scope: Scope
    u: Universe
    held: Mapping[str, Decimal]
    value: Decimal
    w_col: list[Decimal]
    current: dict[str, Decimal]         # weighted holding -> current_pct
    tg: Targets
    diff: list[Decimal]                 # target - weight
    reasons: dict[int, Reason] = field(default_factory=dict)
    trades: dict[int, Trade] = field(default_factory=dict)
    # Text shared by the account's rows: its value, and targets shared by several rows.
    value_text: str = ""
    target_text: dict[int, str] = field(default_factory=dict)

    def current_str(self, s: str) -> str:
        got = self.current.get(s)
        return str(got) if got is not None else _ZERO_PCT_TEXT

    def value_str(self) -> str:
        if not self.value_text:
            self.value_text = _n(self.value)
        return self.value_text

    def target_str(self, i: int) -> str:
        """The row's target, quantized, as text (keyed by object: rows share targets)."""
        t = self.tg.target[i]
        got = self.target_text.get(id(t))
        if got is None:
            got = self.target_text[id(t)] = str(t.quantize(_PCT))
        return got


def sell(run: Run, st: Trading, sells: list[int]) -> Decimal:
    """Sell to target (the whole holding of an excluded security), rounded down to whole
    lots unless the whole holding goes, never short; returns the proceeds."""
    model = run.model
    a, tg = st.a, st.tg
    tgt = tg.target
    scheme = run.scheme(a)
    proceeds = _ZERO
    mins, minn = model.min_trade_shares, model.min_trade_notional
    for i in sells:
        s = st.u.symbols[i]
        px = st.u.price[i]
        assert px is not None
        have = st.held.get(s, _ZERO)
        lot = run.lot[s]
        t = tgt[i]
        # An exclusion forbids holding and buying; selling out of it is what it asks for.
        excl = tuple(k for k in run.sell_exclusions(a, st.scope, s)
                     if run.restr.kind(k) != "exclude")
        if excl:
            st.reasons[i] = run.restr.reason(excl[0], a, s, Side.SELL)
            continue
        if t == 0:
            qty = have.to_integral_value(rounding=ROUND_DOWN)
        else:
            qty = floor_to((st.w_col[i] - t) * st.value / _HUNDRED / px, lot)
        qty = min(qty, have)  # never more than is held: no short sale
        compliance = s in tg.must_sell
        if qty <= 0:
            st.reasons[i] = _rounded_to_zero(run, "sell", s)
            continue
        if not compliance and t != 0 and (qty < mins or qty * px < minn):
            st.reasons[i] = below_min(run, qty, px, mins, minn)
            continue
        relief, note = _relieve(a, s, qty, px, run.trade_date, scheme)
        code = ("SELL_EXCLUDED" if compliance else "SELL_NOT_IN_MODEL" if s not in run.targets
                else "SELL_TO_TARGET")
        if (scheme.avoid_wash_sales and not compliance and "wash" in note
                and any(r.realized_gain < 0 for r in relief)):
            # Only loss lots were left and shares were bought within the window: sell only
            # what the gain lots cover, so that no loss is realised as a wash sale.
            gain_qty = sum((r.quantity for r in relief if r.realized_gain >= 0), _ZERO)
            cut = floor_to(gain_qty, lot) if gain_qty < have else gain_qty
            if cut <= 0 or (t != 0 and (cut < mins or cut * px < minn)):
                st.reasons[i] = run.model_reason(
                    "WASH_SALE", f"Selling {_n(qty)} {s} would realise a loss within "
                                 f"{scheme.wash_sale_days} days of a purchase ({note}); not "
                                 "traded to avoid a wash sale.")
                continue
            qty = cut
            relief, note = _relieve(a, s, qty, px, run.trade_date, scheme)
            code = "SELL_WASH_SALE_REDUCED"
        proceeds += qty * px
        st.reasons[i] = run.model_reason(code, _sell_text(run, st, i, code, qty, note))
        st.trades[i] = ("sell", qty, relief)
    return proceeds


def _sell_text(run: Run, st: Trading, i: int, code: str, qty: Decimal, note: str) -> str:
    s = st.u.symbols[i]
    if code == "SELL_EXCLUDED":
        why = st.tg.must_sell[s]
        return (f"Sell the whole holding of {_n(qty)} {s}: the account may not hold it "
                f"({why.rule_id} v{why.rule_version}: {why.text}); {note}.")
    if code == "SELL_NOT_IN_MODEL":
        return (f"Sell {_n(qty)} {s}: it is not in model '{run.model.name}' and its weight "
                f"{st.current_str(s)}% is outside the band of "
                f"{run.model.position_band_pct}%; {note}.")
    text = (f"Sell {_n(qty)}{run.at_price[s]} to move from {st.current_str(s)}% towards the "
            f"target {st.target_str(i)}% of value {st.value_str()}{run.lot_note[s]}; {note}.")
    if code == "SELL_WASH_SALE_REDUCED":
        text += " Reduced to the gain lots to avoid a wash sale."
    return text


def buy(run: Run, st: Trading, buys: list[int], available: Decimal) -> Decimal:
    """Buy to target in whole lots, above the minimum trade, scaled pro rata (then rounded
    down again) to the cash above the buffer; returns what the buys cost."""
    model = run.model
    mins, minn = model.min_trade_shares, model.min_trade_notional
    symbols, price, value = st.u.symbols, st.u.price, st.value
    wanted: dict[int, tuple[Decimal, Decimal]] = {}  # quantity and its cost
    for i in buys:
        s = symbols[i]
        px = price[i]
        assert px is not None
        lot = run.lot[s]
        # q = floor_to(diff * value / 100 / px, lot), which is zero exactly when the
        # quotient is below one lot; most quotients far below are told by the product.
        dv = st.diff[i] * value
        if dv < run.no_lot_below[s] or (x := dv / _HUNDRED / px) < lot:
            st.reasons[i] = _rounded_to_zero(run, "buy", s)
            continue
        q = floor_to(x, lot)
        if q < mins or (notional := q * px) < minn:
            st.reasons[i] = below_min(run, q, px, mins, minn)
        else:
            wanted[i] = (q, notional)
    # A wanted buy has a price that is not zero (the quantity divided by it).
    cost = sum((n for _q, n in wanted.values()), _ZERO)
    scale = _ZERO if available <= 0 else min(Decimal(1), available / cost) if cost else _ZERO
    whole = scale == 1
    spent = _ZERO
    for i, (q, notional) in wanted.items():
        s = symbols[i]
        px = price[i]
        assert px is not None
        got = q if whole else floor_to(q * scale, run.lot[s])
        if got <= 0:
            st.reasons[i] = run.model_reason(
                "NO_CASH", f"Buying {_n(q)} {s} needs {_n(notional)}; cash above the buffer "
                           f"of {model.cash_buffer_pct}% is "
                           f"{_n(max(available, _ZERO).quantize(_MONEY))}, too little for one "
                           "round lot after scaling every buy pro rata; not traded.")
            continue
        spent += notional if whole else got * px
        st.reasons[i] = run.model_reason(*_buy_text(run, st, i, q, got, scale))
        st.trades[i] = ("buy", got, ())
    return spent


def _buy_text(run: Run, st: Trading, i: int, q: Decimal, got: Decimal, scale: Decimal
              ) -> tuple[str, str]:
    model = run.model
    s = st.u.symbols[i]
    cap = st.tg.capped.get(s)
    if got < q:
        return "BUY_CASH_LIMITED", (
            f"Buy {_n(got)}{run.at_price[s]}, not the {_n(q)} the target asks: cash above the "
            f"buffer of {model.cash_buffer_pct}% covers {scale.quantize(_PCT) * 100}% of the "
            f"buys, so every buy is scaled pro rata{run.lot_note[s]}.")
    if cap is not None:
        r = run.rulebook.restrictions[cap[1]]
        return "BUY_ISSUER_CAP", (
            f"Buy {_n(got)}{run.at_price[s]} up to the issuer cap: {r.id} v{r.version} "
            f"({r.description}) allows {cap[0]}% of value {st.value_str()} after other "
            f"holdings of the same issuer, below the model target "
            f"{run.targets.get(s, _ZERO)}%{run.lot_note[s]}.")
    return "BUY_TO_TARGET", (
        f"Buy {_n(got)}{run.at_price[s]} to move from {st.current_str(s)}% towards the "
        f"target {st.target_str(i)}% of value {st.value_str()}{run.lot_note[s]}.")


def _rounded_to_zero(run: Run, side: str, s: str) -> Reason:
    return run.shared(("rounded_to_zero", side, s), lambda: run.model_reason(
        "ROUNDED_TO_ZERO", f"The {side} to target is less than one round lot of {run.lot[s]} "
                           f"{s}; not traded."))


def cap_reason(run: Run, cap: tuple[Decimal, int] | None, value: Decimal) -> Reason | None:
    if cap is None:
        return None
    r = run.rulebook.restrictions[cap[1]]
    return Reason(r.id, r.version, "ISSUER_CAP",
                  f"{r.description}: {cap[0]}% of value {_n(value)} leaves no room to buy "
                  "after the account's holdings of the same issuer; not traded.")


def below_min(run: Run, qty: Decimal, px: Decimal, mins: Decimal, minn: Decimal) -> Reason:
    return run.model_reason(
        "BELOW_MIN_TRADE", f"The trade of {_n(qty)} shares ({_n(qty * px)}) is below the "
                           f"model's minimum trade of {_n(mins)} shares and {_n(minn)} "
                           "notional; not traded.")


def floor_to(q: Decimal, lot: int) -> Decimal:
    whole = q.to_integral_value(ROUND_DOWN)
    if lot > 1:
        whole -= whole % lot
    return whole if whole > 0 else _ZERO


def round_note(lot: int) -> str:
    return f", rounded down to a round lot of {lot}" if lot > 1 else ", in whole shares"


def _n(q: Decimal) -> str:
    return f"{q:,}"


def _relieve(a: Account, symbol: str, qty: Decimal, px: Decimal, trade_date: dt.date,
             scheme: Scheme) -> tuple[tuple[LotRelief, ...], str]:
    held_lots = a.lots.get(symbol, ())
    if not held_lots:
        return (), "no tax lots recorded"
    return lots.relieve(held_lots, qty, px, trade_date, method=scheme.lot_relief,
                        avoid_wash_sales=scheme.avoid_wash_sales,
                        wash_days=scheme.wash_sale_days)
