"""Fill ledger reconciliation, order/allocation transitions, trade dates, redaction."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from gateway.clock import CalendarError, settlement_date, trade_date_of
from gateway.ledger import FillLedger
from gateway.orders import InvalidTransition, Order, alloc_transition, make_order_id
from gateway.redaction import redact


def test_ledger_uses_the_spec_worked_example() -> None:
    """9,000 shares in four fills average 100.13888..., sent once rounded as 100.1389."""
    ledger = FillLedger()
    for i, (q, p) in enumerate([(3000, "100.00"), (1000, "100.25"), (3000, "100.00"),
                                (2000, "100.50")]):
        ledger.apply_fill(f"E{i}", Decimal(q), Decimal(p))
    ledger.observe_totals(Decimal(9000), Decimal("100.1389"))
    assert ledger.cum_qty == Decimal(9000)
    assert ledger.avg_px == Decimal("100.1389")
    assert ledger.discrepancies() == []


def test_ledger_flags_quantity_and_price_differences() -> None:
    """Broker CumQty or AvgPx that disagree with our fills are reported, not absorbed."""
    ledger = FillLedger()
    ledger.apply_fill("E1", Decimal(100), Decimal("10.00"))
    ledger.observe_totals(Decimal(200), Decimal("10.50"))
    problems = ledger.discrepancies()
    assert len(problems) == 2
    assert "sum of LastQty 100 differs from broker CumQty 200" in problems[0]


def _order(status: str = "new") -> Order:
    return Order(order_id="O", oms_session="S", oms_cl_ord_id="C", book="B", symbol="AAPL",
                 side="buy", order_qty=Decimal(100), ord_type="1", price=None,
                 time_in_force=None, broker="BRKA", trade_date="2026-11-20", status=status)


def test_done_rule_matches_the_issue() -> None:
    """Filled and DFD are done; canceled/expired only with something executed."""
    assert _order("filled").done() and _order("done_for_day").done()
    canceled = _order("canceled")
    assert not canceled.done()
    canceled.ledger.apply_fill("E", Decimal(1), Decimal(1))
    assert canceled.done()


def test_order_cannot_leave_a_terminal_state_backwards() -> None:
    """A filled order does not go back to partially filled."""
    order = _order("filled")
    with pytest.raises(InvalidTransition):
        order.move_to("partially_filled")


def test_allocation_transitions() -> None:
    """P received then accepted is legal; accepted back to sent is not."""
    assert alloc_transition("sent", "received") == "received"
    assert alloc_transition("received", "accepted") == "accepted"
    with pytest.raises(InvalidTransition):
        alloc_transition("accepted", "sent")


def test_order_id_is_a_pure_function_of_the_oms_identity() -> None:
    """The same D on the same day maps to the same order id; another day does not."""
    a = make_order_id("S", "C1", "2026-11-20")
    assert a == make_order_id("S", "C1", "2026-11-20") != make_order_id("S", "C1", "2026-11-21")


@pytest.mark.parametrize(("utc", "expected"), [
    (datetime(2026, 11, 21, 0, 55, tzinfo=UTC), date(2026, 11, 20)),   # 19:55 ET (EST)
    (datetime(2026, 7, 1, 23, 55, tzinfo=UTC), date(2026, 7, 1)),      # 19:55 ET (EDT)
    (datetime(2026, 7, 2, 0, 5, tzinfo=UTC), date(2026, 7, 1)),        # 20:05 ET (EDT)
])
def test_trade_date_is_the_new_york_date(utc: datetime, expected: date) -> None:
    """After 19:00/20:00 ET the UTC date has rolled but the trade date has not."""
    assert trade_date_of(utc) == expected


def test_settlement_is_t_plus_one_on_the_exchange_calendar() -> None:
    """T+1 skips weekends and exchange holidays (Thanksgiving 2026-11-26)."""
    assert settlement_date(date(2026, 11, 20)) == date(2026, 11, 23)   # Friday -> Monday
    assert settlement_date(date(2026, 11, 25)) == date(2026, 11, 27)   # over Thanksgiving


def test_settlement_skips_bank_holidays_when_the_exchange_is_open() -> None:
    """NYSE trades on Columbus Day and Veterans Day; nothing settles on them (Fed closed)."""
    assert settlement_date(date(2026, 10, 9)) == date(2026, 10, 13)   # over Columbus Day
    assert settlement_date(date(2026, 11, 10)) == date(2026, 11, 12)  # over Veterans Day
    assert settlement_date(date(2026, 10, 12)) == date(2026, 10, 13)  # traded on Columbus Day


def test_settlement_outside_the_calendar_fails_loudly() -> None:
    """Before, a date the calendar could not place got a weekday guess and no log line."""
    with pytest.raises(CalendarError, match="no XNYS settlement date for trade date 2019-06-03"):
        settlement_date(date(2019, 6, 3))  # before the calendar's first session (2020)


def test_passwords_are_masked_in_raw_fix() -> None:
    """Password(554) and NewPassword(925) never survive redaction."""
    raw = "8=FIX.4.4\x0135=A\x01553=u\x01554=s3cret\x01925=n3w\x0110=000\x01"
    out = redact(raw)
    assert "s3cret" not in out and "n3w" not in out
    assert "\x01554=***\x01" in out and "\x01553=u\x01" in out


def test_engine_imports_no_io_or_gateway_code() -> None:
    """engine/ stays pure: importing it loads no quickfix, sqlalchemy, structlog or gateway."""
    code = ("import sys, engine; bad = [m for m in ('quickfix', 'sqlalchemy', 'structlog', "
            "'apscheduler', 'gateway', 'pydantic', 'yaml') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
