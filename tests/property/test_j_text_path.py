"""A J written as text and parsed by quickfix is the J built field by field, byte for byte.

The text path (gateway/fix/j_layout.py) is what the daemon sends once the gateway's
dictionary is proven; the field-by-field path is the reference. Random blocks cover every
variant a J has: New/Replace/Cancel, calculated and Ready-To-Book, fragments, custodian and
prime-broker parties, strategy/vehicle as UDFs or as AllocText, odd characters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fix import allocation_codec as ac
from gateway.fix import j_layout

ROOT = Path(__file__).resolve().parents[2]
DICTIONARY = ROOT / "fix_specs" / "FIX44.xml"

_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF,
                                       blacklist_characters="="), min_size=1, max_size=12)
_maybe = st.one_of(st.none(), _text)
_qty = st.integers(min_value=1, max_value=10**7).map(Decimal)
_px = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10000), places=4,
                  allow_nan=False, allow_infinity=False)


@pytest.fixture(autouse=True)
def _proven() -> Iterator[None]:
    assert j_layout.use_dictionary(DICTIONARY, ac.sample_j())
    yield
    j_layout.forget_dictionary()


@st.composite
def _j(draw: st.DrawFn) -> tuple[ac.JBlock, list[ac.JLine], bool, tuple[int, bool] | None]:
    px = draw(_px)
    n = draw(st.integers(min_value=0, max_value=12))
    lines = [ac.JLine(f"A-J1-{i:05d}", draw(_text), draw(_qty), px, draw(_maybe),
                      draw(_maybe), draw(_maybe), draw(_maybe)) for i in range(n)]
    trans = draw(st.sampled_from(["0", "1", "2"]))
    alloc_type = draw(st.sampled_from(["1", "2", "5"]))
    if not lines and trans != "2":
        alloc_type = "5"
    fragment = draw(st.one_of(st.none(), st.tuples(st.integers(1, 99), st.booleans())))
    qty = sum((ln.qty for ln in lines), Decimal(0)) or Decimal(100)
    block = ac.JBlock(
        "A-J1", trans, alloc_type, draw(_text), draw(_maybe), qty + draw(_qty), "buy",
        draw(_text), qty, px, "2026-11-30", "2026-12-01",
        datetime(2026, 11, 30, 15, 0, 1, 123000, tzinfo=UTC),
        secondary_alloc_id=draw(_maybe), ref_alloc_id=draw(_maybe))
    return block, lines, draw(st.booleans()), fragment


@settings(max_examples=150, deadline=None)
@given(_j())
def test_the_text_path_builds_the_reference_j(case: tuple[ac.JBlock, list[ac.JLine], bool,
                                                          tuple[int, bool] | None]) -> None:
    block, lines, udfs, fragment = case
    fields = ac.j_fields(block, lines, send_udfs=udfs, fragment=fragment)
    built = ac.build_allocation_instruction(block, lines, send_udfs=udfs, fragment=fragment)
    assert built.toString() == j_layout.assemble("J", fields).toString()


def test_a_value_holding_the_separator_is_never_written_as_text() -> None:
    line = ac.JLine("A-J1-00001", "ACC\x01558=X", Decimal(5), Decimal(1), None, None, None, None)
    block = ac.JBlock("A-J1", "0", "1", "CL", None, Decimal(5), "buy", "AAPL", Decimal(5),
                      Decimal(1), "2026-11-30", "2026-12-01", datetime(2026, 11, 30, tzinfo=UTC))
    fields = ac.j_fields(block, [line])
    assert j_layout.text("J", fields) is None
    built = ac.build_allocation_instruction(block, [line])  # the reference path instead
    assert built.toString() == j_layout.assemble("J", fields).toString()
    assert "\x01558=X" not in built.toString().replace("79=ACC\x01558=X", "")


def test_a_dictionary_without_our_group_layout_keeps_js_built_field_by_field(
        tmp_path: Path) -> None:
    text = DICTIONARY.read_text()
    # A counterparty's dictionary that does not declare the strategy/vehicle UDFs in NoAllocs.
    stripped = text.replace("<field name='AllocStrategy' required='N' />", "").replace(
        "<field name='AllocVehicle' required='N' />", "")
    assert stripped != text
    other = tmp_path / "FIX44-no-udfs.xml"
    other.write_text(stripped)
    assert j_layout.use_dictionary(other, ac.sample_j()) is False
    line = ac.JLine("A-J1-00001", "ACC1", Decimal(5), Decimal(1), None, None, "GROWTH", "SMA")
    j = ac.JBlock("A-J1", "0", "1", "CL", None, Decimal(5), "buy", "AAPL", Decimal(5),
                  Decimal(1), "2026-11-30", "2026-12-01", datetime(2026, 11, 30, tzinfo=UTC))
    built = ac.build_allocation_instruction(j, [line])
    assert built.toString() == j_layout.assemble("J", ac.j_fields(j, [line])).toString()
    assert "\x0120101=GROWTH\x01" in built.toString()
