from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

import engine
from tests.unit.engine.alloc_helpers import account, by_id, qtys, request, rulebook


def scheme(method: str, **kw: object) -> engine.Rulebook:
    return rulebook(schemes={"default": {"method": method, **kw}})


def test_pari_passu_splits_by_nav() -> None:
    """NAVs 3:1 split 4,000 shares 3,000 / 1,000."""
    accts = [account("A", nav=D(30_000_000)), account("B", nav=D(10_000_000))]
    d = engine.allocate(request(accts, 4000), scheme("pari_passu"))
    assert qtys(d) == {"A": 3000, "B": 1000} and d.method == "pari_passu"


def test_target_weight_splits_by_shortfall() -> None:
    """Shortfalls of 3,000 and 1,000 shares (and one at target) split 2,000 as 1,500/500."""
    # target 10% of 1,000,000 at 10 = 10,000 shares.
    accts = [account("A", nav=D(1_000_000), target_weight=D("0.1"), positions={"XYZ": D(7000)}),
             account("B", nav=D(1_000_000), target_weight=D("0.1"), positions={"XYZ": D(9000)}),
             account("C", nav=D(1_000_000), target_weight=D("0.1"),
                     positions={"XYZ": D(10000)})]
    d = engine.allocate(request(accts, 2000), scheme("target_weight"))
    assert qtys(d) == {"A": 1500, "B": 500}
    assert by_id(d)["C"].status == "not_participating"


def test_equal_split() -> None:
    """Equal: 1,000 over four accounts in lots of 100 gives 300/300/200/200 by account id."""
    accts = [account(x) for x in "DCBA"]
    d = engine.allocate(request(accts, 1000), scheme("equal"))
    assert qtys(d) == {"A": 300, "B": 300, "C": 200, "D": 200}


def test_tiered_fills_tier_one_first() -> None:
    """Tier 1 takes its demand in full before tier 2 gets the rest, pro rata within tier."""
    accts = [account("F1", tier=1, intended_qty=D(3000)),
             account("S1", tier=2, intended_qty=D(3000)),
             account("S2", tier=2, intended_qty=D(1000))]
    d = engine.allocate(request(accts, 5000), scheme("tiered", sub_method="pro_rata"))
    assert qtys(d) == {"F1": 3000, "S1": 1500, "S2": 500}
    partial = engine.allocate(request(accts, 2000), scheme("tiered"))
    assert qtys(partial) == {"F1": 2000}


def test_manual_preallocation_prorated_on_partial_fill() -> None:
    """Pre-allocations 6,000/2,000 on a 4,000 fill give 3,000/1,000; others sit out."""
    accts = [account("A"), account("B"), account("C")]
    d = engine.allocate(request(accts, 4000, preallocations={"A": D(6000), "B": D(2000)},
                                preallocation_reason="PM instruction 42"), rulebook())
    assert qtys(d) == {"A": 3000, "B": 1000}
    assert d.method == "manual" and d.method_params["preallocation_reason"] == "PM instruction 42"
    assert by_id(d)["C"].status == "not_participating"


def test_manual_without_reason_is_refused() -> None:
    """A pre-allocation with no reason is an input error."""
    with pytest.raises(engine.AllocationError, match="reason"):
        engine.allocate(request([account("A")], 100, preallocations={"A": D(100)}), rulebook())


def test_fallback_when_method_has_no_participants() -> None:
    """pro_rata with no intended quantities falls back to pari passu and says so."""
    accts = [account("A", intended_qty=None, nav=D(3)), account("B", intended_qty=None,
                                                              nav=D(1))]
    d = engine.allocate(request(accts, 400), scheme("pro_rata", fallback=["pari_passu"]))
    assert d.method == "pari_passu" and qtys(d) == {"A": 300, "B": 100}
    assert d.method_params["methods_tried_without_participants"] == ["pro_rata"]


def test_request_method_override() -> None:
    """The request may override the scheme's method."""
    accts = [account("A", intended_qty=D(900)), account("B", intended_qty=D(100))]
    d = engine.allocate(request(accts, 200, method="equal"), rulebook())
    assert qtys(d) == {"A": 100, "B": 100}


def test_odd_lot_with_lot_size_one_security_has_no_odd_lot() -> None:
    """With lot size 1 every share is a whole lot; largest remainder hands out the rest."""
    accts = [account("A", intended_qty=D(1)), account("B", intended_qty=D(1)),
             account("C", intended_qty=D(1))]
    d = engine.allocate(request(accts, 10, symbol="ODD", px="5"), rulebook())
    assert qtys(d) == {"A": 4, "B": 3, "C": 3}
    assert d.method_params["odd_lot_account"] is None


def test_all_capped_leaves_an_explained_residual() -> None:
    """When every account is at its cap, the rest is unallocated with the reason."""
    accts = [account("A", cash=D(1000)), account("B", cash=D(1000))]
    d = engine.allocate(request(accts, 1000), rulebook())
    assert qtys(d) == {"A": 100, "B": 100}
    assert d.unallocated_qty == 800 and "cap" in d.unallocated_reason
    engine.check_decision(d)


LOTS = (
    engine.TaxLot("L1", D(100), D("5"), dt.date(2020, 1, 2)),    # big long-term gain
    engine.TaxLot("L2", D(100), D("12"), dt.date(2023, 3, 1)),   # loss
    engine.TaxLot("L3", D(100), D("9"), dt.date(2024, 1, 10)),   # short-term gain
    engine.TaxLot("L4", D(100), D("8"), dt.date(2022, 1, 10)),   # long-term gain
)


@pytest.mark.parametrize(("relief", "expected"), [
    ("fifo", ["L1", "L4"]),
    ("lifo", ["L3", "L2"]),
    ("hifo", ["L2", "L3"]),
    ("min_tax", ["L2", "L4"]),
])
def test_tax_lot_relief_methods(relief: str, expected: list[str]) -> None:
    """Each relief method picks its lots and records them on the line."""
    a = account("A", lots={"XYZ": LOTS}, positions={"XYZ": D(400)})
    d = engine.allocate(request([a], 200, side=engine.Side.SELL),
                        scheme("pro_rata", lot_relief=relief, avoid_wash_sales=False))
    line = d.lines[0]
    assert [lot.lot_id for lot in line.lots] == expected
    assert sum(lot.quantity for lot in line.lots) == line.qty
    assert line.lots[0].realized_gain == (D(10) - line.lots[0].cost_per_share) * 100


def test_wash_sale_avoidance_defers_loss_lots() -> None:
    """After a purchase within 30 days, HIFO relieves gain lots before the loss lot."""
    recent = engine.TaxLot("R1", D(100), D("9.5"), dt.date(2024, 5, 20))
    lots = (*LOTS, recent)
    a = account("A", lots={"XYZ": lots}, positions={"XYZ": D(500)})
    d = engine.allocate(request([a], 200, side=engine.Side.SELL),
                        scheme("pro_rata", lot_relief="hifo"))
    ids = [lot.lot_id for lot in d.lines[0].lots]
    assert "L2" not in ids and ids == ["R1", "L3"]
    assert "wash-sale" in by_id(d)["A"].rounding
