"""Custom rules (`kind: cel`) are type-checked when a rulebook loads, against the variables
the engine really binds."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import custom_rules
from engine.cel_types import BOOL, INT, STRING, list_of
from tests.unit.engine.alloc_helpers import account, rulebook

GOOD = {"id": "OK", "version": "1", "description": "fine", "kind": "cel",
        "exclude_when": "account.tier > 4"}


def cel_rule(expr: str) -> dict[str, Any]:
    return {"id": "CUSTOM", "version": "3", "description": "d", "kind": "cel",
            "exclude_when": expr}


@pytest.mark.parametrize(("expr", "reason"), [
    ("account.colour == 'red'",
     "unknown field account.colour; known fields: account_id, book, status, tier, strategy,"
     " vehicle, custodian, prime_broker, scheme, nav, cash, position"),
    ("portfolio.nav > 5", "unknown variable portfolio; known variables: account, security, "
                          "order"),
    ("account.nav + 'x' > 1", "type error: int + string is not defined (in account.nav + 'x')"),
    # Each of these fails only on some branch, which `&&`, `||` and `?:` may skip at run time:
    # the check covers every branch.
    ("account.tier > 4 && account.colour == 'red'", "unknown field account.colour"),
    ("security.sector == 'Energy' || order.venue == 'X'", "unknown field order.venue"),
    ("account.tier > 4 ? account.nav + 'x' > 1 : false", "type error: int + string"),
    ("security.esg_tags.exists(t, t > 3)", "type error: string > int is not defined"),
    ("account.tier == '3'", "type error: int == string compares an int with a string"),
    ("account.strategy in [1, 2]", "type error: string in list(int)"),
    ("size(account.nav) > 1", "type error: no overload size(int)"),
    ("account.strategy.lowerAscii() == 'lcg'", "unknown function lowerAscii"),
    ("account.nav", "type error: the expression is an int, not a boolean"),
    ("account.tier > 1 && account.book", "type error: bool && string: both operands must be "
                                         "booleans"),
    ("has(account.colour)", "unknown field account.colour"),
    ("account['colour'] == 1", "unknown field account.colour"),
    ("[1, 2].all(x, x > y)", "unknown variable y"),
])
def test_rulebook_refuses_an_ill_typed_custom_rule(expr: str, reason: str) -> None:
    """Unknown fields and variables and type errors are refused at load, with the path."""
    with pytest.raises(engine.RulebookError) as err:
        rulebook([GOOD, cel_rule(expr)])
    assert err.value.path == "restrictions[1].exclude_when"
    assert reason in err.value.reason


@pytest.mark.parametrize("expr", [
    "account.strategy == 'DIV' && security.sector == 'Technology'",
    "order.side == 'buy' && account.vehicle == 'SMA-TRANSITION'",
    "security.country == 'DE' && account.nav < 20000000",
    "'tobacco' in security.esg_tags || security.ultimate_issuer == 'Altria'",
    "security.esg_tags.exists(t, t.startsWith('tob')) && size(security.esg_tags) > 1",
    "account.nav > 1.5e7 && account.cash >= 0 && account.position <= 100",
    "account.tier > 2 ? account.strategy.matches('^L') : account.book.contains('CORE')",
    "account['scheme'] == 'core' && has(security.related_to) && security.lot_size % 100 == 0",
    "string(account.tier) == '3' && int('7') == 7 && account.book != null",
    "account.nav / account.position > 1",   # may fail on values at run time: allowed
])
def test_well_typed_custom_rules_load(expr: str) -> None:
    assert rulebook([cel_rule(expr)]).restrictions[0].expr == expr


def test_shipped_and_synthetic_rulebooks_type_check() -> None:
    from engine import synthetic
    from gateway import refdata

    config = Path(__file__).resolve().parents[3] / "config" / "rules"
    assert refdata.load_rulebook(config).counts()["cel"] == 2
    assert synthetic.build(600, 12).rulebook.counts()["cel"] > 0


def test_the_schema_is_what_the_engine_binds() -> None:
    """The declared variables and fields are exactly the bindings' keys, with their types."""
    chain = [engine.Security("ADR", "ADR Trust", "Tech", "US", frozenset({"b"}), 1, "ORD"),
             engine.Security("ORD", "Ord plc", "Tech", "GB", frozenset({"a"}), 100)]
    a = account("A", positions={"ADR": D("12.5")}, nav=D("100.99"), cash=D("-3.5"))
    bindings = {"account": custom_rules.account_binding(a, "ADR"),
                "security": custom_rules.security_binding(chain),
                "order": custom_rules.order_binding(engine.Side.SELL_SHORT, "ADR")}
    assert {k: list(v) for k, v in bindings.items()} == \
        {k: list(v) for k, v in custom_rules.SCHEMA.items()}
    python = {INT: int, STRING: str, BOOL: bool, list_of(STRING): list}
    for var, fields in custom_rules.SCHEMA.items():
        for name, ty in fields.items():
            value = bindings[var][name]
            assert isinstance(value, python[ty]) and not isinstance(value, bool), (var, name)
            if ty == list_of(STRING):
                assert all(isinstance(v, str) for v in value)
    assert bindings["account"]["nav"] == 100 and bindings["account"]["cash"] == -3
    assert bindings["security"]["esg_tags"] == ["a", "b"]


def test_memo_keys_come_from_the_type_check() -> None:
    """Results are cached on exactly the account fields a rule reads."""
    read = custom_rules.account_fields_read
    check = custom_rules.type_check
    assert read(check("account.tier > 1 && account['nav'] > 5 && has(account.book)")) == \
        ("book", "nav", "tier")
    assert read(check("security.country == 'DE'")) == ()
    assert read(check("size(account) > 3")) is None   # the whole account: no narrower key


def test_rules_check_reports_file_and_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`fixalloc rules check` (and the daemon's loader) refuse the file with file:line."""
    from gateway import engine_cli, refdata

    rules = tmp_path / "rules"
    rules.mkdir()
    bad = rules / "10-bad.yaml"
    bad.write_text(
        "restrictions:\n"
        "  - id: FINE\n"
        "    version: '1'\n"
        "    description: fine\n"
        "    kind: cel\n"
        "    exclude_when: \"account.tier > 4\"\n"
        "  - id: TYPO\n"
        "    version: '1'\n"
        "    description: a typo in a field name\n"
        "    kind: cel\n"
        "    exclude_when: \"account.colour == 'red'\"\n")
    with pytest.raises(refdata.RefDataError) as err:
        refdata.load_rulebook(rules)
    assert (Path(err.value.file), err.value.line) == (bad, 11)
    assert err.value.reason.startswith(
        "restrictions[1].exclude_when: unknown field account.colour; known fields: ")
    rc = engine_cli.main(["rules", "check", str(rules)])
    out = capsys.readouterr()
    assert rc == 2 and out.out == ""
    assert f"{bad}:11: restrictions[1].exclude_when: unknown field account.colour" in out.err
