"""engine.split when caps leave no room: the odd part, the whole lots nobody can take.

Worked examples with the arithmetic in each docstring (FIX_ALLOCATION §4.3 rules 1, 4, 5).
Lot 100 throughout; equal weights.
"""

from __future__ import annotations

from engine.split import Entry, split


def test_every_account_clipped_the_odd_part_goes_first_in_tie_break_order_with_room() -> None:
    """1,050 over three accounts with caps C 130, A 250, B 350 (shares 350 each): clipped in
    turn to whole lots C 100, A 200, B 300, leaving 450: four whole lots nobody can take and
    an odd 50. In tie-break order B, C, A: B has exactly room for it (300 + 50 = 350)."""
    entries = [Entry("A", 1, 250), Entry("B", 1, 350), Entry("C", 1, 130)]
    res = split(1050, 100, entries, {"B": 0, "C": 1, "A": 2})
    assert res.alloc == {"A": 200, "B": 350, "C": 100}
    assert res.clipped == {"A", "B", "C"} and res.held == set()
    assert res.odd_lot == "B" and res.leftover == 400
    assert sum(res.alloc.values()) + res.leftover == 1050


def test_the_odd_part_passes_over_an_account_whose_cap_it_would_exceed() -> None:
    """As above but B's cap is 340: 300 + 50 would pass it, C's 100 + 50 would pass 130,
    so the odd 50 goes to A (200 + 50 = 250, exactly its cap)."""
    entries = [Entry("A", 1, 250), Entry("B", 1, 340), Entry("C", 1, 130)]
    res = split(1050, 100, entries, {"B": 0, "C": 1, "A": 2})
    assert res.alloc == {"A": 250, "B": 300, "C": 100}
    assert res.odd_lot == "A" and res.leftover == 400


def test_caps_in_whole_lots_leave_the_odd_part_unallocated() -> None:
    """Caps A 200, B 300, C 100 are whole lots: after the clips 450 is left, and no account
    has room for the odd 50 either, so all 450 are left over and nobody has the odd lot."""
    entries = [Entry("A", 1, 200), Entry("B", 1, 300), Entry("C", 1, 100)]
    res = split(1050, 100, entries, {"A": 0, "B": 1, "C": 2})
    assert res.alloc == {"A": 200, "B": 300, "C": 100}
    assert res.odd_lot is None and res.leftover == 450


def test_unclipped_accounts_without_room_for_the_odd_part_are_held() -> None:
    """650 over A and B with caps 330: shares 325 fit under the caps (no clip), floors 300
    each, and the odd 50 fits neither (350 > 330). Both are held by their caps; 50 is left."""
    entries = [Entry("A", 1, 330), Entry("B", 1, 330)]
    res = split(650, 100, entries, {"A": 0, "B": 1})
    assert res.alloc == {"A": 300, "B": 300}
    assert res.clipped == set() and res.held == {"A", "B"}
    assert res.odd_lot is None and res.leftover == 50
