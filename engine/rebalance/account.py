"""One account's trade list: restrictions, targets, drift bands, sells from lots, buys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

from engine import custom_rules, lots
from engine.eligibility import (
    DECIMAL_CONTEXT,
    ENGINE_RULE_VERSION,
    SYS_STATUS,
    DecisionContext,
    build_context,
    plan_for,
    ultimate_issuer,
)
from engine.errors import AllocationError
from engine.model import Account, LotRelief, Reason, Security, Side
from engine.reasons import ReasonBook
from engine.rebalance.rows import (
    _HUNDRED,
    _MONEY,
    _PCT,
    _ZERO,
    REBALANCE_ENGINE_VERSION,
    SYS_REBALANCE,
    AccountPlan,
    TradeRow,
)
from engine.rebalance_model import Model
from engine.rulebook import DEFAULT_SCHEME, Rulebook, Scheme

# -- restrictions -------------------------------------------------------------------------

class _Restrictions:
    """The rulebook's verdict for (account, security, side), as `engine.eligibility` decides
    it for allocation: exclusions (also look-through), side rules, custom rules, issuer caps.
    """

    def __init__(self, rulebook: Rulebook, securities: Mapping[str, Security]) -> None:
        custom_rules.install(rulebook)
        self.rulebook = rulebook
        _rb, self.programs, self.memo_keys = custom_rules.compiled(rulebook.version)
        self.securities = securities
        self._ctx: dict[tuple[str, Side], tuple[DecisionContext, ReasonBook, Any]] = {}
        self._plans: dict[tuple[Any, ...], Any] = {}
        self._cel: dict[tuple[Any, ...], tuple[int | str, ...]] = {}

    def ctx(self, symbol: str, side: Side) -> tuple[DecisionContext, ReasonBook, Any]:
        got = self._ctx.get((symbol, side))
        if got is None:
            price = self.securities[symbol].price or Decimal(1)
            ctx = build_context(self.rulebook, symbol, side, price, self.securities)
            tkey = custom_rules.trade_key(self.rulebook.version, ctx.cel_security,
                                          ctx.cel_order)
            got = self._ctx[(symbol, side)] = (ctx, ReasonBook(self.rulebook, ctx, symbol),
                                               tkey)
        return got

    def verdict(self, a: Account, scope: tuple[str, str | None], binding: dict[str, Any],
                symbol: str, side: Side) -> tuple[tuple[int | str, ...], Any]:
        """(exclusion keys, plan): the rules that forbid this side, and the scope's plan."""
        ctx, _rb, tkey = self.ctx(symbol, side)
        pkey = (scope, symbol, side)
        plan = self._plans.get(pkey)
        if plan is None:
            plan = self._plans[pkey] = plan_for(
                self.rulebook.rules_for(a.account_id, a.book), ctx, self.memo_keys)
        excl: tuple[int | str, ...] = plan.excl
        if plan.cel:
            ckey = (pkey, a.status, custom_rules.categorical(a)) if plan.cel_categorical else None
            hits = self._cel.get(ckey) if ckey is not None else None
            if hits is None:
                binding["position"] = int(a.position(symbol))
                hits = tuple(custom_rules.hits(plan.cel, binding, tkey, self.programs,
                                               self.memo_keys, ctx.cel_security, ctx.cel_order))
                if ckey is not None:
                    self._cel[ckey] = hits
            if hits:
                excl = (*excl, *hits)
        return excl, plan

    def plan(self, scope: tuple[str, str | None], symbol: str, side: Side) -> Any:
        return self._plans.get((scope, symbol, side))

    def reason(self, key: int | str, a: Account, symbol: str, side: Side) -> Reason:
        return self.ctx(symbol, side)[1].exclusion(key, a)

    def kind(self, key: int | str) -> str:
        if isinstance(key, int):
            return self.rulebook.restrictions[key].kind
        return "cel"  # a custom rule that could not be evaluated fails closed


# -- one account --------------------------------------------------------------------------

def _floor_to(q: Decimal, lot: int) -> Decimal:
    whole = q.to_integral_value(rounding=ROUND_DOWN)
    if lot > 1:
        whole -= whole % lot
    return whole if whole > 0 else _ZERO


def _n(q: Decimal) -> str:
    return f"{q:,}"


class _Run:
    """What every account of one run shares: model, prices, reason sentences."""

    def __init__(self, model: Model, rulebook: Rulebook, securities: Mapping[str, Security],
                 trade_date: dt.date) -> None:
        self.model = model
        self.rulebook = rulebook
        self.securities = securities
        self.trade_date = trade_date
        self.restr = _Restrictions(rulebook, securities)
        self.rule_id = f"MODEL-{model.name}"
        self.rule_version = model.version[:12]
        self.targets = dict(model.targets)
        self.issuer: dict[str, str] = {}
        for sym in securities:
            try:
                self.issuer[sym] = ultimate_issuer(sym, securities)
            except AllocationError:  # pragma: no cover - the loader checks related_to
                self.issuer[sym] = securities[sym].issuer
        self._shared: dict[Any, Reason] = {}
        self._verdicts: dict[Any, dict[str, Any]] = {}
        self._shareable: dict[Any, bool] = {}
        self.priced_targets = [s for s in sorted(model.targets)
                               if s in securities and securities[s].price is not None]
        self._scopes: dict[str, tuple[str, str | None]] = {}

    def scheme(self, a: Account) -> Scheme:
        if a.scheme in self.rulebook.schemes:
            return self.rulebook.schemes[a.scheme]
        book_scheme = self.rulebook.content.get("books", {}).get(a.book, {}).get("scheme")
        if book_scheme:
            return self.rulebook.schemes[book_scheme]
        return self.rulebook.schemes.get("default", DEFAULT_SCHEME)

    def verdict(self, a: Account, scope: tuple[str, str | None], binding: dict[str, Any],
                symbol: str) -> tuple[tuple[int | str, ...], tuple[Decimal, int] | None]:
        """Buy-side exclusion keys and the tightest issuer cap for one security."""
        excl, plan = self.restr.verdict(a, scope, binding, symbol, Side.BUY)
        cap: tuple[Decimal, int] | None = plan.cap
        return excl, cap

    def buy_verdicts(self, a: Account, scope: tuple[str, str | None], binding: dict[str, Any]
                     ) -> dict[str, tuple[tuple[int | str, ...], tuple[Decimal, int] | None]]:
        """`verdict` for every model security, shared by accounts that agree on every field
        the rules read (scope, status and the categorical fields) when custom rules read
        nothing else."""
        key = (scope, a.status, custom_rules.categorical(a))
        got = self._verdicts.get(key)
        if got is not None:
            return got
        out = {s: self.verdict(a, scope, binding, s) for s in self.priced_targets}
        if self._shareable.get(scope, True):
            shareable = True
            for s in self.priced_targets:
                plan = self.restr.plan(scope, s, Side.BUY)
                if plan is not None and plan.cel and not plan.cel_categorical:
                    shareable = False
                    break
            self._shareable[scope] = shareable
            if shareable:
                self._verdicts[key] = out
        return out

    def model_reason(self, code: str, text: str) -> Reason:
        return Reason(self.rule_id, self.rule_version, code, text)

    def shared(self, key: Any, make: Callable[[], Reason]) -> Reason:
        got = self._shared.get(key)
        if got is None:
            got = self._shared[key] = make()
        return got

    def sys(self, code: str, text: str) -> Reason:
        return self.shared(("sys", code, text),
                           lambda: Reason(SYS_REBALANCE, REBALANCE_ENGINE_VERSION, code, text))


def plan_account(run: _Run, a: Account) -> AccountPlan:
    """The trade list of one account (rows sorted by symbol)."""
    with localcontext(DECIMAL_CONTEXT):
        return _plan_account(run, a)


def _plan_account(run: _Run, a: Account) -> AccountPlan:
    model = run.model
    secs = run.securities
    targets = run.targets
    held = {s: q for s, q in a.positions.items() if q > 0}
    symbols = sorted(set(targets) | set(held))
    price: dict[str, Decimal | None] = {
        s: (secs[s].price if s in secs else None) for s in symbols}
    cash = a.cash
    value = cash + sum((q * (price[s] or _ZERO) for s, q in held.items()), _ZERO)
    aid = a.account_id

    weight: dict[str, Decimal] = {}
    if value > 0:
        k = _HUNDRED / value
        weight = {s: q * px * k for s, q in held.items() if (px := price[s])}

    def row(sym: str, reason: Reason, *, side: str = "", qty: Decimal = _ZERO,
            target: Decimal | None = None, relief: tuple[LotRelief, ...] = ()) -> TradeRow:
        w = weight.get(sym)
        cur = w.quantize(_PCT) if w is not None else _ZERO
        mp = targets.get(sym, _ZERO)
        tgt = mp if target is None or target == mp else target.quantize(_PCT)
        return TradeRow(aid, sym, side, qty, price[sym], held.get(sym, _ZERO), mp, tgt, cur,
                        reason, relief)

    def untraded(reason: Reason) -> AccountPlan:
        return AccountPlan(aid, value, cash, cash, _ZERO, False,
                           tuple(row(s, reason) for s in symbols))

    if a.status != "active":
        label = {"do_not_trade": "flagged do-not-trade"}.get(a.status, a.status)
        return untraded(Reason(SYS_STATUS, ENGINE_RULE_VERSION, "ACCOUNT_" + a.status.upper(),
                               f"The account is {label}; only active accounts are rebalanced."))
    if value <= 0:
        return untraded(run.sys("NO_VALUE", "The account has no cash and no priced holding; "
                                            "there is nothing to rebalance."))

    scope = (a.book, a.account_id if a.account_id in run.rulebook.account_rules else None)
    binding = custom_rules.account_binding(a, "")
    restr = run.restr
    for s in symbols:
        if s not in weight:
            weight[s] = _ZERO
    verdicts = run.buy_verdicts(a, scope, binding)

    # Step 2: targets after restrictions (buy side) and redistribution.
    tgt: dict[str, Decimal] = {}
    blocked: dict[str, Reason] = {}      # why the account may not buy it
    must_sell: dict[str, Reason] = {}    # excluded holdings
    caps: dict[str, Any] = {}
    freed = _ZERO
    for s in symbols:
        t = targets.get(s, _ZERO)
        if price[s] is None:
            tgt[s] = weight[s]
            continue
        vd = verdicts.get(s)
        excl, cap = vd if vd is not None else run.verdict(a, scope, binding, s)
        if excl:
            key = excl[0]
            reason = restr.reason(key, a, s, Side.BUY)
            blocked[s] = reason
            if restr.kind(key) == "side":
                # May not buy, may keep: at most its current weight.
                tgt[s] = min(t, weight[s]) if s in targets else _ZERO
                freed += t - tgt[s]
            else:
                tgt[s] = _ZERO
                freed += t
                if s in held:
                    must_sell[s] = reason
        else:
            tgt[s] = t
            if cap is not None and s in targets:
                caps[s] = cap
    if freed > 0 and model.redistribution == "pro_rata":
        base = sum((targets[s] for s in targets if s not in blocked and s in tgt
                    and price[s] is not None), _ZERO)
        if base > 0:
            for s in targets:
                if s not in blocked and price[s] is not None:
                    tgt[s] += freed * targets[s] / base
    capped: dict[str, tuple[Decimal, int]] = {}
    exposure: dict[str | None, Decimal] = {}
    if caps:
        for h, w in weight.items():
            if w:
                issuer = run.issuer.get(h)
                exposure[issuer] = exposure.get(issuer, _ZERO) + w
    for s, (pct, idx) in caps.items():
        # Other holdings of the same ultimate issuer (ADRs, share classes) use up the cap.
        limit = pct - (exposure.get(run.issuer.get(s), _ZERO) - weight[s])
        if tgt[s] > limit:
            # A cap clips the target; it never forces a sale on its own (a holding above
            # the cap that the model would not sell is kept), but a sale the model asks
            # for goes down to the cap. The clipped weight stays in cash.
            limit = max(limit, _ZERO)
            tgt[s] = weight[s] if limit < weight[s] < tgt[s] else limit
            capped[s] = (pct, idx)

    # Step 3: drift bands.
    cash_tgt = _HUNDRED - sum(tgt.values(), _ZERO)
    cash_w = cash * _HUNDRED / value
    drift = (sum((abs(tgt[s] - weight[s]) for s in symbols), _ZERO) + abs(cash_tgt - cash_w)) / 2
    drift_q = drift.quantize(_PCT)
    rows: dict[str, TradeRow] = {}
    for s in symbols:
        if price[s] is None:
            rows[s] = row(s, run.sys("NO_PRICE", f"{s} has no reference price; it is neither "
                                                 "valued nor traded."))
    if drift <= model.account_band_pct and not must_sell:
        band = model.account_band_pct
        reason = run.shared(("acct_band", band), lambda: run.model_reason(
            "ACCOUNT_WITHIN_BAND", f"The account's drift from model '{model.name}' is within "
                                   f"its band of {band}% of value; the account is not traded."))
        out = tuple(rows.get(s) or row(s, reason, target=tgt[s]) for s in symbols)
        return AccountPlan(aid, value, cash, cash, drift_q, False, out)

    pos_band = model.position_band_pct
    sells: list[str] = []
    buys: list[str] = []
    for s in symbols:
        if s in rows:
            continue
        diff = tgt[s] - weight[s]
        if s in must_sell:
            sells.append(s)
        elif diff == 0:
            rows[s] = row(s, blocked.get(s) or _cap_reason(run, capped.get(s), value)
                          or run.shared("at", lambda: run.model_reason(
                              "AT_TARGET", "The holding is at its target weight; nothing to "
                                           "trade.")), target=tgt[s])
        elif abs(diff) <= pos_band:
            rows[s] = row(s, run.shared(("pos_band", pos_band), lambda: run.model_reason(
                "WITHIN_BAND", f"The holding is within the position band of {pos_band}% of "
                               "value from its target; not traded.")), target=tgt[s])
        elif diff < 0:
            sells.append(s)
        elif s in blocked:
            rows[s] = row(s, blocked[s], target=tgt[s])
        else:
            buys.append(s)

    # Step 4: sells.
    scheme = run.scheme(a)
    proceeds = _ZERO
    mins, minn = model.min_trade_shares, model.min_trade_notional
    for s in sells:
        px = price[s]
        assert px is not None
        have = held.get(s, _ZERO)
        lot = secs[s].lot_size if model.round_lots else 1
        excl, _plan = restr.verdict(a, scope, binding, s, Side.SELL)
        # An exclusion forbids holding and buying; selling out of it is what it asks for.
        excl = tuple(k for k in excl if restr.kind(k) != "exclude")
        if excl:
            rows[s] = row(s, restr.reason(excl[0], a, s, Side.SELL), target=tgt[s])
            continue
        if tgt[s] == 0:
            qty = have.to_integral_value(rounding=ROUND_DOWN)
        else:
            qty = _floor_to((weight[s] - tgt[s]) * value / _HUNDRED / px, lot)
        qty = min(qty, have)  # never more than is held: no short sale
        compliance = s in must_sell
        if qty <= 0:
            rows[s] = row(s, run.model_reason(
                "ROUNDED_TO_ZERO", f"The sell to target is less than one round lot of {lot} "
                                   f"{s}; not traded."), target=tgt[s])
            continue
        if not compliance and tgt[s] != 0 and (qty < mins or qty * px < minn):
            rows[s] = row(s, _below_min(run, qty, px, mins, minn), target=tgt[s])
            continue
        relief, note = _relieve(a, s, qty, px, run.trade_date, scheme)
        code = ("SELL_EXCLUDED" if compliance else "SELL_NOT_IN_MODEL" if s not in targets
                else "SELL_TO_TARGET")
        if (scheme.avoid_wash_sales and not compliance and "wash" in note
                and any(r.realized_gain < 0 for r in relief)):
            # Only loss lots were left and shares were bought within the window: sell only
            # what the gain lots cover, so that no loss is realised as a wash sale.
            gain_qty = sum((r.quantity for r in relief if r.realized_gain >= 0), _ZERO)
            cut = _floor_to(gain_qty, lot) if gain_qty < have else gain_qty
            if cut <= 0 or (tgt[s] != 0 and (cut < mins or cut * px < minn)):
                rows[s] = row(s, run.model_reason(
                    "WASH_SALE", f"Selling {_n(qty)} {s} would realise a loss within "
                                 f"{scheme.wash_sale_days} days of a purchase ({note}); not "
                                 "traded to avoid a wash sale."), target=tgt[s])
                continue
            qty = cut
            relief, note = _relieve(a, s, qty, px, run.trade_date, scheme)
            code = "SELL_WASH_SALE_REDUCED"
        proceeds += qty * px
        if code == "SELL_EXCLUDED":
            why = must_sell[s]
            text = (f"Sell the whole holding of {_n(qty)} {s}: the account may not hold it "
                    f"({why.rule_id} v{why.rule_version}: {why.text}); {note}.")
        elif code == "SELL_NOT_IN_MODEL":
            text = (f"Sell {_n(qty)} {s}: it is not in model '{model.name}' and its weight "
                    f"{weight[s].quantize(_PCT)}% is outside the band of {pos_band}%; {note}.")
        else:
            text = (f"Sell {_n(qty)} {s} at {px} to move from {weight[s].quantize(_PCT)}% "
                    f"towards the target {tgt[s].quantize(_PCT)}% of value {_n(value)}"
                    f"{_round_note(lot)}; {note}.")
            if code == "SELL_WASH_SALE_REDUCED":
                text += " Reduced to the gain lots to avoid a wash sale."
        rows[s] = row(s, run.model_reason(code, text), side="sell", qty=qty, target=tgt[s],
                      relief=relief)

    # Step 5: buys, funded by cash and sell proceeds above the buffer.
    buffer = model.cash_buffer_pct * value / _HUNDRED
    available = cash + proceeds - buffer
    wanted: dict[str, Decimal] = {}
    for s in buys:
        px = price[s]
        assert px is not None
        lot = secs[s].lot_size if model.round_lots else 1
        q = _floor_to((tgt[s] - weight[s]) * value / _HUNDRED / px, lot)
        if q <= 0:
            rows[s] = row(s, run.model_reason(
                "ROUNDED_TO_ZERO", f"The buy to target is less than one round lot of {lot} "
                                   f"{s}; not traded."), target=tgt[s])
        elif q < mins or q * px < minn:
            rows[s] = row(s, _below_min(run, q, px, mins, minn), target=tgt[s])
        else:
            wanted[s] = q
    cost = sum((q * (price[s] or _ZERO) for s, q in wanted.items()), _ZERO)
    scale = _ZERO if available <= 0 else min(Decimal(1), available / cost) if cost else _ZERO
    spent = _ZERO
    for s, q in wanted.items():
        px = price[s]
        assert px is not None
        lot = secs[s].lot_size if model.round_lots else 1
        got = q if scale == 1 else _floor_to(q * scale, lot)
        if got <= 0:
            rows[s] = row(s, run.model_reason(
                "NO_CASH", f"Buying {_n(q)} {s} needs {_n(q * px)}; cash above the buffer "
                           f"of {model.cash_buffer_pct}% is "
                           f"{_n(max(available, _ZERO).quantize(_MONEY))}, too little for one "
                           "round lot after scaling every buy pro rata; not traded."),
                target=tgt[s])
            continue
        spent += got * px
        cap = capped.get(s)
        if got < q:
            code = "BUY_CASH_LIMITED"
            text = (f"Buy {_n(got)} {s} at {px}, not the {_n(q)} the target asks: cash above "
                    f"the buffer of {model.cash_buffer_pct}% covers {scale.quantize(_PCT) * 100}"
                    f"% of the buys, so every buy is scaled pro rata{_round_note(lot)}.")
        elif cap is not None:
            r = run.rulebook.restrictions[cap[1]]
            code = "BUY_ISSUER_CAP"
            text = (f"Buy {_n(got)} {s} at {px} up to the issuer cap: {r.id} v{r.version} "
                    f"({r.description}) allows {cap[0]}% of value {_n(value)} after other "
                    f"holdings of the same issuer, below the model target "
                    f"{targets.get(s, _ZERO)}%{_round_note(lot)}.")
        else:
            code = "BUY_TO_TARGET"
            text = (f"Buy {_n(got)} {s} at {px} to move from {weight[s].quantize(_PCT)}% "
                    f"towards the target {tgt[s].quantize(_PCT)}% of value {_n(value)}"
                    f"{_round_note(lot)}.")
        rows[s] = row(s, run.model_reason(code, text), side="buy", qty=got, target=tgt[s])
    cash_after = cash + proceeds - spent
    out = tuple(rows[s] for s in symbols)
    return AccountPlan(aid, value, cash, cash_after, drift_q,
                       any(r.qty > 0 for r in out), out)


def _cap_reason(run: _Run, cap: tuple[Decimal, int] | None, value: Decimal) -> Reason | None:
    if cap is None:
        return None
    r = run.rulebook.restrictions[cap[1]]
    return Reason(r.id, r.version, "ISSUER_CAP",
                  f"{r.description}: {cap[0]}% of value {_n(value)} leaves no room to buy "
                  "after the account's holdings of the same issuer; not traded.")


def _round_note(lot: int) -> str:
    return f", rounded down to a round lot of {lot}" if lot > 1 else ", in whole shares"


def _below_min(run: _Run, qty: Decimal, px: Decimal, mins: Decimal, minn: Decimal) -> Reason:
    return run.model_reason(
        "BELOW_MIN_TRADE", f"The trade of {_n(qty)} shares ({_n(qty * px)}) is below the "
                           f"model's minimum trade of {_n(mins)} shares and {_n(minn)} "
                           "notional; not traded.")


def _relieve(a: Account, symbol: str, qty: Decimal, px: Decimal, trade_date: dt.date,
             scheme: Scheme) -> tuple[tuple[LotRelief, ...], str]:
    held_lots = a.lots.get(symbol, ())
    if not held_lots:
        return (), "no tax lots recorded"
    return lots.relieve(held_lots, qty, px, trade_date, method=scheme.lot_relief,
                        avoid_wash_sales=scheme.avoid_wash_sales,
                        wash_days=scheme.wash_sale_days)


