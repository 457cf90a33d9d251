from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

import engine

SECS = {
    "XYZ": engine.Security("XYZ", "XYZ Corp", "Technology", "US", frozenset(), 100, None,
                           D("10")),
    "TOB": engine.Security("TOB", "Tob plc", "Staples", "GB", frozenset({"tobacco"}), 100, None,
                           D("10")),
}
RULEBOOK = engine.Rulebook.from_mapping({
    "schemes": {"default": {"method": "pro_rata", "fallback": ["pari_passu", "equal"]},
                "rb": {"method": "target_weight", "fallback": ["equal"]}},
    "restrictions": [
        {"id": "ESG", "version": "1", "description": "No tobacco", "kind": "exclude",
         "match": {"esg_tags": ["tobacco"]}, "scope": {"accounts": ["A01", "A03"]}},
        {"id": "CAP", "version": "1", "description": "5% cap", "kind": "issuer_cap",
         "max_pct_nav": 5, "scope": {"accounts": ["A02", "A04", "A06"]}},
        {"id": "MIN", "version": "1", "description": "min", "kind": "min_allocation",
         "min_qty": 200, "scope": {"accounts": ["A05"]}},
        {"id": "CEL", "version": "1", "description": "tier 3 no sells", "kind": "cel",
         "exclude_when": "account.tier == 3 && order.side == 'sell'"},
    ],
})

accounts_st = st.lists(
    st.builds(
        dict,
        status=st.sampled_from(["active"] * 6 + ["frozen", "closed"]),
        nav=st.integers(10_000, 5_000_000),
        cash=st.integers(0, 2_000_000),
        pos=st.integers(0, 20_000),
        intended=st.one_of(st.none(), st.integers(0, 50) .map(lambda x: x * 100)),
        tier=st.integers(1, 3),
    ),
    min_size=1, max_size=12,
)


def build(specs: list[dict[str, object]], qty: int, side: engine.Side, symbol: str,
          order: list[int] | None = None, method: str | None = None
          ) -> engine.AllocationRequest:
    accts = []
    for i, s in enumerate(specs):
        accts.append(engine.Account(
            f"A{i:02d}", "BOOK", status=str(s["status"]), nav=D(int(s["nav"])),  # type: ignore[call-overload]
            cash=D(int(s["cash"])), positions={symbol: D(int(s["pos"]))},  # type: ignore[call-overload]
            tier=int(s["tier"]),  # type: ignore[call-overload]
            intended_qty=None if s["intended"] is None else D(int(s["intended"])),  # type: ignore[call-overload]
            target_weight=D("0.05")))
    if order is not None:
        accts = [accts[i] for i in order]
    return engine.AllocationRequest(
        "B", symbol, side, D(qty), D("10"), dt.date(2024, 6, 3), tuple(accts), SECS,
        dt.datetime(2024, 6, 3, tzinfo=dt.UTC), method=method)


scenario = st.tuples(
    accounts_st, st.integers(0, 200_000), st.sampled_from(list(engine.Side)),
    st.sampled_from(["XYZ", "TOB"]),
    st.sampled_from([None, "pro_rata", "pari_passu", "equal", "tiered", "target_weight"]))


@settings(max_examples=300, deadline=None)
@given(scenario)
def test_conservation_and_restrictions(sc: tuple[list[dict[str, object]], int, engine.Side,
                                               str, str | None]) -> None:
    """Sum equals executed unless explained; excluded get nothing; caps and lots hold."""
    specs, qty, side, symbol, method = sc
    req = build(specs, qty, side, symbol, method=method)
    d = engine.allocate(req, RULEBOOK)
    engine.check_decision(d)
    lines = {line.account_id: line.qty for line in d.lines}
    assert sum(lines.values()) + d.unallocated_qty == qty
    res = {r.account_id: r for r in d.results}
    assert set(res) == {a.account_id for a in req.accounts}
    for a in req.accounts:
        q = lines.get(a.account_id, D(0))
        r = res[a.account_id]
        if r.status in ("excluded", "dropped", "not_participating"):
            assert q == 0
        if a.status != "active":
            assert q == 0
        if side is engine.Side.BUY:
            assert q * req.avg_px <= a.cash
        if side is engine.Side.SELL:
            assert q <= a.position(symbol)
        if a.account_id in ("A01", "A03") and symbol == "TOB":
            assert q == 0
        if a.account_id in ("A02", "A04", "A06") and side is engine.Side.BUY and q:
            assert (q + a.position(symbol)) * req.avg_px <= a.nav * D("0.05")
        if a.account_id == "A05" and q:
            assert q >= 200
    odd = [q for q in lines.values() if q % 100]
    assert len(odd) <= 1
    if d.unallocated_qty:
        assert d.unallocated_reason


@settings(max_examples=150, deadline=None)
@given(scenario, st.randoms(use_true_random=False))
def test_determinism_and_permutation_invariance(
        sc: tuple[list[dict[str, object]], int, engine.Side, str, str | None],
        rnd: object) -> None:
    """Same inputs give the same bytes; permuting the accounts changes nothing."""
    specs, qty, side, symbol, method = sc
    order = list(range(len(specs)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    a = engine.allocate(build(specs, qty, side, symbol, method=method), RULEBOOK)
    b = engine.allocate(build(specs, qty, side, symbol, method=method), RULEBOOK)
    c = engine.allocate(build(specs, qty, side, symbol, order, method=method), RULEBOOK)
    assert a.to_canonical_json() == b.to_canonical_json() == c.to_canonical_json()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=15), st.integers(0, 100_000))
def test_uncapped_pro_rata_is_within_one_lot_of_exact(weights: list[int], qty: int) -> None:
    """Without caps every account is within one lot (plus the odd lot) of its exact share."""
    accts = tuple(engine.Account(f"A{i:02d}", "B", nav=D(10**9), cash=D(10**12),
                                 intended_qty=D(w)) for i, w in enumerate(weights))
    req = engine.AllocationRequest("B", "XYZ", engine.Side.BUY, D(qty), D("10"),
                                   dt.date(2024, 6, 3), accts, SECS,
                                   dt.datetime(2024, 6, 3, tzinfo=dt.UTC))
    d = engine.allocate(req, engine.Rulebook.from_mapping({}))
    assert d.allocated_qty == qty
    total_w = sum(weights)
    lines = {line.account_id: line.qty for line in d.lines}
    for i, w in enumerate(weights):
        exact = D(qty) * w / total_w
        assert abs(lines.get(f"A{i:02d}", D(0)) - exact) < 200
