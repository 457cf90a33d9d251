"""The FIX codec against golden raw messages built with simplefix, through our dictionary."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from gateway.fix import allocation_codec, codec
from tests.unit.gateway.fixmsg import DATA, golden, pairs, raw

ROOT = Path(__file__).resolve().parents[3]
DICTIONARY = fix.DataDictionary(str(ROOT / "fix_specs" / "FIX44.xml"))
STOCK = fix.DataDictionary(str(ROOT / "fix_specs" / "FIX44-stock.xml"))
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def parse(text: str, dictionary: fix.DataDictionary = DICTIONARY) -> fix.Message:
    return fix.Message(text, dictionary, True)


def _block(**kw: object) -> allocation_codec.JBlock:
    base = dict(alloc_id="A1", alloc_trans_type="0", alloc_type="1", cl_ord_id="C1",
                broker_order_id="B1", order_qty=Decimal(300), side="buy", symbol="AAPL",
                quantity=Decimal(300), avg_px=Decimal("190.0123"), trade_date="2026-11-20",
                settl_date="2026-11-23", transact_time=NOW)
    base.update(kw)
    return allocation_codec.JBlock(**base)  # type: ignore[arg-type]


def _lines(n: int = 3) -> list[allocation_codec.JLine]:
    return [allocation_codec.JLine(f"A1-{i}", f"SMA{i}", Decimal(100), Decimal("190.0123"),
                        "CUSTUS33XXX", "PB01", "LCG", "SMA-WRAP1") for i in range(n)]


def test_new_order_single_from_oms_decodes_to_decimals() -> None:
    """A block D decodes with Account as the book and prices/quantities as exact Decimals."""
    text = raw("D", [(11, "BLK-1"), (1, "SMA-CORE"), (21, "1"), (55, "AAPL"), (54, "1"),
                     (60, "20261120-15:00:00.000"), (38, "500000"), (40, "2"),
                     (44, "190.125"), (59, "0")], sender="OMS1")
    f = codec.parse_new_order_single(parse(text))
    assert f == codec.NewOrderFields(cl_ord_id="BLK-1", book="SMA-CORE", symbol="AAPL",
                                     side="buy", order_qty=Decimal("500000"), ord_type="2",
                                     price=Decimal("190.125"), time_in_force="0")


@pytest.mark.parametrize(("mutation", "tag"), [
    ({1: None}, 1),            # no book
    ({54: "7"}, 54),            # side we do not trade
    ({11: "X" * 65}, 11),      # longer than our columns
    ({1: "SMA\x02CORE"}, 1),   # a control character in an identifier
])
def test_new_order_single_problems_name_the_tag(mutation: dict[int, str | None],
                                               tag: int) -> None:
    """A D that cannot be decoded raises DecodeError carrying the tag.

    What a decodable D must satisfy (price, quantity, limits) is gateway.order_checks',
    tested in test_hardening.py.
    """
    body = {11: "BLK-1", 1: "SMA-CORE", 21: "1", 55: "AAPL", 54: "1",
            60: "20261120-15:00:00.000", 38: "100", 40: "2", 44: "10"}
    body.update(mutation)  # type: ignore[arg-type]
    text = raw("D", [(t, v) for t, v in body.items() if v is not None], sender="OMS1")
    with pytest.raises(codec.DecodeError) as err:
        codec.parse_new_order_single(parse(text, STOCK) if tag == 54 else parse(text))
    assert err.value.tag == tag


def test_execution_report_fill_golden() -> None:
    """The golden partial fill decodes every field the ledger and dedupe use."""
    text = "\x01".join(f"{t}={v}" for t, v in golden("execution_report_fill.fix")) + "\x01"
    header = (8, 9, 35, 49, 56, 34, 52, 10)
    body = [p for p in pairs(text) if p[0] not in header]
    f = codec.parse_execution_report(parse(raw("8", body)))
    assert (f.broker_order_id, f.cl_ord_id, f.exec_id) == ("BRK000001", "FA1", "BRK000001-X7")
    assert (f.exec_type, f.ord_status) == ("F", "1")
    assert (f.last_qty, f.last_px) == (Decimal("25000"), Decimal("190.4"))
    assert (f.cum_qty, f.avg_px, f.leaves_qty) == (Decimal("50000"), Decimal("190.42"),
                                                   Decimal("450000"))
    assert f.trade_date == "2026-11-20"


def test_allocation_ack_account_level_reject_lists_lines() -> None:
    """A P 87=2 with NoAllocs gives the rejected IndividualAllocIDs and their codes."""
    text = raw("P", [(70, "A1"), (60, "20261120-15:00:00.000"), (87, "2"), (58, "bad acct"),
                     (78, "1"), (79, "SMA2"), (467, "A1-2"), (776, "0")])
    f = allocation_codec.parse_allocation_ack(parse(text))
    assert (f.alloc_id, f.alloc_status, f.text) == ("A1", "2", "bad acct")
    assert f.rejected_lines == (("A1-2", "0"),)


def test_udfs_stay_inside_each_noallocs_entry_through_the_dictionary() -> None:
    """AllocStrategy/AllocVehicle round-trip inside NoAllocs with validation on."""
    built = allocation_codec.build_allocation_instruction(_block(), _lines())
    header = built.getHeader()
    for tag, value in ((49, "FIXALLOC"), (56, "BRKA"), (34, "3"), (52, "20261120-15:00:00.000")):
        header.setField(tag, value)
    received = allocation_codec.parse_allocation_instruction(parse(built.toString()))
    assert [(x["strategy"], x["vehicle"]) for x in received.lines] == [("LCG", "SMA-WRAP1")] * 3
    assert received.lines[0]["parties"] == (("CUSTUS33XXX", "B", "28"), ("PB01", "D", "4"))


def test_counterparty_without_udfs_loses_them_from_the_group_so_we_use_alloc_text() -> None:
    """A dictionary without 20101 ends NoAllocs there; with send_udfs off they go in AllocText."""
    built = allocation_codec.build_allocation_instruction(_block(), _lines())
    for tag, value in ((49, "FIXALLOC"), (56, "BRKA"), (34, "3"), (52, "20261120-15:00:00.000")):
        built.getHeader().setField(tag, value)
    leaked = parse(built.toString(), STOCK)
    assert leaked.isSetField(20101)  # pushed out of the group into the body
    with pytest.raises(fix.FieldNotFound):  # and the NoAllocs entries are broken apart
        allocation_codec.parse_allocation_instruction(leaked)
    plain = allocation_codec.build_allocation_instruction(_block(), _lines(), send_udfs=False)
    for tag, value in ((49, "FIXALLOC"), (56, "BRKA"), (34, "3"), (52, "20261120-15:00:00.000")):
        plain.getHeader().setField(tag, value)
    received = allocation_codec.parse_allocation_instruction(parse(plain.toString(), STOCK))
    assert received.lines[0]["text"] == "STRAT=LCG;VEH=SMA-WRAP1"
    assert received.lines[0]["strategy"] is None


def test_j_refuses_an_allocation_that_does_not_sum_to_the_quantity() -> None:
    """Σ AllocQty must equal Quantity before anything is built (contract 3)."""
    with pytest.raises(ValueError, match="differs from Quantity"):
        allocation_codec.build_allocation_instruction(_block(quantity=Decimal(301)), _lines())
    with pytest.raises(ValueError, match="at least one NoAllocs"):
        allocation_codec.build_allocation_instruction(_block(), [])


def test_golden_files_exist() -> None:
    """The golden data the codec tests read ships with the repository.

    The J goldens are written by hand from FIX 4.4 and checked in test_j_golden.py; the
    ER golden is a broker's fill as it would arrive, decoded above.
    """
    assert sorted(p.name for p in DATA.glob("*.fix")) == [
        "allocation_instruction_broker_alloc_text.fix", "allocation_instruction_broker_udfs.fix",
        "allocation_instruction_oms_copy.fix", "execution_report_fill.fix"]


def test_pre_allocation_group_on_a_d_decodes_with_its_reason() -> None:
    """PreAllocGrp (NoAllocs on D) gives the OMS's split; Text carries the reason."""
    text = raw("D", [(11, "BLK-2"), (1, "SMA-CORE"), (21, "1"), (55, "AAPL"), (54, "2"),
                     (60, "20261120-15:00:00.000"), (38, "1500"), (40, "1"),
                     (58, "client directed"), (78, "2"), (79, "SMA0001"), (80, "1000"),
                     (79, "SMA0002"), (80, "500")], sender="OMS1")
    f = codec.parse_new_order_single(parse(text))
    assert f.preallocations == (("SMA0001", Decimal(1000)), ("SMA0002", Decimal(500)))
    assert f.preallocation_reason == "client directed" and f.side == "sell"
