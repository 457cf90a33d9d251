"""Every method reports a cap the same way: status `capped`, citing the rule that bound.

Worked examples, one per method. An account is capped when its cap decided its quantity:
its share exceeded the cap (clipped), its cap left no room for a left-over lot or the odd
lot it was next in line for (held), or, under tiered sequencing, the cap cut its demand and
it got that demand.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

import engine
from engine import rounds
from engine.executor import InProcessPartitions
from tests.unit.engine.alloc_helpers import account, by_id, qtys, request, rulebook

METHODS = ["pro_rata", "pari_passu", "target_weight", "equal", "manual", "tiered"]


def scheme(method: str, restrictions: tuple[dict[str, Any], ...] = (), **kw: Any
           ) -> engine.Rulebook:
    return rulebook(restrictions, schemes={"default": {"method": method, **kw}})


def block(method: str, accts: list[engine.Account], qty: int, **kw: Any
          ) -> engine.AllocationRequest:
    if method == "manual":
        kw |= {"preallocations": {a.account_id: D(1000) for a in accts},
               "preallocation_reason": "PM ticket 7"}
    return request(accts, qty, **kw)


def both_paths(req: engine.AllocationRequest, rb: engine.Rulebook
               ) -> engine.AllocationDecision:
    """The decision, after checking that the partitioned path, and its serial fallback
    (taken after a long cascade of caps), give the same bytes."""
    d = engine.allocate(req, rb)
    expected = d.to_canonical_json()
    assert engine.allocate(req, rb, InProcessPartitions(2)).to_canonical_json() == expected
    saved = rounds.MAX_CLIP_ROUNDS
    rounds.MAX_CLIP_ROUNDS = 0  # every flat split goes serial
    try:
        assert engine.allocate(req, rb, InProcessPartitions(2)).to_canonical_json() == expected
    finally:
        rounds.MAX_CLIP_ROUNDS = saved
    return d


def assert_capped(d: engine.AllocationDecision, aid: str, rule_id: str, code: str) -> None:
    r = by_id(d)[aid]
    assert r.status == "capped", (r.status, r.reasons)
    assert [(x.rule_id, x.code) for x in r.reasons] == [(rule_id, code)]
    assert "every restriction that applies was passed" not in r.reasons[0].text


@pytest.mark.parametrize("method", METHODS)
def test_a_left_over_lot_held_back_by_buying_power_is_a_cap(method: str) -> None:
    """400 shares over three equal accounts: 133⅓ each, 100 each in lots and one lot left.
    A is first in line for it, but its cash buys 150 shares, so B takes it: A is capped by
    buying power, under every method."""
    accts = [account(x, target_weight=D("0.1"), **({"cash": D(1500)} if x == "A" else {}))
             for x in "ABC"]
    d = both_paths(block(method, accts, 400), scheme(method))
    assert qtys(d) == {"A": 100, "B": 200, "C": 100}
    assert_capped(d, "A", "SYS-BUYING-POWER", "BUYING_POWER")
    assert by_id(d)["B"].status == by_id(d)["C"].status == "allocated"


@pytest.mark.parametrize("method", METHODS)
def test_a_share_above_the_cap_is_clipped_under_every_method(method: str) -> None:
    """900 over three equal accounts; A's cash buys 120 shares: it gets 100 and is capped."""
    accts = [account(x, target_weight=D("0.1"), **({"cash": D(1200)} if x == "A" else {}))
             for x in "ABC"]
    d = both_paths(block(method, accts, 900), scheme(method))
    assert qtys(d) == {"A": 100, "B": 400, "C": 400}
    assert_capped(d, "A", "SYS-BUYING-POWER", "BUYING_POWER")


def test_the_odd_lot_held_back_by_the_cap_is_a_cap() -> None:
    """250 over two equal accounts: 125 each, 100 each in lots and an odd 50. A is first in
    line for the odd lot but its cash buys 140 shares; B takes it and A is capped."""
    accts = [account("A", cash=D(1400)), account("B")]
    d = both_paths(request(accts, 250), rulebook())
    assert qtys(d) == {"A": 100, "B": 150}
    assert d.method_params["odd_lot_account"] == "B"
    assert_capped(d, "A", "SYS-BUYING-POWER", "BUYING_POWER")
    assert "no room under its cap" in by_id(d)["A"].rounding


CAP3 = {"id": "ISSUER-3", "version": "2", "description": "Issuer cap", "kind": "issuer_cap",
        "max_pct_nav": 3, "scope": {"accounts": ["F1"]}}


@pytest.mark.parametrize(("side", "cut", "restrictions", "rule_id", "code"), [
    # Cash of 5,000 at 10 buys 500 shares.
    (engine.Side.BUY, {"cash": D(5000)}, (), "SYS-BUYING-POWER", "BUYING_POWER"),
    # 3% of NAV 200,000 at 10 leaves room for 600 shares.
    (engine.Side.BUY, {"nav": D(200_000)}, (CAP3,), "ISSUER-3", "ISSUER_CAP"),
    # A sell is clipped to the 700 shares held.
    (engine.Side.SELL, {"positions": {"XYZ": D(700)}}, (), "SYS-HOLDINGS", "HOLDINGS"),
])
def test_tiered_reports_a_cut_demand_as_capped(side: engine.Side, cut: dict[str, Any],
                                               restrictions: tuple[dict[str, Any], ...],
                                               rule_id: str, code: str) -> None:
    """Tier 1 wants 1,000 but its cap allows less: it gets exactly its cap, the rest flows
    to tier 2, and it is reported capped with the rule (pro rata reports it the same way)."""
    accts = [account("F1", tier=1, **cut),
             account("S1", tier=2, positions={"XYZ": D(5000)})]
    for method in ("tiered", "pro_rata"):
        d = both_paths(request(accts, 1500, side=side),
                       scheme(method, restrictions, sub_method="pro_rata"))
        assert_capped(d, "F1", rule_id, code)
        assert by_id(d)["S1"].status == "allocated"
    tiered = engine.allocate(request(accts, 1500, side=side),
                             scheme("tiered", restrictions, sub_method="pro_rata"))
    assert sum(qtys(tiered).values()) == 1500 and qtys(tiered)["F1"] < 1000


def test_unallocated_shares_name_the_rule_that_kept_them() -> None:
    """Whole lots nobody can take stay unallocated; the reason names the binding rules."""
    rb = rulebook([{"id": "CAP-1", "version": "4", "description": "Issuer cap",
                    "kind": "issuer_cap", "max_pct_nav": 1, "scope": {"accounts": ["C"]}}])
    accts = [account("A", cash=D(1000)), account("B", cash=D(1550)),
             account("C", nav=D(200_000))]
    d = both_paths(request(accts, 1000), rb)
    assert qtys(d) == {"A": 100, "B": 100, "C": 200}
    assert d.unallocated_qty == 600
    assert d.unallocated_reason == (
        "every eligible account is at its cap; the remaining 600 shares cannot be placed "
        "without breaking CAP-1 (version 4): 1 account, SYS-BUYING-POWER (version engine-1): "
        "2 accounts")
    for x in "ABC":
        assert by_id(d)[x].status == "capped"


def test_nobody_eligible_names_the_exclusions_and_survives_a_rotation() -> None:
    """With no eligible account the reason names the excluding rules (a rotation tie-break
    used to divide by the number of eligible accounts, zero)."""
    rb = rulebook([{"id": "NO-XYZ", "version": "1", "description": "No XYZ",
                    "kind": "exclude", "match": {"symbols": ["XYZ"]},
                    "scope": {"accounts": ["B"]}}],
                  schemes={"default": {"method": "pro_rata", "tie_break": "rotation"}})
    accts = [account("A", status="frozen"), account("B")]
    d = both_paths(request(accts, 300, rotation_offset=5), rb)
    assert d.unallocated_qty == 300
    assert d.unallocated_reason == (
        "no account is eligible: every account was excluded by a restriction (NO-XYZ "
        "(version 1): 1 account, SYS-STATUS (version engine-1): 1 account)")
