"""The OMS simulator's CSV blotter: order types and times in force by name, as sides are."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.oms import read_blotter

HEADER = "cl_ord_id,book,symbol,side,qty,ord_type,price,time_in_force\n"


def _blotter(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "blotter.csv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_names_become_fix_codes_and_codes_pass_through(tmp_path: Path) -> None:
    orders = read_blotter(_blotter(
        tmp_path, "B1,SMA-CORE,AAPL,buy,1000,limit,190.50,day",
        "B2,SMA-CORE,MSFT,sell,500,Market,,IOC", "B3,SMA-CORE,JNJ,buy,300,2,150,3",
        "B4,SMA-CORE,JNJ,buy,300,,151,"))
    assert [(o.ord_type, o.time_in_force) for o in orders] == [
        ("2", "0"), ("1", "3"), ("2", "3"), ("2", "0")]
    assert orders[0].price == Decimal("190.50") and orders[1].price is None


@pytest.mark.parametrize(("row", "expected"), [
    ("B1,SMA-CORE,AAPL,buy,1000,limt,190,day", "unknown order type 'limt'"),
    ("B1,SMA-CORE,AAPL,buy,1000,limit,190,forever", "unknown time in force 'forever'"),
])
def test_an_unknown_name_names_the_file_line_and_choices(tmp_path: Path, row: str,
                                                         expected: str) -> None:
    path = _blotter(tmp_path, "B0,SMA-CORE,AAPL,buy,100,limit,190,day", row)
    with pytest.raises(ValueError) as err:
        read_blotter(path)
    assert str(err.value).startswith(f"{path}:3: invalid blotter row: {expected}")
    assert "limit" in str(err.value) or "ioc" in str(err.value)
