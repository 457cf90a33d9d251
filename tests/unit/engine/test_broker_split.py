"""Splitting a block across brokers: by account metadata and by wheel."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.broker_split import Leg, SplitError, by_account, by_wheel

D = Decimal


def test_by_account_groups_each_account_under_its_broker() -> None:
    lines = [("A3", D(100)), ("A1", D(300)), ("A2", D(200)), ("A4", D(0))]
    broker_of = {"A1": "BRKB", "A2": "BRKA", "A3": "BRKB", "A4": "BRKA"}
    assert by_account(lines, broker_of) == (
        Leg("BRKA", D(200), (("A2", D(200)),)),
        Leg("BRKB", D(400), (("A1", D(300)), ("A3", D(100)))))


def test_by_account_names_the_accounts_without_a_broker() -> None:
    with pytest.raises(SplitError, match="no broker for account A2, A9"):
        by_account([("A1", D(1)), ("A2", D(1)), ("A9", D(5))], {"A1": "BRKA"})


def test_wheel_sixty_forty_in_round_lots() -> None:
    assert by_wheel(D(10_050), [("BRKA", D("0.6")), ("BRKB", D("0.4"))], lot=100) == (
        Leg("BRKA", D(6_050)), Leg("BRKB", D(4_000)))
    # 3 lots over thirds: the first by name takes the extra lot.
    assert by_wheel(D(300), [("X", D(1)), ("Y", D(1)), ("Z", D(1))], lot=100) == (
        Leg("X", D(100)), Leg("Y", D(100)), Leg("Z", D(100)))
    assert by_wheel(D(200), [("X", D(1)), ("Y", D(1)), ("Z", D(1))], lot=100) == (
        Leg("X", D(100)), Leg("Y", D(100)))


def test_wheel_refuses_a_zero_share() -> None:
    with pytest.raises(SplitError, match="positive share"):
        by_wheel(D(100), [("BRKA", D(1)), ("BRKB", D(0))])


@given(st.integers(1, 10_000_000), st.lists(st.integers(1, 100), min_size=1, max_size=5),
       st.sampled_from([1, 10, 100]))
def test_wheel_legs_add_up_to_the_block(qty: int, weights: list[int], lot: int) -> None:
    shares = [(f"B{i}", D(w)) for i, w in enumerate(weights)]
    legs = by_wheel(D(qty), shares, lot=lot)
    assert sum(leg.qty for leg in legs) == qty
    assert all(leg.qty > 0 for leg in legs)
    assert [leg.broker for leg in legs] == sorted(leg.broker for leg in legs)
    assert by_wheel(D(qty), list(reversed(shares)), lot=lot) == legs  # order-free
    # Each leg is within one lot (plus the odd shares) of its exact share.
    total = sum(w for w in weights)
    for leg in legs:
        exact = D(qty) * D(weights[int(leg.broker[1:])]) / total
        assert abs(leg.qty - exact) <= lot + lot


@given(st.dictionaries(st.from_regex(r"A[0-9]{1,3}", fullmatch=True),
                       st.tuples(st.integers(0, 10_000), st.sampled_from(["BA", "BB", "BC"])),
                       min_size=1, max_size=40))
def test_by_account_routes_every_share_once(accounts: dict[str, tuple[int, str]]) -> None:
    lines = [(a, D(q)) for a, (q, _b) in accounts.items()]
    broker_of = {a: b for a, (_q, b) in accounts.items()}
    if all(q == 0 for q, _b in accounts.values()):
        with pytest.raises(SplitError):
            by_account(lines, broker_of)
        return
    legs = by_account(lines, broker_of)
    routed = [(a, q, leg.broker) for leg in legs for a, q in leg.preallocations]
    assert sorted(routed) == sorted((a, q, broker_of[a]) for a, q in lines if q > 0)
    assert all(leg.qty == sum(q for _a, q in leg.preallocations) for leg in legs)
    assert by_account(list(reversed(lines)), broker_of) == legs
