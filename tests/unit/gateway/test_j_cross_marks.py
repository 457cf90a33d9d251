"""The OMS's copy of a crossed part's J: Text(58) says it is an internal cross, and each
line carries AllocText CROSS=<id> (before STRAT/VEH when the session takes no UDFs)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix import j_layout
from gateway.fix.allocation_codec import (
    JBlock,
    JLine,
    build_allocation_instruction,
    parse_allocation_instruction,
    sample_j,
)

ROOT = Path(__file__).resolve().parents[3]
D = Decimal


def _j(cross: bool, *, send_udfs: bool) -> dict[str, object]:
    lines = [JLine(f"X-J1-{i:05d}", f"SMA000{i}", D(500), D("190.25"), "CUSTBIC", None,
                   "CORE", "SMA", "XR-abc-AAPL" if cross else None) for i in (1, 2)]
    block = JBlock("X-J1", "0", "1", "CL1", "XR-abc-AAPL", D(1000), "buy", "AAPL", D(1000),
                   D("190.25"), "2026-11-30", "2026-12-01",
                   datetime(2026, 11, 30, 15, tzinfo=UTC),
                   text="internal cross XR-abc-AAPL" if cross else None)
    got = parse_allocation_instruction(
        build_allocation_instruction(block, lines, send_udfs=send_udfs))
    return {"text": got.text, "lines": [ln.get("text") for ln in got.lines]}


@pytest.mark.parametrize("dictionary", [True, False])
def test_crossed_lines_are_marked_and_others_are_not(dictionary: bool) -> None:
    # Both ways of building a J: parsed from text against the dictionary, or assembled.
    if dictionary:
        assert j_layout.use_dictionary(ROOT / "fix_specs" / "FIX44.xml", sample_j())
    else:
        j_layout.forget_dictionary()
    try:
        assert _j(True, send_udfs=True) == {
            "text": "internal cross XR-abc-AAPL",
            "lines": ["CROSS=XR-abc-AAPL", "CROSS=XR-abc-AAPL"]}
        assert _j(True, send_udfs=False)["lines"] == [
            "CROSS=XR-abc-AAPL;STRAT=CORE;VEH=SMA"] * 2
        assert _j(False, send_udfs=True) == {"text": None, "lines": [None, None]}
        assert _j(False, send_udfs=False)["lines"] == ["STRAT=CORE;VEH=SMA"] * 2
    finally:
        j_layout.forget_dictionary()
