"""The broker simulator's book without sessions: ticket economics and their planned
errors, fragment assembly, busts and corrections of an order, and the JSON that a restart
reads back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.fix.allocation_codec import JReceived
from gateway.fix.sim.booking import Booking, FragmentSet, Ticket, j_from_json, j_to_json
from gateway.fix.sim.orders import SimExecution, SimOrder


def _ticket(side: str = "buy", commission: str | None = "0.01") -> Ticket:
    return Ticket(ticket_id="T000001", alloc_id="A1", individual_alloc_id="A1-1",
                  account="ACC1", symbol="AAPL", side=side, qty=Decimal(1234),
                  avg_px=Decimal("190.4451"), trade_date="20261120", settl_date="20261123",
                  commission_per_share=None if commission is None else Decimal(commission))


def test_economics_round_money_to_the_cent_and_sign_commission_by_side() -> None:
    buy, sell = _ticket().economics(), _ticket("sell").economics()
    assert buy.gross == Decimal("235009.25")  # 1234 x 190.4451 = 235009.2534
    assert buy.commission == Decimal("12.34")
    assert buy.net_money == Decimal("235021.59")
    assert sell.net_money == Decimal("234996.91")
    bare = _ticket(commission=None).economics()
    assert bare.commission is None and bare.net_money == bare.gross


@pytest.mark.parametrize(("wrong", "field", "value"), [
    ("net_money", "net_money", Decimal("235022.59")),
    ("commission", "commission", Decimal("17.34")),
    ("avg_px", "avg_px", Decimal("190.4551")),
    ("qty", "qty", Decimal(1233)),
    ("settl_date", "settl_date", "2026-11-24"),
])
def test_a_mismatch_gets_exactly_one_field_wrong(wrong: str, field: str, value: object) -> None:
    right, off = _ticket().economics(), _ticket().economics(wrong)
    assert getattr(off, field) == value
    if wrong == "net_money":
        assert (off.gross, off.commission) == (right.gross, right.commission)
    if wrong == "commission":
        assert off.net_money == off.gross + off.commission  # consistent, but not ours


def _j(alloc_id: str, lines: list[tuple[str, str, int]], *, tot: int | None = None,
       last: bool | None = None) -> JReceived:
    return JReceived(alloc_id=alloc_id, alloc_trans_type="0", alloc_type="1",
                     quantity=Decimal(600), avg_px=Decimal("10.5"), symbol="AAPL", side="buy",
                     trade_date="20261120", settl_date="20261123", cl_ord_ids=("B1",),
                     lines=tuple({"account": a, "individual_alloc_id": i, "qty": Decimal(q),
                                  "avg_px": Decimal("10.5")} for a, i, q in lines),
                     tot_no_allocs=tot, last_fragment=last)


def test_a_fragment_set_counts_each_line_once_and_names_what_is_missing() -> None:
    first = _j("A1", [("X", "A1-1", 100), ("Y", "A1-2", 200)], tot=3, last=False)
    fs = FragmentSet(header=first)
    assert fs.add(first)
    assert not fs.add(first)  # a resend of the same fragment
    assert fs.incomplete() == "fragment set incomplete: 2 of 3 lines"
    restored = FragmentSet.from_json(fs.to_json())
    assert restored.add(_j("A1", [("Z", "A1-3", 300)], tot=3, last=True))
    assert restored.incomplete() is None and restored.fragments == 2
    whole = restored.assembled()
    assert [ln["account"] for ln in whole.lines] == ["X", "Y", "Z"] and whole.last_fragment
    restored.add(_j("A1", [("Z", "A1-3", 400)], tot=4, last=True))
    assert "repeated with other economics" in (restored.incomplete() or "")


def test_bookings_tickets_and_js_survive_json() -> None:
    j = _j("A1", [("X", "A1-1", 100), ("Y", None, 500)])  # type: ignore[list-item]
    assert j_from_json(j_to_json(j)) == j
    b = Booking.of(j, number=2)
    assert [ln.individual_alloc_id for ln in b.lines] == ["A1-1", "A1-2"]
    assert Booking.from_json(b.to_json()) == b
    t = _ticket()
    t.confirm_ids.append("CNF1")
    assert Ticket.from_json(t.to_json()) == t


def test_busts_and_corrections_recompute_the_order() -> None:
    order = SimOrder(broker_order_id="BRK1", cl_ord_id="B1", symbol="AAPL", side="buy",
                     qty=Decimal(300), price=None, cum_qty=Decimal(300),
                     notional=Decimal(100 * 10 + 200 * 11), status="2",
                     executions=[SimExecution("X1", Decimal(100), Decimal(10)),
                                 SimExecution("X2", Decimal(200), Decimal(11),
                                              completed_order=True)])
    ex = order.execution("X2")
    order.apply_correction(ex, Decimal(200), Decimal(12))
    ex.latest_exec_id = "X3"
    assert order.execution("X3") is ex and order.avg_px == Decimal("11.333333")
    order.apply_bust(order.execution("X1"))
    assert (order.cum_qty, order.leaves_qty, order.status) == (200, 100, "1")
    assert order.avg_px == 12
    with pytest.raises(ValueError, match="already busted"):
        order.apply_bust(order.execution("X1"))
    assert SimOrder.from_json(order.to_json()).to_json() == order.to_json()
