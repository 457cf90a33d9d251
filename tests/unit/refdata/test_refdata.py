from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway import refdata

CONFIG = Path(__file__).resolve().parents[3] / "config"


def test_shipped_config_loads() -> None:
    """The example config loads: 200 accounts, lots summed into positions, a valid rulebook."""
    secs = refdata.load_securities(CONFIG / "securities.csv")
    accts = refdata.load_accounts(CONFIG / "accounts.csv", CONFIG / "positions.csv")
    rb = refdata.load_rulebook(CONFIG / "rules")
    assert len(accts) == 200
    assert secs["BTI"].related_to == "BATS.L"
    sma1 = next(a for a in accts if a.account_id == "SMA0001")
    assert sma1.positions["AAPL"] == Decimal(2300)
    assert len(sma1.lots["AAPL"]) == 2
    assert sum(a.intended_qty or 0 for a in accts) == 500_000
    assert len(rb.version) == 64 and rb.counts()["cel"] == 2


@pytest.mark.parametrize(("content", "line", "reason"), [
    ("AAPL,Apple,IT,US,,100,,190\nAAPL,Apple,IT,US,,100,,190\n", 3, "duplicate symbol"),
    ("AAPL,Apple,IT,US,,0,,190\n", 2, "`lot_size` must be an integer >= 1"),
    ("AAPL,Apple,IT,US,,100,,abc\n", 2, "`price` is not a number"),
    ("BTI,BAT,CS,US,,1,BATS.L,35\n", 2, "related_to 'BATS.L' is not a symbol"),
    ("AAPL,Apple,IT,US,,100,,190,extra\n", 2, "more fields than the header"),
])
def test_security_errors_name_file_and_line(tmp_path: Path, content: str, line: int,
                                             reason: str) -> None:
    """Each bad securities row is refused as file:line: reason."""
    f = tmp_path / "securities.csv"
    f.write_text(",".join(refdata.SECURITY_COLUMNS) + "\n" + content)
    with pytest.raises(refdata.RefDataError) as err:
        refdata.load_securities(f)
    assert str(err.value).startswith(f"{f}:{line}: ")
    assert reason in str(err.value)


def test_account_and_position_errors(tmp_path: Path) -> None:
    """A bad status and a lot for an unknown account are located precisely."""
    accounts = tmp_path / "accounts.csv"
    header = ",".join(refdata.ACCOUNT_COLUMNS)
    row = "A1,B,active,100,100,1,100,,C,P,S,V,core"
    accounts.write_text(f"{header}\n{row}\n{row.replace('A1', 'A2').replace('active', 'asleep')}\n")
    with pytest.raises(refdata.RefDataError, match=r"accounts.csv:3: `status` must be one of"):
        refdata.load_accounts(accounts)
    accounts.write_text(f"{header}\n{row}\n")
    positions = tmp_path / "positions.csv"
    positions.write_text(",".join(refdata.POSITION_COLUMNS)
                         + "\nA1,X,L1,10,1,2024-01-01\nZZ,X,L2,10,1,2024-01-01\n")
    with pytest.raises(refdata.RefDataError, match=r"positions.csv:3: unknown account 'ZZ'"):
        refdata.load_accounts(accounts, positions)
    positions.write_text(",".join(refdata.POSITION_COLUMNS) + "\nA1,X,L1,10,1,01/02/2024\n")
    with pytest.raises(refdata.RefDataError, match=r"positions.csv:2: `acquired`"):
        refdata.load_accounts(accounts, positions)


def test_rulebook_error_points_at_the_yaml_line(tmp_path: Path) -> None:
    """A validation error deep in a restriction is reported at its YAML line."""
    f = tmp_path / "rules.yaml"
    f.write_text(
        "schemes:\n  core: {method: pro_rata}\n"
        "restrictions:\n"
        "  - id: OK\n    version: '1'\n    description: fine\n    kind: side\n"
        "    forbid: [sell_short]\n"
        "  - id: CAP\n    version: '1'\n    description: cap\n    kind: issuer_cap\n"
        "    max_pct_nav: 5.5\n"
    )
    with pytest.raises(refdata.RefDataError) as err:
        refdata.load_rulebook(f)
    assert err.value.line == 13
    assert "restrictions[1].max_pct_nav" in err.value.reason
    assert "quoted decimal" in err.value.reason


def test_rulebook_cel_syntax_error_and_yaml_syntax_error(tmp_path: Path) -> None:
    """A malformed custom rule and malformed YAML are both refused with a line."""
    f = tmp_path / "r.yaml"
    f.write_text("restrictions:\n  - id: C\n    version: '1'\n    description: d\n"
                 "    kind: cel\n    exclude_when: \"account.tier >\"\n")
    with pytest.raises(refdata.RefDataError, match=r"r.yaml:6: .*invalid expression"):
        refdata.load_rulebook(f)
    f.write_text("restrictions: [\n  - id: x\n")
    with pytest.raises(refdata.RefDataError, match=r"r.yaml:\d+: invalid YAML"):
        refdata.load_rulebook(f)


def test_split_rulebook_files_report_the_right_file(tmp_path: Path) -> None:
    """Restrictions from the second file are located in that file."""
    (tmp_path / "a.yaml").write_text(
        "restrictions:\n  - {id: A, version: '1', description: a, kind: side, forbid: [buy]}\n")
    (tmp_path / "b.yaml").write_text(
        "restrictions:\n  - {id: A, version: '1', description: b, kind: side, forbid: [buy]}\n")
    with pytest.raises(refdata.RefDataError) as err:
        refdata.load_rulebook(tmp_path)
    assert err.value.file.endswith("b.yaml") and err.value.line == 2
    assert "duplicate restriction id 'A'" in err.value.reason
