"""The engine against a reference: the rules of docs/rebalance.md written the plain way, one
security at a time with nothing shared between accounts (the engine as it was before it
was made to work in columns). The trade lists must be the same to the last digit, which
`repr` checks (Decimal's `==` does not tell 0.5 from 0.50). The inputs aim at what sharing
could get wrong: holdings outside the model or without a price, positions that are not
long, issuers with several instruments, rules of a book or an account, custom rules that
read the account's own numbers, and weights written with different exponents."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle
from collections.abc import Callable, Sequence
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import custom_rules, lots
from engine.eligibility import (
    DECIMAL_CONTEXT,
    ENGINE_RULE_VERSION,
    SYS_STATUS,
    build_context,
    plan_for,
    ultimate_issuer,
)
from engine.executor import InProcessPartitions
from engine.model import Account, LotRelief, Reason, Security, Side, TaxLot
from engine.reasons import ReasonBook
from engine.rebalance import (
    REBALANCE_ENGINE_VERSION,
    SYS_REBALANCE,
    AccountPlan,
    RebalanceRequest,
    TradeRow,
    plan_account,
    rebalance,
)
from engine.rebalance.context import Run
from engine.rebalance_model import Model
from engine.rulebook import DEFAULT_SCHEME, Rulebook

D = Decimal
T = TypeVar("T")
R = TypeVar("R")
DAY = dt.date(2024, 6, 3)
_ZERO, _HUNDRED, _PCT, _MONEY = D(0), D(100), D("0.0001"), D("0.01")

SECS = {
    "AAA": Security("AAA", "A", "Tech", "US", frozenset(), 100, None, D("101.25")),
    "BBB": Security("BBB", "B", "Energy", "US", frozenset({"fossil_fuels"}), 10, None, D("47")),
    "CCC": Security("CCC", "C", "Health", "US", frozenset(), 1, None, D("9.990")),
    "CCC.A": Security("CCC.A", "C A", "Health", "US", frozenset(), 1, "CCC", D("20")),
    "CCC.B": Security("CCC.B", "C B", "Health", "GB", frozenset(), 1, "CCC", D("2E+1")),
    "DDD": Security("DDD", "D", "Tech", "GB", frozenset({"tobacco"}), 100, None, D("333.3")),
    "EEE": Security("EEE", "E", "Utilities", "US", frozenset(), 1, None, D("5.5")),
    "NOPX": Security("NOPX", "N", "Tech", "US", frozenset(), 1, None, None),
}
HELD = [*SECS, "GONE"]  # GONE is not in the security master
MODEL_SYMBOLS = ["AAA", "BBB", "CCC", "CCC.A", "DDD", "EEE"]
WEIGHTS = ["0", "2.25", "5", "5.0", "7.50", "10", "12.5", "1E+1"]
RULES: list[dict[str, Any]] = [
    {"id": "NO-TOBACCO", "version": "1", "kind": "exclude", "description": "no tobacco",
     "match": {"esg_tags": ["tobacco"]}, "scope": {"accounts": ["P01", "P03"]}},
    {"id": "NO-FOSSIL", "version": "2", "kind": "exclude", "description": "no fossil",
     "match": {"esg_tags": ["fossil_fuels"]}, "scope": {"books": ["B2"]}},
    {"id": "CAP", "version": "1", "kind": "issuer_cap", "max_pct_nav": 15,
     "description": "issuer cap"},
    {"id": "CAP-P02", "version": "1", "kind": "issuer_cap", "max_pct_nav": "9.5",
     "description": "tighter cap", "scope": {"accounts": ["P02"]}},
    {"id": "NO-BUY-EEE", "version": "1", "kind": "side", "forbid": ["buy"],
     "match": {"symbols": ["EEE"]}, "description": "wind down EEE"},
    {"id": "NO-SELL-AAA", "version": "1", "kind": "side", "forbid": ["sell"],
     "match": {"symbols": ["AAA"]}, "description": "hold AAA", "scope": {"accounts": ["P04"]}},
    {"id": "T3-GB", "version": "1", "kind": "cel", "description": "tier 3 no GB",
     "exclude_when": "account.tier == 3 && security.country == 'GB'"},
    {"id": "BIG-TECH", "version": "1", "kind": "cel", "description": "big tech holders",
     "exclude_when": "account.position > 3000 && security.sector == 'Tech'",
     "scope": {"books": ["B2"]}},
]


# -- the reference --------------------------------------------------------------------------

def _verdict(rb: Rulebook, a: Account, symbol: str, side: Side) -> tuple[tuple[Any, ...], Any]:
    ctx = build_context(rb, symbol, side, SECS[symbol].price or D(1), SECS)
    _rb, programs, memo_keys = custom_rules.compiled(rb.version)
    plan = plan_for(rb.rules_for(a.account_id, a.book), ctx, memo_keys)
    excl: tuple[Any, ...] = plan.excl
    if plan.cel:
        binding = custom_rules.account_binding(a, "")
        binding["position"] = int(a.position(symbol))
        tkey = custom_rules.trade_key(rb.version, ctx.cel_security, ctx.cel_order)
        excl = (*excl, *custom_rules.hits(plan.cel, binding, tkey, programs, memo_keys,
                                          ctx.cel_security, ctx.cel_order))
    return excl, plan


def _reason(rb: Rulebook, key: Any, a: Account, symbol: str, side: Side) -> Reason:
    ctx = build_context(rb, symbol, side, SECS[symbol].price or D(1), SECS)
    return ReasonBook(rb, ctx, symbol).exclusion(key, a)


def _kind(rb: Rulebook, key: Any) -> str:
    return rb.restrictions[key].kind if isinstance(key, int) else "cel"


def _floor_to(q: Decimal, lot: int) -> Decimal:
    whole = q.to_integral_value(rounding=ROUND_DOWN)
    if lot > 1:
        whole -= whole % lot
    return whole if whole > 0 else _ZERO


def _n(q: Decimal) -> str:
    return f"{q:,}"


def _round_note(lot: int) -> str:
    return f", rounded down to a round lot of {lot}" if lot > 1 else ", in whole shares"


def reference(model: Model, rb: Rulebook, a: Account) -> AccountPlan:
    custom_rules.install(rb)
    with localcontext(DECIMAL_CONTEXT):
        return _reference(model, rb, a)


def _reference(model: Model, rb: Rulebook, a: Account) -> AccountPlan:
    rid, rver = f"MODEL-{model.name}", model.version[:12]

    def mreason(code: str, text: str) -> Reason:
        return Reason(rid, rver, code, text)

    def sreason(code: str, text: str) -> Reason:
        return Reason(SYS_REBALANCE, REBALANCE_ENGINE_VERSION, code, text)

    targets = dict(model.targets)
    held = {s: q for s, q in a.positions.items() if q > 0}
    symbols = sorted(set(targets) | set(held))
    price = {s: (SECS[s].price if s in SECS else None) for s in symbols}
    cash, aid = a.cash, a.account_id
    value = cash + sum((q * (price[s] or _ZERO) for s, q in held.items()), _ZERO)
    weight: dict[str, Decimal] = {}
    if value > 0:
        k = _HUNDRED / value
        weight = {s: q * px * k for s, q in held.items() if (px := price[s])}

    def row(sym: str, reason: Reason, *, side: str = "", qty: Decimal = _ZERO,
            target: Decimal | None = None, relief: tuple[LotRelief, ...] = ()) -> TradeRow:
        w = weight.get(sym)
        cur = w.quantize(_PCT) if w is not None else _ZERO
        mp = targets.get(sym, _ZERO)
        tg = mp if target is None or target == mp else target.quantize(_PCT)
        return TradeRow(aid, sym, side, qty, price[sym], held.get(sym, _ZERO), mp, tg, cur,
                        reason, relief)

    def untraded(reason: Reason) -> AccountPlan:
        return AccountPlan(aid, value, cash, cash, _ZERO, False,
                           tuple(row(s, reason) for s in symbols))

    if a.status != "active":
        label = {"do_not_trade": "flagged do-not-trade"}.get(a.status, a.status)
        return untraded(Reason(SYS_STATUS, ENGINE_RULE_VERSION, "ACCOUNT_" + a.status.upper(),
                               f"The account is {label}; only active accounts are rebalanced."))
    if value <= 0:
        return untraded(sreason("NO_VALUE", "The account has no cash and no priced holding; "
                                            "there is nothing to rebalance."))
    for s in symbols:
        weight.setdefault(s, _ZERO)
    issuer = {s: ultimate_issuer(s, SECS) for s in SECS}
    tgt: dict[str, Decimal] = {}
    blocked: dict[str, Reason] = {}
    must_sell: dict[str, Reason] = {}
    caps: dict[str, Any] = {}
    freed = _ZERO
    for s in symbols:
        t = targets.get(s, _ZERO)
        if price[s] is None:
            tgt[s] = weight[s]
            continue
        excl, plan = _verdict(rb, a, s, Side.BUY)
        if excl:
            reason = blocked[s] = _reason(rb, excl[0], a, s, Side.BUY)
            if _kind(rb, excl[0]) == "side":
                tgt[s] = min(t, weight[s]) if s in targets else _ZERO
                freed += t - tgt[s]
            else:
                tgt[s] = _ZERO
                freed += t
                if s in held:
                    must_sell[s] = reason
        else:
            tgt[s] = t
            if plan.cap is not None and s in targets:
                caps[s] = plan.cap
    if freed > 0 and model.redistribution == "pro_rata":
        base = sum((targets[s] for s in targets if s not in blocked and s in tgt
                    and price[s] is not None), _ZERO)
        if base > 0:
            for s, t in targets.items():
                if s not in blocked and price[s] is not None:
                    tgt[s] += freed * t / base
    capped: dict[str, tuple[Decimal, int]] = {}
    exposure: dict[str | None, Decimal] = {}
    if caps:
        for h, w in weight.items():
            if w:
                exposure[issuer.get(h)] = exposure.get(issuer.get(h), _ZERO) + w
    for s, (pct, idx) in caps.items():
        limit = pct - (exposure.get(issuer.get(s), _ZERO) - weight[s])
        if tgt[s] > limit:
            limit = max(limit, _ZERO)
            tgt[s] = weight[s] if limit < weight[s] < tgt[s] else limit
            capped[s] = (pct, idx)

    cash_tgt = _HUNDRED - sum(tgt.values(), _ZERO)
    cash_w = cash * _HUNDRED / value
    drift = (sum((abs(tgt[s] - weight[s]) for s in symbols), _ZERO) + abs(cash_tgt - cash_w)) / 2
    drift_q = drift.quantize(_PCT)
    rows: dict[str, TradeRow] = {}
    for s in symbols:
        if price[s] is None:
            rows[s] = row(s, sreason("NO_PRICE", f"{s} has no reference price; it is neither "
                                                 "valued nor traded."))
    if drift <= model.account_band_pct and not must_sell:
        reason = mreason("ACCOUNT_WITHIN_BAND", f"The account's drift from model "
                                                f"'{model.name}' is within its band of "
                                                f"{model.account_band_pct}% of value; the "
                                                "account is not traded.")
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
            cap = capped.get(s)
            r = rb.restrictions[cap[1]] if cap else None
            rows[s] = row(s, blocked.get(s) or (Reason(
                r.id, r.version, "ISSUER_CAP", f"{r.description}: {cap[0]}% of value "
                f"{_n(value)} leaves no room to buy after the account's holdings of the same "
                "issuer; not traded.") if r and cap else None) or mreason(
                "AT_TARGET", "The holding is at its target weight; nothing to trade."),
                target=tgt[s])
        elif abs(diff) <= pos_band:
            rows[s] = row(s, mreason("WITHIN_BAND", f"The holding is within the position band "
                                                    f"of {pos_band}% of value from its target; "
                                                    "not traded."), target=tgt[s])
        elif diff < 0:
            sells.append(s)
        elif s in blocked:
            rows[s] = row(s, blocked[s], target=tgt[s])
        else:
            buys.append(s)

    scheme = rb.schemes.get(a.scheme) or rb.schemes.get("default", DEFAULT_SCHEME)
    mins, minn = model.min_trade_shares, model.min_trade_notional

    def below_min(qty: Decimal, px: Decimal) -> Reason:
        return mreason("BELOW_MIN_TRADE", f"The trade of {_n(qty)} shares ({_n(qty * px)}) is "
                                          f"below the model's minimum trade of {_n(mins)} "
                                          f"shares and {_n(minn)} notional; not traded.")

    def relieve(s: str, qty: Decimal, px: Decimal) -> tuple[tuple[LotRelief, ...], str]:
        held_lots = a.lots.get(s, ())
        if not held_lots:
            return (), "no tax lots recorded"
        return lots.relieve(held_lots, qty, px, DAY, method=scheme.lot_relief,
                            avoid_wash_sales=scheme.avoid_wash_sales,
                            wash_days=scheme.wash_sale_days)

    proceeds = _ZERO
    for s in sells:
        px = price[s]
        assert px is not None
        have = held.get(s, _ZERO)
        lot = SECS[s].lot_size if model.round_lots else 1
        excl = tuple(k for k in _verdict(rb, a, s, Side.SELL)[0] if _kind(rb, k) != "exclude")
        if excl:
            rows[s] = row(s, _reason(rb, excl[0], a, s, Side.SELL), target=tgt[s])
            continue
        if tgt[s] == 0:
            qty = have.to_integral_value(rounding=ROUND_DOWN)
        else:
            qty = _floor_to((weight[s] - tgt[s]) * value / _HUNDRED / px, lot)
        qty = min(qty, have)
        compliance = s in must_sell
        if qty <= 0:
            rows[s] = row(s, mreason("ROUNDED_TO_ZERO", f"The sell to target is less than one "
                                                        f"round lot of {lot} {s}; not traded."),
                          target=tgt[s])
            continue
        if not compliance and tgt[s] != 0 and (qty < mins or qty * px < minn):
            rows[s] = row(s, below_min(qty, px), target=tgt[s])
            continue
        relief, note = relieve(s, qty, px)
        code = ("SELL_EXCLUDED" if compliance else "SELL_NOT_IN_MODEL" if s not in targets
                else "SELL_TO_TARGET")
        if (scheme.avoid_wash_sales and not compliance and "wash" in note
                and any(r.realized_gain < 0 for r in relief)):
            gain_qty = sum((r.quantity for r in relief if r.realized_gain >= 0), _ZERO)
            cut = _floor_to(gain_qty, lot) if gain_qty < have else gain_qty
            if cut <= 0 or (tgt[s] != 0 and (cut < mins or cut * px < minn)):
                rows[s] = row(s, mreason(
                    "WASH_SALE", f"Selling {_n(qty)} {s} would realise a loss within "
                                 f"{scheme.wash_sale_days} days of a purchase ({note}); not "
                                 "traded to avoid a wash sale."), target=tgt[s])
                continue
            qty = cut
            relief, note = relieve(s, qty, px)
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
        rows[s] = row(s, mreason(code, text), side="sell", qty=qty, target=tgt[s],
                      relief=relief)

    available = cash + proceeds - model.cash_buffer_pct * value / _HUNDRED
    wanted: dict[str, Decimal] = {}
    for s in buys:
        px = price[s]
        assert px is not None
        lot = SECS[s].lot_size if model.round_lots else 1
        q = _floor_to((tgt[s] - weight[s]) * value / _HUNDRED / px, lot)
        if q <= 0:
            rows[s] = row(s, mreason("ROUNDED_TO_ZERO", f"The buy to target is less than one "
                                                        f"round lot of {lot} {s}; not traded."),
                          target=tgt[s])
        elif q < mins or q * px < minn:
            rows[s] = row(s, below_min(q, px), target=tgt[s])
        else:
            wanted[s] = q
    cost = sum((q * (price[s] or _ZERO) for s, q in wanted.items()), _ZERO)
    scale = _ZERO if available <= 0 else min(D(1), available / cost) if cost else _ZERO
    spent = _ZERO
    for s, q in wanted.items():
        px = price[s]
        assert px is not None
        lot = SECS[s].lot_size if model.round_lots else 1
        got = q if scale == 1 else _floor_to(q * scale, lot)
        if got <= 0:
            rows[s] = row(s, mreason(
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
            r = rb.restrictions[cap[1]]
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
        rows[s] = row(s, mreason(code, text), side="buy", qty=got, target=tgt[s])
    out = tuple(rows[s] for s in symbols)
    return AccountPlan(aid, value, cash, cash + proceeds - spent, drift_q,
                       any(r.qty > 0 for r in out), out)


# -- inputs ---------------------------------------------------------------------------------

@st.composite
def models(draw: st.DrawFn) -> Model:
    chosen = draw(st.lists(st.sampled_from(MODEL_SYMBOLS), min_size=1, max_size=6, unique=True))
    targets = {s: draw(st.sampled_from(WEIGHTS)) for s in chosen}
    total = sum((D(w) for w in targets.values()), _ZERO)
    cash = _HUNDRED - total
    return Model.from_mapping({
        "name": "ref", "assign": {"schemes": ["core"]}, "targets": targets,
        "cash": {"target_pct": str(cash),
                 "buffer_pct": str(min(cash, D(draw(st.sampled_from(["0", "1", "2.5"])))))},
        "drift": {"account_band_pct": draw(st.sampled_from(["0", "1", "4"])),
                  "position_band_pct": draw(st.sampled_from(["0", "0.25", "2"]))},
        "min_trade": {"shares": draw(st.sampled_from([0, 1, 20])),
                      "notional": draw(st.sampled_from([0, 500, 5000]))},
        "round_lots": draw(st.booleans()),
        "redistribution": draw(st.sampled_from(["pro_rata", "cash"]))})


holding = st.tuples(st.sampled_from(HELD), st.integers(-50, 6000), st.integers(1, 500),
                    st.integers(0, 900))


@st.composite
def accounts(draw: st.DrawFn) -> tuple[Account, ...]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        aid = f"P{i:02d}"
        pos: dict[str, Decimal] = {}
        tax: dict[str, tuple[TaxLot, ...]] = {}
        for k, (sym, qty, cost, age) in enumerate(draw(st.lists(holding, max_size=8))):
            pos[sym] = D(qty)
            if qty > 0 and draw(st.booleans()):
                tax[sym] = (TaxLot(f"{aid}-{k}", D(qty), D(cost),
                                   DAY - dt.timedelta(days=age)),)
        out.append(Account(
            aid, draw(st.sampled_from(["B1", "B2"])), nav=_ZERO,
            status=draw(st.sampled_from(["active"] * 6 + ["frozen", "do_not_trade"])),
            cash=D(draw(st.integers(-1000, 3_000_000))) / 100, positions=pos, lots=tax,
            tier=draw(st.integers(1, 3)), scheme="core"))
    return tuple(out)


RB = Rulebook.from_mapping({
    "schemes": {"core": {"method": "pro_rata", "lot_relief": "hifo"}}, "restrictions": RULES})


def _same(got: tuple[AccountPlan, ...], want: list[AccountPlan]) -> None:
    assert [repr(p) for p in got] == [repr(p) for p in want]


class _Pickling(InProcessPartitions):
    """Partitions whose results come back pickled, as from a worker process."""

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        return [pickle.loads(pickle.dumps(r)) for r in super().call_partitions(fn, args)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), accounts())
def test_trade_lists_equal_the_reference(model: Model, accts: tuple[Account, ...]) -> None:
    want = [reference(model, RB, a) for a in sorted(accts, key=lambda a: a.account_id)]
    req = RebalanceRequest(model, accts, SECS, DAY)
    _same(rebalance(req, RB).accounts, want)
    _same(rebalance(req, RB, InProcessPartitions(2)).accounts, want)
    # From a worker process the plans come back packed (engine.rebalance.wire).
    _same(rebalance(req, RB, _Pickling(3)).accounts, want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), accounts())
def test_a_model_security_without_price(model: Model, accts: tuple[Account, ...]) -> None:
    """`plan_account` on its own (no validation): a model target with no price."""
    unpriced = dataclasses.replace(model, targets={**model.targets, "NOPX": D("3")})
    run = Run(unpriced, RB, SECS, DAY)
    for a in accts:
        _same((plan_account(run, a),), [reference(unpriced, RB, a)])


def test_reference_sees_what_the_inputs_aim_at() -> None:
    """The generated inputs reach the cases the reference is there for."""
    model = Model.from_mapping({
        "name": "ref", "assign": {"schemes": ["core"]},
        "targets": {"AAA": "10", "BBB": "5.0", "CCC": "7.50", "CCC.A": "1E+1", "DDD": "5",
                    "EEE": "2.25"},
        "cash": {"target_pct": "60.25", "buffer_pct": "1"},
        "drift": {"account_band_pct": "0", "position_band_pct": "0.25"}})
    accts = (
        Account("P01", "B2", cash=D("50000"), positions={
            "AAA": D(4000), "CCC.B": D(900), "DDD": D(100), "NOPX": D(5), "GONE": D(3),
            "EEE": D(-20)}, scheme="core"),
        Account("P02", "B1", cash=D("250000"), positions={"CCC": D(3000), "CCC.A": D(200)},
                scheme="core"),
        Account("P03", "B1", cash=D("90000"), positions={"DDD": D(100)}, tier=3,
                scheme="core"),
    )
    want = [reference(model, RB, a) for a in accts]
    got = rebalance(RebalanceRequest(model, accts, SECS, DAY), RB).accounts
    _same(got, want)
    codes = {r.reason.code for p in got for r in p.rows}
    assert {"NO_PRICE", "SELL_EXCLUDED", "SELL_NOT_IN_MODEL", "CUSTOM_RULE", "BUY_ISSUER_CAP",
            "SIDE_FORBIDDEN"} <= codes
    assert any(r.symbol == "GONE" and r.price is None for r in got[0].rows)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**12), st.integers(-40, 2), st.integers(1, 10**9), st.integers(-30, 0),
       st.integers(1, 10**7), st.integers(-4, 2), st.sampled_from([1, 10, 100, 1000]))
def test_the_buy_shortcut_only_skips_quantities_of_zero(
        d: int, de: int, v: int, ve: int, p: int, pe: int, lot: int) -> None:
    """A buy whose first product is below `Run.no_lot_below` has quantity zero."""
    diff, value = D(d).scaleb(de), D(v).scaleb(ve)
    px = D(p).scaleb(pe)
    run = Run(Model.from_mapping({"name": "x", "assign": {"schemes": ["core"]},
                                  "targets": {"AAA": 1}, "cash": {"target_pct": 99}}),
              RB, {"AAA": dataclasses.replace(SECS["AAA"], lot_size=lot, price=px)}, DAY)
    with localcontext(DECIMAL_CONTEXT):
        dv = diff * value
        if dv < run.no_lot_below["AAA"]:
            assert _floor_to(dv / _HUNDRED / px, lot) == 0


def test_the_buy_shortcut_at_its_threshold() -> None:
    for lot in (1, 100):
        for px in (D("0.01"), D("9.990"), D("2E+1"), D("333.3333333333333333333333333333333")):
            run = Run(Model.from_mapping({"name": "x", "assign": {"schemes": ["core"]},
                                          "targets": {"AAA": 1}, "cash": {"target_pct": 99}}),
                      RB, {"AAA": dataclasses.replace(SECS["AAA"], lot_size=lot, price=px)},
                      DAY)
            with localcontext(DECIMAL_CONTEXT):
                below = run.no_lot_below["AAA"].next_minus()
                assert _floor_to(below / _HUNDRED / px, lot) == 0
                # Where the shortcut does not apply the division decides, as before.
                assert _floor_to(lot * px * _HUNDRED / _HUNDRED / px, lot) == lot
