from __future__ import annotations

from decimal import Decimal as D

import pytest

import engine
from tests.unit.engine.alloc_helpers import account, by_id, qtys, request, rulebook


def excl(rid: str, match: dict[str, list[str]], **kw: object) -> dict[str, object]:
    return {"id": rid, "version": "2", "description": f"Rule {rid}", "kind": "exclude",
            "match": match, **kw}


@pytest.mark.parametrize(("match", "symbol", "code"), [
    ({"symbols": ["MO"]}, "MO", "EXCLUDED_SECURITY"),
    ({"issuers": ["Altria"]}, "MO", "EXCLUDED_ISSUER"),
    ({"sectors": ["Consumer Staples"]}, "MO", "EXCLUDED_SECTOR"),
    ({"countries": ["DE"]}, "ODD", "EXCLUDED_COUNTRY"),
    ({"esg_tags": ["tobacco"]}, "MO", "EXCLUDED_ESG_TAG"),
    ({"esg_tags": ["tobacco"]}, "BTI", "EXCLUDED_ESG_TAG"),  # ADR -> ordinary look-through
    ({"issuers": ["British American Tobacco"]}, "BTI", "EXCLUDED_ISSUER"),
])
def test_exclusions_cite_rule_and_version(match: dict[str, list[str]], symbol: str,
                                          code: str) -> None:
    """An excluded account gets nothing; its reason names rule id, version and cause."""
    rb = rulebook([excl("R1", match, scope={"accounts": ["A"]})])
    d = engine.allocate(request([account("A"), account("B")], 1000, symbol=symbol), rb)
    a = by_id(d)["A"]
    assert a.status == "excluded" and a.qty == 0
    assert (a.reasons[0].rule_id, a.reasons[0].rule_version, a.reasons[0].code) == (
        "R1", "2", code)
    assert "Rule R1" in a.reasons[0].text
    assert qtys(d) == {"B": 1000}


def test_look_through_can_be_switched_off() -> None:
    """Without look-through an ADR is not caught by its ordinary's tag."""
    rb = rulebook([excl("R1", {"esg_tags": ["tobacco"]}, look_through=False)])
    d = engine.allocate(request([account("A")], 10, symbol="BTI"), rb)
    assert qtys(d) == {"A": 10}


def test_book_scope_applies_only_to_that_book() -> None:
    """A mandate restriction binds accounts of its book and no others."""
    rb = rulebook([excl("R1", {"symbols": ["XYZ"]}, scope={"books": ["OTHER"]})])
    d = engine.allocate(request([account("A"), account("B", book="OTHER")], 1000), rb)
    assert by_id(d)["B"].status == "excluded" and qtys(d) == {"A": 1000}


@pytest.mark.parametrize("status", ["closed", "frozen", "do_not_trade"])
def test_inactive_accounts_are_excluded(status: str) -> None:
    """Closed, frozen and do-not-trade accounts receive nothing, with a status reason."""
    d = engine.allocate(request([account("A", status=status), account("B")], 500), rulebook())
    assert by_id(d)["A"].reasons[0].code == f"ACCOUNT_{status.upper()}"
    assert qtys(d) == {"B": 500}


def test_issuer_cap_clips_and_excess_is_redistributed() -> None:
    """A 1% cap on 1,000,000 NAV at 10 with 500 held leaves 500 shares; the rest moves on."""
    rb = rulebook([{"id": "CAP1", "version": "4", "description": "Issuer cap", "kind":
                    "issuer_cap", "max_pct_nav": 1, "scope": {"accounts": ["A"]}}])
    accts = [account("A", nav=D(1_000_000), positions={"XYZ": D(500)}), account("B")]
    d = engine.allocate(request(accts, 2000), rb)
    assert qtys(d) == {"A": 500, "B": 1500}
    a = by_id(d)["A"]
    assert a.status == "capped" and a.reasons[0].rule_id == "CAP1"
    assert "1% of NAV" in a.reasons[0].text


def test_issuer_cap_counts_related_instruments() -> None:
    """Holdings of an ADR count against the cap of its underlying issuer."""
    rb = rulebook([{"id": "CAP", "version": "1", "description": "cap", "kind": "issuer_cap",
                    "max_pct_nav": "10"}])
    # 10% of 10,000 = 1,000; 20 BTI at 35 = 700 already -> room 300 at 28 -> 10 shares.
    accts = [account("A", nav=D(10_000), positions={"BTI": D(20)}), account("B")]
    d = engine.allocate(request(accts, 100, symbol="BATS.L", px="28"), rb)
    assert qtys(d)["A"] == 10


def test_buying_power_clips_buys() -> None:
    """Cash of 2,050 at 10 allows 205 shares: clipped to 200 in lots of 100."""
    accts = [account("A", cash=D(2050)), account("B")]
    d = engine.allocate(request(accts, 1000), rulebook())
    assert qtys(d) == {"A": 200, "B": 800}
    assert by_id(d)["A"].reasons[0].rule_id == "SYS-BUYING-POWER"


def test_sells_are_clipped_to_holdings_never_short() -> None:
    """A sell never exceeds the position; an account with none is excluded."""
    accts = [account("A", positions={"XYZ": D(300)}), account("B", positions={"XYZ": D(5000)}),
             account("C")]
    d = engine.allocate(request(accts, 2000, side=engine.Side.SELL), rulebook())
    assert qtys(d) == {"A": 300, "B": 1700}
    assert by_id(d)["A"].status == "capped"
    assert by_id(d)["C"].status == "excluded"
    assert by_id(d)["C"].reasons[0].code == "HOLDINGS"


def test_side_restrictions_long_only_and_no_buy_list() -> None:
    """Long-only forbids short sales; a no-buy list forbids buys of the listed issuer only."""
    rb = rulebook([
        {"id": "LONG", "version": "1", "description": "Long only", "kind": "side",
         "forbid": ["sell_short"]},
        {"id": "NOBUY", "version": "1", "description": "No buys of Altria", "kind": "side",
         "forbid": ["buy"], "match": {"issuers": ["Altria"]}, "scope": {"accounts": ["A"]}},
    ])
    short = engine.allocate(request([account("A")], 100, side=engine.Side.SELL_SHORT), rb)
    assert by_id(short)["A"].reasons[0].code == "SIDE_FORBIDDEN"
    assert short.unallocated_qty == 100 and "no account is eligible" in short.unallocated_reason
    mo = engine.allocate(request([account("A"), account("B")], 200, symbol="MO"), rb)
    assert qtys(mo) == {"B": 200}
    xyz = engine.allocate(request([account("A"), account("B")], 200), rb)
    assert qtys(xyz) == {"A": 100, "B": 100}


def test_minimum_allocation_drops_and_reruns() -> None:
    """An account under its minimum is dropped and its share goes to the others."""
    rb = rulebook([{"id": "MIN", "version": "1", "description": "Minimum ticket", "kind":
                    "min_allocation", "min_qty": 500}])
    accts = [account("A", intended_qty=D(9000)), account("B", intended_qty=D(1200)),
             account("C", intended_qty=D(400))]
    d = engine.allocate(request(accts, 5000), rb)
    # First pass: 4,300 / 500 / 200 -> C is under 500 and dropped; the re-run over A and
    # B gives 4,400 / 600 (B takes the left-over lot by largest remainder).
    assert qtys(d) == {"A": 4400, "B": 600}
    assert by_id(d)["C"].status == "dropped" and by_id(d)["C"].reasons[0].code == "BELOW_MINIMUM"
    assert d.method_params["min_allocation_rerun_dropped"] == ["C"]


def test_minimum_notional() -> None:
    """A notional minimum of 3,000 at price 10 drops a 200-share allocation."""
    rb = rulebook([{"id": "MINN", "version": "1", "description": "Min notional", "kind":
                    "min_allocation", "min_notional": "3000"}])
    accts = [account("A", intended_qty=D(800)), account("B", intended_qty=D(200))]
    d = engine.allocate(request(accts, 1000), rb)
    assert qtys(d) == {"A": 1000} and by_id(d)["B"].status == "dropped"


def test_custom_cel_rule_excludes_matching_accounts() -> None:
    """A CEL rule over account and security attributes excludes only where it holds."""
    rb = rulebook([{"id": "CEL1", "version": "7", "description": "No tech for DIV",
                    "kind": "cel", "exclude_when":
                    "account.strategy == 'DIV' && security.sector == 'Technology'"}])
    d = engine.allocate(request([account("A", strategy="DIV"), account("B")], 300), rb)
    assert qtys(d) == {"B": 300}
    r = by_id(d)["A"].reasons[0]
    assert (r.rule_id, r.rule_version, r.code) == ("CEL1", "7", "CUSTOM_RULE")
    mo = engine.allocate(request([account("A", strategy="DIV")], 300, symbol="MO"), rb)
    assert qtys(mo) == {"A": 300}


@pytest.mark.parametrize("expr", [
    "account.nav / account.position > 1",             # division by zero: no position
    "account.nav * 9223372036854775807 > 0",           # integer overflow
    "security.esg_tags[5] == 'x'",                     # index out of range
])
def test_custom_rule_that_fails_at_runtime_fails_closed(expr: str) -> None:
    """A well-typed CEL rule that fails on an account's values excludes it and says why
    (whatever the runtime raises: a division by zero or an overflow used to escape)."""
    rb = rulebook([{"id": "BAD", "version": "1", "description": "d", "kind": "cel",
                    "exclude_when": expr}])
    d = engine.allocate(request([account("A")], 100), rb)
    r = by_id(d)["A"].reasons[0]
    assert (r.rule_id, r.code) == ("BAD", "CUSTOM_RULE_ERROR")
    assert d.unallocated_qty == 100 and "BAD (version 1)" in d.unallocated_reason


def test_pre_trade_eligibility_uses_the_same_rules() -> None:
    """evaluate_eligibility excludes the same accounts and reports caps."""
    rb = rulebook([excl("R1", {"esg_tags": ["tobacco"]}, scope={"accounts": ["A"]})])
    accts = [account("A"), account("B", cash=D(450)), account("C", status="frozen")]
    report = engine.evaluate_eligibility(
        engine.OrderIntent("BLK", "BTI", engine.Side.BUY, D(100), D("45")), accts,
        request(accts, 1).securities, rb)
    assert report.eligible == ("B",)
    assert [r.account_id for r in report.excluded] == ["A", "C"]
    assert report.caps["B"] == D(10)
    assert report.rulebook_version == rb.version


@pytest.mark.parametrize(("restriction", "path"), [
    ({"id": "X", "version": "1", "description": "d", "kind": "issuer_cap"}, "max_pct_nav"),
    ({"id": "X", "version": "1", "description": "d", "kind": "exclude"}, "match"),
    ({"id": "X", "version": "1", "description": "d", "kind": "side", "forbid": ["hold"]},
     "forbid[0]"),
    ({"id": "X", "version": "1", "description": "d", "kind": "cel", "exclude_when": "a &&"},
     "exclude_when"),
    ({"id": "X", "version": "1", "kind": "side", "forbid": ["buy"]}, "description"),
    ({"id": "X", "version": "1", "description": "d", "kind": "side", "forbid": ["buy"],
      "colour": "red"}, "colour"),
])
def test_rulebook_validation_names_the_path(restriction: dict[str, object], path: str) -> None:
    """Invalid restrictions are refused with a path like restrictions[0].max_pct_nav."""
    with pytest.raises(engine.RulebookError) as err:
        rulebook([restriction])
    assert err.value.path == f"restrictions[0].{path}"


def test_rulebook_version_is_content_hash() -> None:
    """Same content gives the same version; any change gives another."""
    a = rulebook([excl("R1", {"symbols": ["XYZ"]})])
    b = rulebook([excl("R1", {"symbols": ["XYZ"]})])
    c = rulebook([excl("R1", {"symbols": ["XYZ", "MO"]})])
    assert a.version == b.version != c.version
