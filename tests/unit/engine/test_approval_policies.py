"""Approval policies: validated and type-checked with the rulebook, evaluated on a
decision's facts, failing closed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import Rulebook
from engine.approval_policies import FACTS, evaluate, parse
from engine.errors import RulebookError


def facts(**over: Any) -> dict[str, dict[str, Any]]:
    base: dict[str, dict[str, Any]] = {
        "decision": {"method": "pro_rata", "manual": False, "preallocated": False,
                     "accounts": 200, "excluded": 0, "capped": 0, "allocated_qty": 10_000,
                     "notional": 1_900_000, "max_fill_rate_dev_bps": 3,
                     "rulebook_version": "r1", "refdata_version": "v1"},
        "order": {"book": "SMA-CORE", "symbol": "AAPL", "side": "buy", "broker": "BRKA",
                  "qty": 10_000, "trader": "OMS1"},
        "history": {"rulebook_used_before_today": True, "refdata_used_before_today": True,
                    "usual_qty": 10_000, "size_vs_usual_pct": 100},
    }
    for dotted, value in over.items():
        group, _, name = dotted.partition("__")
        base[group][name] = value
    return base


def policy(when: str, **extra: Any) -> dict[str, Any]:
    return {"id": "P1", "version": "1", "description": "test", "when": when,
            "approvers": {"role": "pm", "count": 1}, **extra}


# Each condition kind the product documents, with a worked example that holds and one
# that does not.
KINDS = [
    ("decision.manual || decision.preallocated",
     {"decision__manual": True}, {}),
    ("decision.excluded > 0 || decision.capped > 0",
     {"decision__capped": 2}, {}),
    ("decision.max_fill_rate_dev_bps > 50",
     {"decision__max_fill_rate_dev_bps": 51}, {"decision__max_fill_rate_dev_bps": 50}),
    ("decision.notional > 5000000",
     {"decision__notional": 5_000_001}, {"decision__notional": 5_000_000}),
    ("!history.rulebook_used_before_today || !history.refdata_used_before_today",
     {"history__refdata_used_before_today": False}, {}),
    ("history.usual_qty > 0 && history.size_vs_usual_pct > 300",
     {"history__size_vs_usual_pct": 450}, {"history__usual_qty": 0,
                                           "history__size_vs_usual_pct": 0}),
    ("order.book == 'SMA-CORE' && order.side == 'sell'",
     {"order__side": "sell"}, {}),
]


@pytest.mark.parametrize(("when", "holding", "passing"), KINDS)
def test_each_condition_kind_holds_what_it_says(when: str, holding: dict[str, Any],
                                                passing: dict[str, Any]) -> None:
    (p,) = parse([policy(when)])
    assert [m.policy.id for m in evaluate([p], facts(**holding))] == ["P1"]
    assert evaluate([p], facts(**passing)) == []


@pytest.mark.parametrize(("raw", "path", "says"), [
    (policy("decision.notionl > 5"), "approval_policies[0].when", "notionl"),
    (policy("decision.notional > 'big'"), "approval_policies[0].when", "type"),
    (policy("decision.notional"), "approval_policies[0].when", "not a boolean"),
    (policy("decision.notional >"), "approval_policies[0].when", "invalid expression"),
    (policy("true", approvers={"role": "boss"}), "approval_policies[0].approvers.role",
     "must be one of"),
    (policy("true", approvers={"role": "pm", "count": 3}),
     "approval_policies[0].approvers.count", "four-eyes"),
    (policy("true", escalate={"after_minutes": 0, "role": "compliance"}),
     "approval_policies[0].escalate.after_minutes", "at least 1"),
    ({**policy("true"), "colour": "red"}, "approval_policies[0].colour", "unknown key"),
])
def test_a_bad_policy_is_refused_with_its_path(raw: dict[str, Any], path: str,
                                               says: str) -> None:
    with pytest.raises(RulebookError) as err:
        Rulebook.from_mapping({"approval_policies": [raw]})
    assert err.value.path == path
    assert says in err.value.reason


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(RulebookError, match="duplicate policy id"):
        parse([policy("true"), policy("false")])


def test_policies_are_part_of_the_rulebook_version() -> None:
    plain = Rulebook.from_mapping({})
    held = Rulebook.from_mapping({"approval_policies": [policy("decision.notional > 1")]})
    other = Rulebook.from_mapping({"approval_policies": [policy("decision.notional > 2")]})
    assert len({plain.version, held.version, other.version}) == 3
    # A rulebook without policies keeps the version it had before policies existed.
    assert "approval_policies" not in plain.content
    assert held.approval_policies[0].role == "pm"


def test_a_policy_that_fails_at_run_time_holds_the_decision() -> None:
    (p,) = parse([policy("decision.notional * 4611686018427387904 > 0")])
    (match,) = evaluate([p], facts())
    assert match.error is not None and match.policy.id == "P1"


def test_missing_facts_are_a_programming_error_not_a_pass() -> None:
    (p,) = parse([policy("true")])
    partial = facts()
    del partial["history"]["usual_qty"]
    with pytest.raises(ValueError, match="usual_qty"):
        evaluate([p], partial)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10**12))
def test_a_threshold_holds_exactly_the_decisions_above_it(notional: int, limit: int) -> None:
    (p,) = parse([policy(f"decision.notional > {limit}")])
    assert bool(evaluate([p], facts(decision__notional=notional))) == (notional > limit)


def test_every_fact_is_declared_once() -> None:
    names = [f"{g}.{n}" for g, fields in FACTS.items() for n in fields]
    assert len(names) == len(set(names)) and len(names) == 21
