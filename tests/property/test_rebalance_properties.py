"""Rebalancing invariants: no account ends short, cash never negative after the trades at
the reference price, every row explained, the same result under permutation and whatever
executor runs it."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.executor import InProcessPartitions
from engine.model import Account, Security, TaxLot
from engine.rebalance import TRADED_CODES, RebalanceRequest, rebalance
from engine.rebalance_model import Model
from engine.rulebook import Rulebook

DAY = dt.date(2024, 6, 3)
SECS = {
    "AAA": Security("AAA", "A", "Tech", "US", frozenset(), 100, None, D("101.25")),
    "BBB": Security("BBB", "B", "Energy", "US", frozenset({"fossil_fuels"}), 100, None, D("47")),
    "CCC": Security("CCC", "C", "Health", "US", frozenset(), 1, None, D("9.99")),
    "CCC.ADR": Security("CCC.ADR", "C ADR", "Health", "US", frozenset(), 1, "CCC", D("20")),
    "DDD": Security("DDD", "D", "Tech", "GB", frozenset(), 10, None, D("333.3")),
}
RULES = [
    {"id": "NO-FOSSIL", "version": "1", "kind": "exclude", "description": "no fossil",
     "match": {"esg_tags": ["fossil_fuels"]}, "scope": {"accounts": ["P01", "P03", "P05"]}},
    {"id": "CAP", "version": "1", "kind": "issuer_cap", "max_pct_nav": 30,
     "description": "cap 30"},
    {"id": "NO-SELL-DDD", "version": "1", "kind": "side", "forbid": ["sell"],
     "match": {"symbols": ["DDD"]}, "description": "hold DDD", "scope": {"accounts": ["P02"]}},
    {"id": "T3", "version": "1", "kind": "cel", "description": "tier 3 no GB",
     "exclude_when": "account.tier == 3 && security.country == 'GB'"},
]
RB = Rulebook.from_mapping({"schemes": {"core": {"method": "pro_rata", "lot_relief": "hifo"}},
                            "restrictions": RULES})
MODEL = Model.from_mapping({
    "name": "p", "assign": {"schemes": ["core"]},
    "targets": {"AAA": "30", "BBB": "20", "CCC": "25", "DDD": "20"},
    "cash": {"target_pct": 5, "buffer_pct": "2.5"},
    "drift": {"account_band_pct": "1", "position_band_pct": "0.5"},
    "min_trade": {"notional": 1000}})

holding = st.tuples(st.sampled_from(sorted(SECS)), st.integers(1, 5000),
                    st.integers(1, 500), st.integers(0, 900))


@st.composite
def accounts(draw: st.DrawFn) -> tuple[Account, ...]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        aid = f"P{i:02d}"
        lots: dict[str, list[TaxLot]] = {}
        for k, (sym, qty, cost, age) in enumerate(draw(st.lists(holding, max_size=5))):
            lots.setdefault(sym, []).append(
                TaxLot(f"{aid}-{k}", D(qty), D(cost), DAY - dt.timedelta(days=age)))
        frozen = {s: tuple(v) for s, v in lots.items()}
        pos = {s: sum((t.quantity for t in v), D(0)) for s, v in frozen.items()}
        cash = D(draw(st.integers(0, 2_000_000))) / 100
        status = draw(st.sampled_from(["active"] * 5 + ["frozen"]))
        out.append(Account(aid, "B", status=status, nav=cash, cash=cash, positions=pos,
                           lots=frozen, tier=draw(st.integers(1, 3)), scheme="core"))
    return tuple(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accounts(), st.integers(0, 1000))
def test_invariants(accts: tuple[Account, ...], seed: int) -> None:
    res = rebalance(RebalanceRequest(MODEL, accts, SECS, DAY), RB)
    by_id = {a.account_id: a for a in accts}
    for plan in res.accounts:
        a = by_id[plan.account_id]
        cash = a.cash
        for r in plan.rows:
            # every row, traded or not, carries a reason
            assert r.reason.code and r.reason.text and r.reason.rule_id
            assert (r.qty > 0) == (r.reason.code in TRADED_CODES)
            assert r.qty >= 0 and r.qty == r.qty.to_integral_value()
            if r.side == "sell":
                assert r.qty <= a.position(r.symbol)              # never short
                assert sum((lot.quantity for lot in r.lots), D(0)) <= r.qty
                assert r.price is not None
                cash += r.qty * r.price
            elif r.side == "buy":
                assert r.price is not None
                cash -= r.qty * r.price
                lot = SECS[r.symbol].lot_size
                assert r.qty % lot == 0
        assert cash == plan.cash_after
        assert cash >= 0                                          # never negative
        if any(r.side == "buy" for r in plan.rows):
            assert cash >= MODEL.cash_buffer_pct * plan.value / 100
    # determinism under permutation, and whatever executor runs it
    shuffled = list(accts)
    random.Random(seed).shuffle(shuffled)
    again = rebalance(RebalanceRequest(MODEL, tuple(shuffled), SECS, DAY), RB,
                      InProcessPartitions(2))
    assert again == res
