"""Busts and corrections in the fill ledger, and an AK matched against our line."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from gateway.config import ConfirmTolerance
from gateway.fix.confirm_codec import ConfirmationFields
from gateway.ledger import FillLedger
from gateway.posttrade.confirmations import match

D = Decimal


def _ledger() -> FillLedger:
    ledger = FillLedger()
    for exec_id, qty, px in (("X1", 3000, "100.00"), ("X2", 1000, "100.25"),
                             ("X3", 3000, "100.00"), ("X4", 2000, "100.50")):
        ledger.apply_fill(exec_id, D(qty), D(px))
    return ledger


def test_fix_spec_average_price_then_a_bust() -> None:
    ledger = _ledger()
    assert (ledger.cum_qty, ledger.avg_px) == (D(9000), D("100.1389"))  # FIX 4.4 §4.2
    assert ledger.bust("X4", "X4-BUST") is True
    assert (ledger.cum_qty, ledger.avg_px) == (D(7000), D("100.0357"))
    assert ledger.changed_by_correction is True


def test_a_correction_of_a_correction_applies_to_the_same_fill() -> None:
    ledger = _ledger()
    assert ledger.correct("X2", "X2-C1", D(1000), D("100.20"))
    # The second correction names the first correction's ExecID, not the original fill's.
    assert ledger.correct("X2-C1", "X2-C2", D(500), D("100.20"))
    assert [f for f in ledger.fills if f[0] == "X2"] == [("X2", D(500), D("100.20"))]
    assert ledger.cum_qty == D(8500)
    # A bust of the chain's latest ExecID removes that one fill.
    assert ledger.bust("X2-C2", "X2-B")
    assert ledger.cum_qty == D(8000) and all(f[0] != "X2" for f in ledger.fills)


def test_a_correction_of_an_unknown_fill_changes_nothing() -> None:
    ledger = _ledger()
    assert ledger.correct("NOPE", "N1", D(1), D(1)) is False
    assert ledger.bust("NOPE", "N2") is False
    assert ledger.cum_qty == D(9000) and ledger.changed_by_correction is False


LINE = {"account_id": "SMA0001", "qty": "3000", "avg_px": "100.1389",
        "individual_alloc_id": "A-J1-00001", "alloc_id": "A-J1"}
ALLOC = {"trade_date": "2026-11-20", "settl_date": "2026-11-23"}


def _ak(**kw: object) -> ConfirmationFields:
    base: dict[str, object] = dict(
        confirm_id="C1", confirm_ref_id=None, confirm_req_id=None, trans_type="0",
        confirm_type="2", confirm_status="4", copy=False, alloc_id="A-J1",
        individual_alloc_id="A-J1-00001", account="SMA0001", qty=D(3000), side="buy",
        avg_px=D("100.1389"), gross=D("300416.70"), net_money=D("300416.70"),
        commission=None, trade_date="2026-11-20", settl_date="2026-11-23", text=None)
    base.update(kw)
    return ConfirmationFields(**base)  # type: ignore[arg-type]


def test_an_ak_with_our_economics_matches() -> None:
    assert match(LINE, ALLOC, _ak(), "buy", ConfirmTolerance()) == {}


def test_each_field_out_of_tolerance_is_named() -> None:
    tolerance = ConfirmTolerance()
    assert match(LINE, ALLOC, _ak(net_money=D("300416.72")), "buy", tolerance) == {
        "net_money": ["300416.70", "300416.72"]}
    assert match(LINE, ALLOC, _ak(net_money=D("300416.71")), "buy", tolerance) == {}
    assert set(match(LINE, ALLOC, _ak(account="SMA0002", qty=D(2900), side="sell",
                                      settl_date="2026-11-24"), "buy", tolerance)) == {
        "account", "qty", "side", "settl_date"}
    assert match(LINE, ALLOC, _ak(commission=D("15.00")), "buy", tolerance) == {
        "commission": ["0", "15.00"]}
    loose = SimpleNamespace(price=D("0.01"), money=D("5"), commission=D("20"))
    assert match(LINE, ALLOC, _ak(avg_px=D("100.14"), commission=D("15.00")), "buy",
                 loose) == {}


def test_the_brokers_agreed_commission_is_expected_on_the_ak() -> None:
    """3,000 shares at 0.0125 a share: 37.50 of commission; net 300,454.20 on a buy."""
    tolerance, rate = ConfirmTolerance(), D("0.0125")
    expected = _ak(commission=D("37.50"), net_money=D("300454.20"))
    assert match(LINE, ALLOC, expected, "buy", tolerance, rate) == {}
    # Without the agreed rate, the same AK is a commission and a net money mismatch.
    assert set(match(LINE, ALLOC, expected, "buy", tolerance)) == {"commission",
                                                                    "net_money"}
    # On a sell, the commission comes off the gross.
    sell = _ak(side="sell", commission=D("37.50"), net_money=D("300379.20"))
    assert match(LINE, ALLOC, sell, "sell", tolerance, rate) == {}
    assert match(LINE, ALLOC, _ak(commission=D("42.50"), net_money=D("300459.20")), "buy",
                 tolerance, rate) == {"commission": ["37.50", "42.50"],
                                      "net_money": ["300454.20", "300459.20"]}

