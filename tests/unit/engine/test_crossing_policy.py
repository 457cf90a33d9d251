"""The crossing policy: validated with the rulebook, errors by path, versioned only when
present (a rulebook without `crossing:` keeps the version it had before)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine import Rulebook
from engine.crossing_policy import CrossingPolicy, parse
from engine.errors import RulebookError
from gateway.refdata import RefDataError, load_rulebook

ROOT = Path(__file__).resolve().parents[3]
# The shipped rulebook's version (also quoted in README.md): crossing must not move it.
SHIPPED_VERSION = "f66b66a1a1ab1bc1b34c0b3745a119ee3e49d2bbf74a59631acc09f46ef8104d"


def policy(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"enabled": True, "price_rule": "midpoint",
                            "max_price_age_seconds": 60, "max_share_of_order": "0.5"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_a_full_policy_parses() -> None:
    p = parse(policy(description=" Cross at the midpoint ", excluded_accounts={
        "when": "account.vehicle == 'SMA-ERISA'", "accounts": ["SMA0042", 1234]}))
    assert p == CrossingPolicy(
        enabled=True, price_rule="midpoint", max_price_age_seconds=60,
        max_share_of_order=Decimal("0.5"), exclude_when="account.vehicle == 'SMA-ERISA'",
        exclude_accounts=frozenset({"SMA0042", "1234"}), description="Cross at the midpoint")


def test_defaults_and_absence() -> None:
    assert parse(None) is None
    p = parse({"enabled": False, "price_rule": "last", "max_price_age_seconds": 5})
    assert p is not None
    assert p.max_share_of_order == 1
    assert p.exclude_when is None and p.exclude_accounts == frozenset()


def test_the_canonical_form_round_trips_and_normalises_the_share() -> None:
    p = parse(policy(max_share_of_order="0.50", excluded_accounts={"accounts": ["B", "A"]}))
    assert p is not None
    assert parse(p.to_json()) == p
    assert p.to_json()["max_share_of_order"] == Decimal("0.5")
    assert p.to_json()["excluded_accounts"] == {"when": None, "accounts": ["A", "B"]}
    assert parse(policy(max_share_of_order=1)) == parse(policy(max_share_of_order="1.00"))


def _rb(**extra: Any) -> Rulebook:
    return Rulebook.from_mapping({"name": "t", "schemes": {"core": {"method": "pro_rata"}},
                                  **extra}, "t")


def test_the_rulebook_carries_the_policy_and_versions_it_only_when_present() -> None:
    bare, with_policy = _rb(), _rb(crossing=policy())
    assert bare.crossing is None and "crossing" not in bare.content
    assert _rb(crossing=None).version == bare.version
    assert with_policy.crossing is not None and with_policy.crossing.price_rule == "midpoint"
    assert with_policy.content["crossing"]["max_price_age_seconds"] == 60
    assert with_policy.version != bare.version
    # A disabled policy is still a policy: switching it off is a new version.
    assert _rb(crossing=policy(enabled=False)).version not in (bare.version,
                                                                with_policy.version)
    # Same meaning, same version.
    assert _rb(crossing=policy(max_share_of_order="0.500")).version == with_policy.version


def test_the_shipped_rulebook_keeps_its_version() -> None:
    rb = load_rulebook(ROOT / "config" / "rules")
    assert rb.crossing is None
    assert "crossing" not in rb.content
    assert rb.version == SHIPPED_VERSION


BAD: list[tuple[Any, str, str]] = [
    ("yes", "crossing", "must be a mapping"),
    (policy(venue="internal"), "crossing.venue", "unknown key 'venue'"),
    (policy(enabled=None), "crossing.enabled", "is required: true or false"),
    (policy(enabled="true"), "crossing.enabled", "is required: true or false"),
    (policy(price_rule=None), "crossing.price_rule", "is required: last or midpoint"),
    (policy(price_rule="vwap"), "crossing.price_rule", "must be last or midpoint, was 'vwap'"),
    (policy(max_price_age_seconds=None), "crossing.max_price_age_seconds", "is required"),
    (policy(max_price_age_seconds=0), "crossing.max_price_age_seconds", "at least 1"),
    (policy(max_price_age_seconds="60"), "crossing.max_price_age_seconds", "whole number"),
    (policy(max_price_age_seconds=True), "crossing.max_price_age_seconds", "whole number"),
    (policy(max_price_age_seconds=1.5), "crossing.max_price_age_seconds", "whole number"),
    (policy(max_share_of_order=0), "crossing.max_share_of_order", "greater than 0"),
    (policy(max_share_of_order="1.01"), "crossing.max_share_of_order", "at most 1"),
    (policy(max_share_of_order="-0.5"), "crossing.max_share_of_order", "greater than 0"),
    (policy(max_share_of_order="NaN"), "crossing.max_share_of_order", "greater than 0"),
    (policy(max_share_of_order="half"), "crossing.max_share_of_order", "is not a number"),
    (policy(max_share_of_order=0.5), "crossing.max_share_of_order", "quoted decimal"),
    (policy(max_share_of_order=True), "crossing.max_share_of_order", "quoted decimal"),
    (policy(max_share_of_order=[1]), "crossing.max_share_of_order", "must be a number"),
    (policy(description=5), "crossing.description", "must be a string"),
    (policy(excluded_accounts=["SMA1"]), "crossing.excluded_accounts", "must be a mapping"),
    (policy(excluded_accounts={"ids": ["SMA1"]}), "crossing.excluded_accounts.ids",
     "unknown key"),
    (policy(excluded_accounts={"accounts": "SMA1"}), "crossing.excluded_accounts.accounts",
     "must be a list"),
    (policy(excluded_accounts={"accounts": ["SMA1", " "]}),
     "crossing.excluded_accounts.accounts[1]", "non-empty account id"),
    (policy(excluded_accounts={"when": ""}), "crossing.excluded_accounts.when",
     "non-empty CEL expression"),
    (policy(excluded_accounts={"when": "account.vehicle =="}),
     "crossing.excluded_accounts.when", "invalid expression"),
    (policy(excluded_accounts={"when": "account.vehicel == 'X'"}),
     "crossing.excluded_accounts.when", "vehicel"),
    (policy(excluded_accounts={"when": "account.nav"}), "crossing.excluded_accounts.when",
     "not a boolean"),
    # The policy sees the account and the side, not the security.
    (policy(excluded_accounts={"when": "security.country == 'US'"}),
     "crossing.excluded_accounts.when", "security"),
]


@pytest.mark.parametrize(("raw", "path", "fragment"), BAD)
def test_a_bad_policy_is_refused_with_its_path(raw: Any, path: str, fragment: str) -> None:
    with pytest.raises(RulebookError) as err:
        _rb(crossing=raw)
    assert err.value.path == path
    assert fragment in err.value.reason
    assert str(err.value).startswith(f"{path}: ")


def test_the_error_reads_as_the_brief_says() -> None:
    with pytest.raises(RulebookError, match=r"^crossing\.price_rule: must be last or midpoint"):
        _rb(crossing=policy(price_rule="close"))


def test_a_policy_in_a_yaml_file_is_read_and_its_errors_name_the_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "00-base.yaml").write_text("name: t\nschemes:\n  core: {method: pro_rata}\n")
    (rules / "30-crossing.yaml").write_text(
        "crossing:\n"
        "  enabled: true\n"
        "  price_rule: last\n"
        "  max_price_age_seconds: 30\n"
        "  max_share_of_order: \"0.25\"\n"
        "  excluded_accounts:\n"
        "    when: \"account.vehicle == 'SMA-ERISA'\"\n")
    rb = load_rulebook(rules)
    assert rb.crossing is not None and rb.crossing.max_share_of_order == Decimal("0.25")
    (rules / "30-crossing.yaml").write_text(
        "crossing:\n  enabled: true\n  price_rule: close\n  max_price_age_seconds: 30\n")
    with pytest.raises(RefDataError) as err:
        load_rulebook(rules)
    assert err.value.file.endswith("30-crossing.yaml")
    assert err.value.line == 3
    assert err.value.reason.startswith("crossing.price_rule: must be last or midpoint")


def test_the_live_window_is_validated_and_versioned_only_when_set() -> None:
    assert parse(policy()).live_window_seconds == 0  # type: ignore[union-attr]
    live = parse(policy(live_window_seconds=5))
    assert live is not None and live.live_window_seconds == 5
    assert parse(live.to_json()) == live
    # Unset (0), it is not in the canonical form: a policy written before live crossing
    # keeps its version.
    plain = parse(policy())
    assert plain is not None and "live_window_seconds" not in plain.to_json()
    assert _rb(crossing=policy()).version != _rb(crossing=policy(live_window_seconds=5)).version
    for bad in (-1, 3601, "5", 1.5, True):
        with pytest.raises(RulebookError, match=r"^crossing\.live_window_seconds: must be a "
                                                r"whole number of seconds from 0 to 3600"):
            parse(policy(live_window_seconds=bad))
