"""Cancel/replace (35=G) and PreAllocGrp on order messages, through the FIX 4.4 dictionary."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from gateway.fix import codec, replace_codec
from tests.unit.gateway.fixmsg import pairs, raw

ROOT = Path(__file__).resolve().parents[3]
DICTIONARY = fix.DataDictionary(str(ROOT / "fix_specs" / "FIX44.xml"))
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

_G = [(37, "BRK1"), (41, "BLK-1"), (11, "BLK-1-R1"), (1, "SMA-CORE"), (21, "1"),
      (55, "AAPL"), (54, "1"), (60, "20261120-15:00:00.000"), (38, "40000"), (40, "2"),
      (44, "191.25")]


def parse(text: str) -> fix.Message:
    return fix.Message(text, DICTIONARY, True)


def test_a_g_without_noallocs_leaves_the_allocations_unchanged() -> None:
    f = replace_codec.parse_cancel_replace(parse(raw("G", _G, sender="OMS1")))
    assert (f.cl_ord_id, f.orig_cl_ord_id, f.book) == ("BLK-1-R1", "BLK-1", "SMA-CORE")
    assert (f.order_qty, f.price, f.side, f.ord_type) == (Decimal(40000), Decimal("191.25"),
                                                          "buy", "2")
    assert f.preallocations is None


def test_a_g_with_noallocs_carries_the_complete_new_split_and_its_reason() -> None:
    body = [*_G, (58, "IPS addendum 8"), (78, "2"), (79, "SMA0001"), (80, "30000"),
            (79, "SMA0002"), (80, "10000")]
    f = replace_codec.parse_cancel_replace(parse(raw("G", body, sender="OMS1")))
    assert f.preallocations == (("SMA0001", Decimal(30000)), ("SMA0002", Decimal(10000)))
    assert f.text == "IPS addendum 8"


def test_a_g_with_a_bad_quantity_names_the_tag() -> None:
    body = [(t, "1e9") if t == 38 else (t, v) for t, v in _G]
    with pytest.raises(codec.DecodeError) as err:
        replace_codec.parse_cancel_replace(parse(raw("G", body, sender="OMS1")))
    assert err.value.tag == 38


def test_our_g_with_a_new_pre_allocation_passes_the_dictionary() -> None:
    msg = replace_codec.build_cancel_replace(
        cl_ord_id="FA1~R2", orig_cl_ord_id="FA1~R1", broker_order_id="BRK1", symbol="AAPL",
        side="buy", qty=Decimal(40000), ord_type="2", price=Decimal("191.25"),
        time_in_force="0", transact_time=NOW)
    replace_codec.add_preallocations(msg, "FA1-PA2", [("SMA0001", Decimal(30000)),
                                                      ("SMA0002", Decimal(10000))])
    for tag, value in ((49, "FIXALLOC"), (56, "BRKA"), (34, "7"),
                       (52, "20261120-15:00:00.000")):
        msg.getHeader().setField(tag, value)
    text = msg.toString()
    DICTIONARY.validate(parse(text))  # the group in dictionary order, required fields present
    fields = pairs(text)
    assert (70, "FA1-PA2") in fields and (591, "0") in fields and (78, "2") in fields
    assert [v for t, v in fields if t in (79, 467, 80)] == [
        "SMA0001", "FA1-PA2-1", "30000", "SMA0002", "FA1-PA2-2", "10000"]
    alloc_id, lines = replace_codec.read_preallocations(parse(text))
    assert alloc_id == "FA1-PA2" and lines == (("SMA0001", Decimal(30000)),
                                               ("SMA0002", Decimal(10000)))


def test_a_refused_g_is_answered_35_9_with_response_to_2() -> None:
    msg = replace_codec.build_replace_reject(order_id="FA1", cl_ord_id="BLK-1-R1",
                                             orig_cl_ord_id="BLK-1", ord_status="1",
                                             reason="99", text="OrderQty too small")
    f = codec.parse_order_cancel_reject(parse(msg.toString()))
    assert (f.response_to, f.reason, f.cl_ord_id, f.orig_cl_ord_id) == (
        "2", "99", "BLK-1-R1", "BLK-1")
