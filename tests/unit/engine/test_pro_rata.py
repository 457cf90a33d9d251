from __future__ import annotations

from decimal import Decimal

import engine
from tests.unit.engine.alloc_helpers import account, by_id, qtys, request, rulebook


def test_fix_allocation_4_3_worked_example() -> None:
    """9,950 shares over targets 5,000/4,500/3,000, lot 100, gives 3,950/3,600/2,400."""
    accts = [account("A", intended_qty=Decimal(5000)), account("B", intended_qty=Decimal(4500)),
             account("C", intended_qty=Decimal(3000))]
    d = engine.allocate(request(accts, 9950), rulebook())
    assert qtys(d) == {"A": 3950, "B": 3600, "C": 2400}
    assert d.method == "pro_rata"
    assert d.method_params["odd_lot_account"] == "A"
    res = by_id(d)
    assert "odd lot" in res["A"].rounding
    assert "+1 lot" in res["B"].rounding and "+1 lot" in res["C"].rounding
    assert "+1 lot" not in res["A"].rounding
    assert d.allocated_qty == d.executed_qty == Decimal(9950)


def test_full_fill_gives_every_account_its_intended_quantity() -> None:
    """A complete fill of lot-aligned intentions reproduces them exactly."""
    accts = [account(f"S{i}", intended_qty=Decimal(100 * i)) for i in range(1, 6)]
    d = engine.allocate(request(accts, 1500), rulebook())
    assert qtys(d) == {f"S{i}": 100 * i for i in range(1, 6)}


def test_ties_are_broken_by_account_id() -> None:
    """Equal remainders: the extra lot goes to the lowest account id."""
    accts = [account(x, intended_qty=Decimal(100)) for x in ("C", "A", "B")]
    d = engine.allocate(request(accts, 200), rulebook())
    assert qtys(d) == {"A": 100, "B": 100}
    assert by_id(d)["C"].status == "dropped"
    assert by_id(d)["C"].reasons[0].code == "ROUNDED_TO_ZERO"


def test_rotation_tie_break_moves_with_the_offset() -> None:
    """With rotation, the offset decides which tied account gets the extra lot."""
    rb = rulebook(schemes={"default": {"method": "pro_rata", "tie_break": "rotation"}})
    accts = [account(x, intended_qty=Decimal(100)) for x in ("A", "B", "C")]
    winners = []
    for offset in range(3):
        d = engine.allocate(request(accts, 100, rotation_offset=offset), rb)
        winners.append(next(iter(qtys(d))))
    assert winners == ["A", "B", "C"]


def test_canonical_json_is_byte_identical_for_same_inputs() -> None:
    """Two runs over the same inputs and rulebook serialise to the same bytes."""
    accts = [account(f"S{i}", intended_qty=Decimal(700 + i)) for i in range(7)]
    a = engine.allocate(request(accts, 4321), rulebook()).to_canonical_json()
    b = engine.allocate(request(list(reversed(accts)), 4321), rulebook()).to_canonical_json()
    assert a == b
    assert '"executed_qty":"4321"' in a
