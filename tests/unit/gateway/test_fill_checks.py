"""Plausibility of a broker report against our order, and the codec's bounds on decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest
import quickfix as fix
from hypothesis import given
from hypothesis import strategies as st

from gateway.fill_checks import QUANTITY_EXCEEDS_ORDER, check_report
from gateway.fix import codec

D = Decimal


def _check(**kw: object) -> object:
    base: dict[str, object] = dict(exec_type="F", last_qty=D(100), last_px=D(190),
                                   cum_qty=D(100), order_qty=D(1000), ledger_cum_qty=D(0))
    base.update(kw)
    return check_report(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "reason", "text"), [
    (dict(cum_qty=D(1001)), "C", "CumQty(14) 1001 exceeds OrderQty(38) 1000"),
    (dict(cum_qty=D(-1)), "Z", "CumQty(14) -1 is negative"),
    (dict(last_qty=D(0)), "Z", "LastQty(32) 0 is not a positive quantity"),
    (dict(last_qty=D("0.5"), cum_qty=D("0.5")), "Z", "not a whole number of shares"),
    (dict(last_px=D(0)), "Z", "LastPx(31) 0 is not a positive price"),
    (dict(last_px=D("-5")), "Z", "LastPx(31) -5 is not a positive price"),
    (dict(ledger_cum_qty=D(950), cum_qty=D(900)), "C", "brings the executed quantity to 1050"),
    (dict(exec_type="G", last_qty=D(-100)), "Z", "LastQty(32) -100"),
])
def test_implausible_reports_are_named(kw: dict[str, object], reason: str, text: str) -> None:
    refused = _check(**kw)
    assert refused is not None
    assert refused.dk_reason == reason and text in refused.text  # type: ignore[attr-defined]


def test_busts_and_status_reports_pass_with_any_last_fields() -> None:
    assert _check(exec_type="H", last_qty=D(0), last_px=D(0)) is None
    assert _check(exec_type="0", last_qty=D(0), last_px=D(0), cum_qty=D(0)) is None
    assert _check(exec_type="G", last_qty=D(0)) is None  # a correction to nothing filled


@given(order=st.integers(1, 10**9), done=st.integers(0, 10**9), last=st.integers(1, 10**9),
       px=st.decimals(min_value=D("0.0001"), max_value=D(10**6), places=4))
def test_a_fill_is_refused_exactly_when_it_overfills(order: int, done: int, last: int,
                                                     px: Decimal) -> None:
    refused = _check(order_qty=D(order), ledger_cum_qty=D(done), last_qty=D(last),
                     last_px=px, cum_qty=D(min(order, done + last)))
    overfill = done + last > order
    assert (refused is not None) == overfill
    if refused is not None:
        assert refused.dk_reason == QUANTITY_EXCEEDS_ORDER  # type: ignore[attr-defined]


def _with_px(value: str) -> fix.Message:
    msg = fix.Message()
    msg.setField(31, value)
    return msg


@pytest.mark.parametrize(("raw", "problem"), [
    ("1" + "0" * 15, "out of range"),
    ("-1" + "0" * 15, "out of range"),
    ("0.00000000001", "more than 10 decimal places"),
])
def test_decimals_beyond_any_trade_are_refused_at_the_edge(raw: str, problem: str) -> None:
    with pytest.raises(codec.DecodeError, match=problem):
        codec.get_decimal(_with_px(raw), 31)


@pytest.mark.parametrize("raw", ["999999999999999.9999", "190.0000000000", "0.0000000001"])
def test_decimals_at_the_bounds_are_read_exactly(raw: str) -> None:
    assert codec.get_decimal(_with_px(raw), 31) == Decimal(raw)
