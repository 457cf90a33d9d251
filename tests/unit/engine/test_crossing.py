"""Internal crossing inside a rebalance: worked examples, refusals with their reasons, the
net blocks, the record (JSON and crosses.csv), and properties over random blocks."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import canonical
from engine.crossing import (
    CSV_COLUMNS,
    Cross,
    CrossingResult,
    Quote,
    Refusal,
    cross_blocks,
    cross_id,
    crossable_symbols,
    crosses_csv,
)
from engine.crossing_policy import CrossingPolicy
from engine.model import Account, Security, TaxLot
from engine.rebalance import RebalanceRequest, rebalance
from engine.rebalance_blocks import Block
from engine.rebalance_blocks import blocks as make_blocks
from engine.rebalance_model import Model
from engine.rulebook import Rulebook

D = Decimal
DAY = dt.date(2024, 6, 3)
NOW = dt.datetime(2024, 6, 3, 15, 59, 30, tzinfo=dt.UTC)
HASH = "ab12cd34ef56" + "0" * 52


def blk(symbol: str, side: str, pre: Mapping[str, Any]) -> Block:
    alloc = tuple(sorted((a, D(str(q))) for a, q in pre.items()))
    return Block(f"RB-ab12cd34-{symbol}-{side.upper()}", symbol, side,
                 sum((q for _a, q in alloc), D(0)), alloc, "Rebalance to model 'm'.")


def acct(aid: str, vehicle: str = "SMA-WRAP1", nav: int = 1_000_000) -> Account:
    return Account(aid, "SMA-CORE", nav=D(nav), vehicle=vehicle)


def pol(**over: Any) -> CrossingPolicy:
    base: dict[str, Any] = {"enabled": True, "price_rule": "last",
                            "max_price_age_seconds": 60}
    return CrossingPolicy(**(base | over))


def quote(symbol: str = "AAPL", last: str = "190.25", bid: str | None = "190.24",
          ask: str | None = "190.26", age: float = 10) -> Quote:
    return Quote(symbol=symbol, last=D(last), bid=None if bid is None else D(bid),
                 ask=None if ask is None else D(ask), as_of=NOW - dt.timedelta(seconds=age),
                 source="file:prices.csv")


def accounts(*ids: str, **vehicles: str) -> list[Account]:
    return [acct(a, vehicles.get(a, "SMA-WRAP1")) for a in ids]


def run(blocks: list[Block], policy: CrossingPolicy | None = None, accts: Any = None,
        quotes: Mapping[str, Quote] | None = None) -> CrossingResult:
    if accts is None:
        accts = accounts(*sorted({a for b in blocks for a, _q in b.preallocations}))
    return cross_blocks(blocks, pol() if policy is None else policy, accts,
                        {"AAPL": quote()} if quotes is None else quotes,
                        now=NOW, inputs_hash=HASH)


def legs(**qty: int) -> tuple[tuple[str, Decimal], ...]:
    return tuple((a, D(q)) for a, q in qty.items())


def net(result: CrossingResult) -> dict[tuple[str, str], dict[str, Decimal]]:
    return {(b.symbol, b.side): dict(b.preallocations) for b in result.net_blocks}


# -- worked examples ------------------------------------------------------------------------

def test_a_cross_at_the_last_price() -> None:
    blocks = [blk("AAPL", "buy", {"A1": 300, "A2": 100}), blk("AAPL", "sell", {"B1": 250}),
              blk("MSFT", "buy", {"A1": 50})]
    r = run(blocks)
    assert r.refusals == ()
    (c,) = r.crosses
    assert (c.cross_id, c.symbol, c.qty, c.price, c.price_rule) == (
        "XR-ab12cd34ef56-AAPL", "AAPL", D(250), D("190.25"), "last")
    assert (c.price_source, c.price_as_of, c.price_age_seconds) == (
        "file:prices.csv", NOW - dt.timedelta(seconds=10), D(10))
    # 250 over 300:100 is 187.5 and 62.5; the tied remainders go by account id.
    assert c.buys == legs(A1=188, A2=62)
    assert c.sells == legs(B1=250)
    assert c.commission == 0 and c.excluded == ()
    assert "Crossed 250 AAPL internally" in c.reason
    assert "limited by the sell side's eligible quantity" in c.reason
    assert "no commission" in c.reason
    # The sell block crossed completely and disappears; the buy block routes the rest.
    assert net(r) == {("AAPL", "buy"): {"A1": D(112), "A2": D(38)},
                      ("MSFT", "buy"): {"A1": D(50)}}
    nb = {b.symbol: b for b in r.net_blocks}
    assert nb["AAPL"].qty == 150 and nb["AAPL"].block_id == "RB-ab12cd34-AAPL-BUY"
    assert "Net of 250 crossed internally in XR-ab12cd34ef56-AAPL" in nb[
        "AAPL"].preallocation_reason
    assert nb["MSFT"] == blocks[2]  # nothing to cross: untouched
    assert r.crossed == {"RB-ab12cd34-AAPL-BUY": {"A1": 188, "A2": 62},
                         "RB-ab12cd34-AAPL-SELL": {"B1": 250}}


def test_accounts_cross_whole_round_lots_so_what_is_routed_stays_in_round_lots() -> None:
    """AAPL trades in lots of 100: 250 sold crosses as 200, spread in whole lots; an
    account with less than a lot to buy does not cross."""
    blocks = [blk("AAPL", "buy", {"A1": 300, "A2": 100, "A3": 50}),
              blk("AAPL", "sell", {"B1": 250})]
    r = cross_blocks(blocks, pol(), accounts("A1", "A2", "A3", "B1"), {"AAPL": quote()},
                     now=NOW, inputs_hash=HASH, lot_sizes={"AAPL": 100})
    (c,) = r.crosses
    assert c.qty == 200 and c.buys == legs(A1=200) and c.sells == legs(B1=200)
    assert "largest remainder in lots of 100" in c.reason
    assert net(r) == {("AAPL", "buy"): {"A1": D(100), "A2": D(100), "A3": D(50)},
                      ("AAPL", "sell"): {"B1": D(50)}}
    small = cross_blocks([blk("AAPL", "buy", {"A1": 50}), blk("AAPL", "sell", {"B1": 80})],
                         pol(), accounts("A1", "B1"), {"AAPL": quote()}, now=NOW,
                         inputs_hash=HASH, lot_sizes={"AAPL": 100})
    (refusal,) = small.refusals
    assert refusal.code == "NOTHING_TO_CROSS" and "round lots of 100" in refusal.text


def test_a_cross_at_the_midpoint() -> None:
    r = run([blk("AAPL", "buy", {"A1": 100}), blk("AAPL", "sell", {"B1": 100})],
            pol(price_rule="midpoint"), quotes={"AAPL": quote(bid="100.00", ask="100.03")})
    (c,) = r.crosses
    assert c.price == D("100.015") and c.price_rule == "midpoint"
    assert "the midpoint of bid 100.00 and ask 100.03" in c.reason
    # Equal sides with nothing limiting: both blocks cross completely.
    assert r.net_blocks == ()


def test_a_stale_price_refuses_with_its_age() -> None:
    blocks = [blk("AAPL", "buy", {"A1": 100}), blk("AAPL", "sell", {"B1": 100})]
    r = run(blocks, quotes={"AAPL": quote(age=75.5)})
    assert r.crosses == ()
    (f,) = r.refusals
    assert (f.code, f.price_age_seconds) == ("STALE_PRICE", D("75.5"))
    assert "is 75.5s old, more than the 60s the policy allows" in f.text
    assert "the whole of both blocks is routed" in f.text
    assert r.net_blocks == tuple(blocks)
    # At exactly the limit it still crosses.
    assert run(blocks, quotes={"AAPL": quote(age=60)}).crosses[0].price_age_seconds == 60


def test_an_erisa_account_does_not_cross_and_the_others_do() -> None:
    policy = pol(exclude_when="account.vehicle == 'SMA-ERISA'")
    blocks = [blk("AAPL", "buy", {"A1": 300}), blk("AAPL", "sell", {"B1": 200, "B2": 100})]
    r = run(blocks, policy, accounts("A1", "B1", "B2", B1="SMA-ERISA"))
    (c,) = r.crosses
    assert c.qty == 100 and c.buys == legs(A1=100) and c.sells == legs(B2=100)
    (e,) = c.excluded
    assert (e.account_id, e.side, e.code) == ("B1", "sell", "CROSS_EXCLUDED_RULE")
    assert "account.vehicle == 'SMA-ERISA'" in e.text
    assert net(r) == {("AAPL", "buy"): {"A1": D(200)}, ("AAPL", "sell"): {"B1": D(200)}}


def test_an_exclusion_may_read_the_side() -> None:
    policy = pol(exclude_when="order.side == 'sell' && account.nav < 500000")
    blocks = [blk("AAPL", "buy", {"A1": 100}), blk("AAPL", "sell", {"B1": 100, "B2": 100})]
    r = run(blocks, policy, [acct("A1", nav=1), acct("B1", nav=1), acct("B2")])
    assert [e.account_id for e in r.crosses[0].excluded] == ["B1"]
    assert r.crosses[0].sells == legs(B2=100)


def test_max_share_caps_the_cross() -> None:
    blocks = [blk("AAPL", "buy", {"A1": 600, "A2": 400}), blk("AAPL", "sell", {"B1": 800})]
    r = run(blocks, pol(max_share_of_order=D("0.25")))
    (c,) = r.crosses
    assert c.qty == 200  # 0.25 x 800, under 0.25 x 1000
    assert "limited by 0.25 of the sell block" in c.reason
    assert c.buys == legs(A1=120, A2=80) and c.sells == legs(B1=200)
    assert net(r) == {("AAPL", "buy"): {"A1": D(480), "A2": D(320)},
                      ("AAPL", "sell"): {"B1": D(600)}}
    assert [b.qty for b in r.net_blocks] == [800, 600]


def test_the_net_blocks_still_sum_and_accounts_that_crossed_fully_drop_out() -> None:
    blocks = [blk("AAPL", "buy", {"A1": 1, "A2": 2, "A3": 997}),
              blk("AAPL", "sell", {"B1": 333, "B2": 334})]
    r = run(blocks)
    (c,) = r.crosses
    assert c.qty == 667
    assert sum(q for _a, q in c.buys) == sum(q for _a, q in c.sells) == 667
    for b in r.net_blocks:
        assert sum(q for _a, q in b.preallocations) == b.qty
        assert all(q > 0 for _a, q in b.preallocations)
    assert [b.side for b in r.net_blocks] == ["buy"]


def test_fractional_trades_cross_in_whole_shares_and_never_beyond_the_trade() -> None:
    blocks = [blk("AAPL", "buy", {"A1": "10.5", "A2": "0.7"}),
              blk("AAPL", "sell", {"B1": "20.25"})]
    r = run(blocks)
    (c,) = r.crosses
    assert c.qty == 10 and c.buys == legs(A1=10) and c.sells == legs(B1=10)
    assert net(r) == {("AAPL", "buy"): {"A1": D("0.5"), "A2": D("0.7")},
                      ("AAPL", "sell"): {"B1": D("10.25")}}


# -- refusals -------------------------------------------------------------------------------

BOTH = [blk("AAPL", "buy", {"A1": 100}), blk("AAPL", "sell", {"B1": 100})]


@pytest.mark.parametrize(("policy", "quotes", "code", "fragment"), [
    (None, None, "CROSSING_DISABLED", "the rulebook has no crossing policy"),
    (pol(enabled=False), None, "CROSSING_DISABLED", "crossing.enabled: false"),
    (pol(), {}, "NO_PRICE", "no reference price"),
    (pol(price_rule="midpoint"), {"AAPL": quote(bid=None, ask=None)}, "NO_BID_ASK",
     "has no bid and ask"),
    (pol(), {"AAPL": quote(age=-2)}, "PRICE_IN_FUTURE", "2s after now"),
    (pol(exclude_accounts=frozenset({"B1"})), None, "NO_ELIGIBLE_ACCOUNT",
     "no account on the sell side may cross (1 excluded"),
    (pol(max_share_of_order=D("0.001")), None, "NOTHING_TO_CROSS",
     "limited by 0.001 of the buy block and 0.001 of the sell block"),
])
def test_a_refusal_says_why(policy: CrossingPolicy | None, quotes: Any, code: str,
                            fragment: str) -> None:
    r = cross_blocks(BOTH, policy, accounts("A1", "B1"),
                     {"AAPL": quote()} if quotes is None else quotes, now=NOW,
                     inputs_hash=HASH)
    assert r.crosses == ()
    (f,) = r.refusals
    assert (f.code, f.symbol, f.cross_id) == (code, "AAPL", "XR-ab12cd34ef56-AAPL")
    assert fragment in f.text
    assert (f.buy_block_id, f.sell_block_id) == ("RB-ab12cd34-AAPL-BUY", "RB-ab12cd34-AAPL-SELL")
    assert r.net_blocks == tuple(BOTH)


def test_accounts_that_cannot_be_checked_or_sit_on_both_sides_never_cross() -> None:
    policy = pol(exclude_when="account.nav / (account.tier - 1) > 0")  # tier 1: fails
    blocks = [blk("AAPL", "buy", {"A1": 100, "C1": 50, "Z9": 10}),
              blk("AAPL", "sell", {"C1": 70, "B1": 100})]
    accts = [Account("A1", "SMA-CORE", tier=2), Account("B1", "SMA-CORE", tier=2),
             Account("C1", "SMA-CORE", tier=2)]
    (c,) = run(blocks, policy, accts).crosses
    codes = {(e.account_id, e.side): e.code for e in c.excluded}
    assert codes == {("C1", "buy"): "CROSS_SAME_ACCOUNT", ("C1", "sell"): "CROSS_SAME_ACCOUNT",
                     ("Z9", "buy"): "CROSS_ACCOUNT_UNKNOWN"}
    assert c.buys == legs(A1=100) and c.sells == legs(B1=100)
    # B1's exclusion fails to evaluate (tier 1 divides by zero): it does not cross, and the
    # sell side is left with nobody.
    r = run(blocks, policy, [accts[0], Account("B1", "SMA-CORE", tier=1), accts[2]])
    (f,) = r.refusals
    assert f.code == "NO_ELIGIBLE_ACCOUNT"
    (failed,) = [e for e in f.excluded if e.account_id == "B1"]
    assert failed.code == "CROSS_RULE_ERROR" and "fail closed" in failed.text


def test_nothing_to_do_without_opposite_interest() -> None:
    blocks = [blk("AAPL", "buy", {"A1": 100}), blk("MSFT", "sell", {"B1": 100}),
              blk("IBM", "sell_short", {"B1": 5}), blk("IBM", "buy", {"A1": 5})]
    assert crossable_symbols(blocks) == []
    r = run(blocks, quotes={})
    assert (r.crosses, r.refusals) == ((), ())
    assert r.net_blocks == tuple(sorted(blocks, key=lambda b: (b.symbol, b.side)))


# -- inputs no rebalance produces -----------------------------------------------------------

def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cross_blocks(BOTH, pol(), [], {}, now=NOW.replace(tzinfo=None), inputs_hash=HASH)
    with pytest.raises(ValueError, match="two blocks for AAPL buy"):
        run([*BOTH, BOTH[0]])
    bad = Block("X", "AAPL", "buy", D(5), (("A1", D(4)),), "")
    with pytest.raises(ValueError, match="do not sum"):
        run([bad])
    twice = Block("X", "AAPL", "buy", D(8), (("A1", D(4)), ("A1", D(4))), "")
    with pytest.raises(ValueError, match="lists an account twice"):
        run([twice])
    with pytest.raises(ValueError, match="duplicate account id"):
        run(BOTH, accts=accounts("A1", "A1"))
    with pytest.raises(ValueError, match="the quote for AAPL is for MSFT"):
        run(BOTH, quotes={"AAPL": quote("MSFT")})


@pytest.mark.parametrize(("over", "fragment"), [
    ({"last": 190.25}, "last must be a positive Decimal"),
    ({"last": D(0)}, "last must be a positive Decimal"),
    ({"last": D("1e12")}, "last must be below 1000000000000"),
    ({"last": D("1.0000000000001")}, "at most 12 decimal places"),
    ({"bid": D(1), "ask": None}, "both bid and ask"),
    ({"bid": D(2), "ask": D(1)}, "bid 2 is above ask 1"),
    ({"as_of": NOW.replace(tzinfo=None)}, "timezone-aware"),
    ({"source": ""}, "needs a source"),
    ({"symbol": ""}, "needs a symbol"),
])
def test_a_bad_quote_is_refused(over: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"symbol": "AAPL", "last": D(1), "as_of": NOW, "source": "s"}
    with pytest.raises(ValueError, match=fragment):
        Quote(**(args | over))


# -- the record -----------------------------------------------------------------------------

def test_json_and_crosses_csv() -> None:
    blocks = [blk("AAPL", "buy", {"A1": 300, "A2": 100}), blk("AAPL", "sell", {"B1": 250}),
              blk("MSFT", "buy", {"A1": 10}), blk("MSFT", "sell", {"B1": 10})]
    r = run(blocks)
    assert crosses_csv(r) == (
        ",".join(CSV_COLUMNS) + "\n"
        "XR-ab12cd34ef56-AAPL,AAPL,buy,A1,188,190.25,last,file:prices.csv,"
        "2024-06-03T15:59:20+00:00\n"
        "XR-ab12cd34ef56-AAPL,AAPL,buy,A2,62,190.25,last,file:prices.csv,"
        "2024-06-03T15:59:20+00:00\n"
        "XR-ab12cd34ef56-AAPL,AAPL,sell,B1,250,190.25,last,file:prices.csv,"
        "2024-06-03T15:59:20+00:00\n")
    doc = r.to_json()
    assert doc["crossed_qty"] == 250 and doc["policy"]["price_rule"] == "last"
    assert doc["crosses"][0]["commission"] == 0
    assert doc["refusals"][0]["code"] == "NO_PRICE"
    assert doc["quotes"] == [quote().to_json()]  # what the crossable symbols were judged by
    text = canonical.dumps(doc)  # JSON-ready: canonical form, no floats
    assert '"commission":"0"' in text and '"price":"190.25"' in text
    assert cross_id(HASH, "AAPL") == cross_id(HASH, "AAPL") != cross_id(HASH, "MSFT")
    assert cross_id("ff" * 32, "AAPL") != cross_id(HASH, "AAPL")


# -- properties -----------------------------------------------------------------------------

IDS = [f"A{i:02d}" for i in range(12)]
qtys = st.one_of(st.integers(1, 5000).map(D),
                 st.integers(1, 50_000).map(lambda n: D(n).scaleb(-1)))
sides = st.dictionaries(st.sampled_from(IDS), qtys, max_size=6)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Block], CrossingPolicy, list[Account],
                                    dict[str, Quote]]:
    blocks: list[Block] = []
    quotes: dict[str, Quote] = {}
    for sym in draw(st.lists(st.sampled_from(["AAPL", "IBM", "MSFT", "XOM"]), unique=True,
                             min_size=1, max_size=4)):
        for side in ("buy", "sell"):
            pre = draw(sides)
            if pre:
                blocks.append(blk(sym, side, pre))
        if draw(st.integers(0, 9)):
            quotes[sym] = quote(sym, age=draw(st.integers(0, 90)))
    policy = pol(price_rule=draw(st.sampled_from(["last", "midpoint"])),
                 max_share_of_order=draw(st.sampled_from([D(1), D("0.5"), D("0.37"),
                                                          D("0.01")])),
                 exclude_accounts=frozenset(draw(st.lists(st.sampled_from(IDS), max_size=3))),
                 exclude_when=draw(st.sampled_from([None, "account.vehicle == 'SMA-ERISA'"])))
    accts = [acct(a, draw(st.sampled_from(["SMA-WRAP1", "SMA-ERISA"]))) for a in IDS]
    return blocks, policy, accts, quotes


@settings(max_examples=300, deadline=None)
@given(cases())
def test_crossing_properties(case: tuple[list[Block], CrossingPolicy, list[Account],
                                         dict[str, Quote]]) -> None:
    blocks, policy, accts, quotes = case
    r = cross_blocks(blocks, policy, accts, quotes, now=NOW, inputs_hash=HASH)
    by_key = {(b.symbol, b.side): b for b in blocks}
    assert sorted([*(c.symbol for c in r.crosses), *(f.symbol for f in r.refusals)]) == \
        crossable_symbols(blocks)
    vehicle = {a.account_id: a.vehicle for a in accts}
    for sym in crossable_symbols(blocks):
        # An independent oracle: who may cross, and how much exactly.
        buy, sell = by_key[(sym, "buy")], by_key[(sym, "sell")]
        both = {a for a, _q in buy.preallocations} & {a for a, _q in sell.preallocations}

        def whole(b: Block) -> int:
            return sum(int(q) for a, q in b.preallocations if a not in both  # noqa: B023
                       and a not in policy.exclude_accounts
                       and not (policy.exclude_when and vehicle[a] == "SMA-ERISA"))

        expected = min(whole(buy), whole(sell),
                       int(policy.max_share_of_order * buy.qty),
                       int(policy.max_share_of_order * sell.qty))
        got_quote = quotes.get(sym)
        fresh = got_quote is not None and NOW - got_quote.as_of <= dt.timedelta(seconds=60)
        made = [c for c in r.crosses if c.symbol == sym]
        assert bool(made) == (fresh and expected > 0)
        if made:
            assert made[0].qty == expected
    for c in r.crosses:
        buy, sell = by_key[(c.symbol, "buy")], by_key[(c.symbol, "sell")]
        assert sum(q for _a, q in c.buys) == sum(q for _a, q in c.sells) == c.qty > 0
        assert c.qty == c.qty.to_integral_value()
        for legs, block in ((c.buys, buy), (c.sells, sell)):
            asked = dict(block.preallocations)
            assert all(0 < q <= asked[a] for a, q in legs)
            assert c.qty <= policy.max_share_of_order * block.qty
        out = {(e.account_id, e.side) for e in c.excluded}
        assert not out & ({(a, "buy") for a, _q in c.buys} | {(a, "sell") for a, _q in c.sells})
        assert all(a not in policy.exclude_accounts for a, _q in (*c.buys, *c.sells))
    # Net + crossed == original, per account and per block.
    routed = {(b.symbol, b.side): b for b in r.net_blocks}
    for key, b in by_key.items():
        crossed = r.crossed.get(b.block_id, {})
        got = routed.get(key)
        left = dict(got.preallocations) if got is not None else {}
        for a, q in b.preallocations:
            assert left.get(a, D(0)) + crossed.get(a, D(0)) == q
        assert (got.qty if got is not None else 0) + sum(crossed.values(), D(0)) == b.qty
        if got is not None:
            assert sum(q for _a, q in got.preallocations) == got.qty > 0
    # Deterministic whatever order blocks, pre-allocations and accounts come in.
    rnd = random.Random(len(blocks))
    shuffled = [Block(b.block_id, b.symbol, b.side, b.qty,
                      tuple(rnd.sample(b.preallocations, len(b.preallocations))),
                      b.preallocation_reason) for b in rnd.sample(blocks, len(blocks))]
    again = cross_blocks(shuffled, policy, rnd.sample(accts, len(accts)), quotes, now=NOW,
                         inputs_hash=HASH)
    assert canonical.dumps(again.to_json()) == canonical.dumps(r.to_json())
    assert crosses_csv(again) == crosses_csv(r)


def test_types_are_what_the_record_expects() -> None:
    r = run([blk("AAPL", "buy", {"A1": 100}), blk("AAPL", "sell", {"B1": 40})])
    assert isinstance(r.crosses[0], Cross)
    assert all(isinstance(q, Decimal) for _a, q in r.crosses[0].buys)
    assert not isinstance(r.crosses[0], Refusal)


def test_a_rebalance_crosses_its_own_opposite_interest() -> None:
    secs = {"AAA": Security("AAA", "A Corp", "Tech", "US", frozenset(), 100, None, D(100)),
            "BBB": Security("BBB", "B Corp", "Health", "US", frozenset(), 1, None, D(50))}
    model = Model.from_mapping({"name": "m", "assign": {"schemes": ["core"]},
                                "targets": {"AAA": 40, "BBB": 50}, "cash": {"target_pct": 10},
                                "drift": {"account_band_pct": 0, "position_band_pct": 0}})
    rb = Rulebook.from_mapping({
        "schemes": {"core": {"method": "pro_rata"}},
        "crossing": {"enabled": True, "price_rule": "midpoint", "max_price_age_seconds": 30}})
    lots = {"AAA": (TaxLot("L1", D(10000), D(90), dt.date(2020, 1, 1)),)}
    buyer = Account("A1", "BOOK", nav=D(1_000_000), cash=D(1_000_000), scheme="core")
    seller = Account("A2", "BOOK", nav=D(1_000_000), positions={"AAA": D(10000)}, lots=lots,
                     scheme="core")
    result = rebalance(RebalanceRequest(model, (seller, buyer), secs, DAY), rb)
    trades = {(r.account_id, r.symbol): r for r in result.rows() if r.traded}
    assert (trades[("A1", "AAA")].side, trades[("A1", "AAA")].qty) == ("buy", D(4000))
    assert (trades[("A2", "AAA")].side, trades[("A2", "AAA")].qty) == ("sell", D(6000))
    blocks = make_blocks(result)
    assert crossable_symbols(blocks) == ["AAA"]
    r = cross_blocks(blocks, rb.crossing, (seller, buyer),
                     {"AAA": quote("AAA", "100.10", "100.00", "100.02", age=3)},
                     now=NOW, inputs_hash=result.inputs_hash)
    (c,) = r.crosses
    assert c.cross_id == f"XR-{result.inputs_hash[:12]}-AAA"
    assert (c.qty, c.price) == (D(4000), D("100.01"))
    assert c.buys == legs(A1=4000) and c.sells == legs(A2=4000)
    routed = {(b.symbol, b.side): b for b in r.net_blocks}
    assert ("AAA", "buy") not in routed
    assert routed[("AAA", "sell")].preallocations == (("A2", D(2000)),)
    assert routed[("BBB", "buy")] == next(b for b in blocks if b.symbol == "BBB")
