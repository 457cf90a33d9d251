"""The accounts table's figures in exact Decimal arithmetic: fill rate, the plain pro-rata
share and the difference from it, rounded once (half to even) to the places shown."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from gateway.web.allocation_view import account_rows, policy_reasons
from gateway.web.figures import (
    fill_rate,
    percent,
    pro_rata_diff,
    pro_rata_share,
    total_intended,
)

D = Decimal


def test_fill_rate_is_allocated_over_intended_to_four_places() -> None:
    assert fill_rate(D(750), D(1000)) == D("0.7500")
    assert fill_rate(D(3700), D(3600)) == D("1.0278")  # 1.027777...
    assert fill_rate(D(1), D(3)) == D("0.3333")
    assert fill_rate(D(2), D(3)) == D("0.6667")
    assert fill_rate(D(0), D(1500)) == D("0.0000")
    # Half to even, once: 0.00005 -> 0.0000 and 0.00015 -> 0.0002.
    assert fill_rate(D(1), D(20_000)) == D("0.0000")
    assert fill_rate(D(3), D(20_000)) == D("0.0002")
    # No intended quantity, no fill rate.
    assert fill_rate(D(100), None) is None
    assert fill_rate(D(100), D(0)) is None
    assert str(fill_rate(D(750), D(1000))) == "0.7500"


def test_percent_shifts_the_rate_exactly() -> None:
    assert percent(D("0.7500")) == D("75.00") and str(percent(D("0.7500"))) == "75.00"
    assert percent(D("1.0278")) == D("102.78")
    assert percent(D("0.0002")) == D("0.02")
    assert percent(None) is None


def test_the_plain_pro_rata_share_and_the_difference_from_it() -> None:
    total = total_intended([D(3600), D(2200), None, D(0), D(1200)])
    assert total == D(7000)
    # executed 14,000 over intended 3,600 / 7,000: exactly 7,200.
    assert pro_rata_share(D(14_000), D(3600), total) == Fraction(7200)
    assert pro_rata_diff(D(7300), D(14_000), D(3600), total) == D("100.00")
    assert pro_rata_diff(D(7200), D(14_000), D(3600), total) == D("0.00")
    # A third of 1,000 is 333.333...: 333 is 0.33 short, 334 is 0.67 over.
    assert pro_rata_share(D(1000), D(1), D(3)) == Fraction(1000, 3)
    assert pro_rata_diff(D(333), D(1000), D(1), D(3)) == D("-0.33")
    assert pro_rata_diff(D(334), D(1000), D(1), D(3)) == D("0.67")
    # Half to even at the cent: -0.125 -> -0.12, -0.375 -> -0.38.
    assert pro_rata_diff(D(0), D(1), D(1), D(8)) == D("-0.12")
    assert pro_rata_diff(D(0), D(3), D(1), D(8)) == D("-0.38")
    # An excluded account's whole share is the gap.
    assert pro_rata_diff(D(0), D(500_000), D(1500), D(500_000)) == D("-1500.00")
    # Large figures stay exact: 10,000,000 x 7 / 3 = 23,333,333.33...
    assert pro_rata_diff(D(23_333_333), D(10_000_000), D(7), D(3)) == D("-0.33")
    # No intended quantity (or none at all in the book): no share, no difference.
    assert pro_rata_diff(D(100), D(1000), None, D(10)) is None
    assert pro_rata_diff(D(100), D(1000), D(5), D(0)) is None


def _reason(rule: str, version: str, text: str) -> dict[str, str]:
    return {"rule_id": rule, "rule_version": version, "code": "X", "text": text}


def test_account_rows_from_a_decision_its_lines_and_the_intended_quantities() -> None:
    decision = {"executed_qty": "1000", "results": [
        {"account_id": "A1", "status": "allocated", "qty": "600",
         "reasons": [_reason("SYS-ALLOC", "engine-1", "pro rata")], "rounding": ""},
        {"account_id": "A2", "status": "capped", "qty": "400",
         "reasons": [_reason("CASH", "engine-1", "cash 76,000 at 190")], "rounding": ""},
        {"account_id": "A3", "status": "excluded", "qty": "0",
         "reasons": [_reason("A3-NO-TECH", "2", "no IT stocks")], "rounding": ""},
        {"account_id": "A4", "status": "allocated", "qty": "0", "reasons": [],
         "rounding": ""},
    ]}
    lines = [{"account_id": "A1", "qty": "600"}, {"account_id": "A2", "qty": "400"}]
    intended = {"A1": D(500), "A2": D(1000), "A3": D(500), "A4": None}
    rows, totals = account_rows(decision, lines, intended)
    assert rows == [
        # share = 1000 x 500 / 2000 = 250; 600 / 500 = 120 %.
        ["A1", "500", "600", "120.00", "350.00", "allocated", []],
        ["A2", "1000", "400", "40.00", "-100.00", "capped",
         [["CASH", "engine-1", "cash 76,000 at 190"]]],
        ["A3", "500", "0", "0.00", "-250.00", "excluded",
         [["A3-NO-TECH", "2", "no IT stocks"]]],
        ["A4", None, "0", None, None, "allocated", []],
    ]
    assert totals == {"accounts": 4, "intended": "2000", "allocated": "1000",
                      "executed": "1000", "fill_rate_pct": "50.00",
                      "statuses": {"allocated": 2, "capped": 1, "excluded": 1}}


def test_a_policy_is_explained_by_the_facts_its_condition_reads() -> None:
    facts = {"decision": {"manual": False, "allocated_qty": 20_000, "notional": 3_800_000},
             "order": {"book": "SMA-CORE"}}
    assert policy_reasons({"when": "!decision.manual"}, facts) == [
        ["decision.manual", "false"]]
    assert policy_reasons({"when": "decision.notional > 1000000 && order.book == 'SMA-CORE'"},
                          facts) == [["decision.notional", "3800000"],
                                     ["order.book", '"SMA-CORE"']]
