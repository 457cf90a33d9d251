"""Ready-To-Book (AllocType 626=5, FIX_ALLOCATION.md §1.4): NoOrders, no NoAllocs.

The codec builds it without lines and without NetMoney; the flow sends the broker that
form in one part (never fragmented) and the OMS the whole split as a calculated J.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import quickfix as fix

from gateway.allocation_flow import AllocationFlow
from gateway.fix import allocation_codec as ac
from gateway.orders import Order

ROOT = Path(__file__).resolve().parents[3]
DICTIONARY = fix.DataDictionary(str(ROOT / "fix_specs" / "FIX44.xml"))
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SOH = "\x01"


def _block(**kw: Any) -> ac.JBlock:
    base: dict[str, Any] = dict(
        alloc_id="A1", alloc_trans_type="0", alloc_type="5", cl_ord_id="C1",
        broker_order_id="B1", order_qty=Decimal(300), side="buy", symbol="AAPL",
        quantity=Decimal(300), avg_px=Decimal("190.0123"), trade_date="2026-11-20",
        settl_date="2026-11-23", transact_time=NOW)
    base.update(kw)
    return ac.JBlock(**base)


def _lines(n: int = 3, qty: int = 100) -> list[ac.JLine]:
    return [ac.JLine(f"A1-{i}", f"SMA{i}", Decimal(qty), Decimal("190.0123"), "CUSTUS33XXX",
                     "PB01", "LCG", "SMA-WRAP1") for i in range(n)]


def _tags(msg: fix.Message) -> dict[int, list[str]]:
    """Every tag of the message's body (header and trailer dropped), with its values."""
    out: dict[int, list[str]] = {}
    for pair in msg.toString().split(SOH):
        if pair:
            tag, _, value = pair.partition("=")
            out.setdefault(int(tag), []).append(value)
    for tag in (8, 9, 10, 35):
        out.pop(tag, None)
    return out


def test_a_ready_to_book_j_has_no_allocs_no_net_money_and_the_order() -> None:
    """626=5 New without lines: NoOrders (one order with its booking quantity), Quantity,
    AvgPx, dates and GrossTradeAmt = Quantity x AvgPx; no NoAllocs, no NetMoney."""
    msg = ac.build_allocation_instruction(_block(), [])
    tags = _tags(msg)
    assert tags[626] == ["5"] and tags[71] == ["0"]
    assert 78 not in tags and 79 not in tags and 80 not in tags and 467 not in tags
    assert 118 not in tags and 154 not in tags
    assert tags[857] == ["1"] and tags[73] == ["1"]
    assert (tags[11], tags[37], tags[38], tags[800]) == (["C1"], ["B1"], ["300"], ["300"])
    assert (tags[53], tags[6], tags[75], tags[64]) == (["300"], ["190.0123"], ["20261120"],
                                                       ["20261123"])
    assert tags[381] == ["57003.69"]  # 300 x 190.0123 = 57003.69, to the cent
    # Valid against the sessions' dictionary, and a receiver reads it back without lines.
    parsed = fix.Message(msg.toString(), DICTIONARY, True)
    j = ac.parse_allocation_instruction(parsed)
    assert (j.alloc_type, j.lines, j.cl_ord_ids, j.quantity) == ("5", (), ("C1",),
                                                                 Decimal(300))


def test_a_ready_to_book_j_takes_the_block_gross_when_given() -> None:
    msg = ac.build_allocation_instruction(
        _block(gross=Decimal("57003.70"), net_money=Decimal("57003.70")), [])
    tags = _tags(msg)
    assert tags[381] == ["57003.70"] and 118 not in tags


def test_a_ready_to_book_replace_and_cancel_keep_the_form() -> None:
    """Replace (71=1, after a bust) and Cancel (71=2) of an RTB J: 626=5, no NoAllocs."""
    replace = _tags(ac.build_allocation_instruction(
        _block(alloc_id="A2", alloc_trans_type="1", ref_alloc_id="A1",
               quantity=Decimal(200)), []))
    assert (replace[71], replace[626], replace[72], replace[796]) == (["1"], ["5"], ["A1"],
                                                                      ["2"])
    assert 78 not in replace and 118 not in replace and replace[53] == ["200"]
    cancel = _tags(ac.build_allocation_instruction(
        _block(alloc_id="A3", alloc_trans_type="2", ref_alloc_id="A2",
               canc_replace_reason="99"), []))
    assert (cancel[71], cancel[626]) == (["2"], ["5"])
    assert 78 not in cancel and 381 not in cancel and 118 not in cancel


def test_a_ready_to_book_j_is_not_held_to_the_quantity_sum() -> None:
    """Lines, if any, are information only on 626=5: no Σ AllocQty = Quantity check."""
    msg = ac.build_allocation_instruction(_block(), _lines(2))  # 200 of 300
    tags = _tags(msg)
    assert tags[78] == ["2"] and 118 not in tags


@pytest.mark.parametrize("alloc_type", ["1", "2"])
def test_a_calculated_or_preliminary_j_without_lines_still_raises(alloc_type: str) -> None:
    with pytest.raises(ValueError, match="needs at least one NoAllocs line"):
        ac.build_allocation_instruction(_block(alloc_type=alloc_type), [])
    with pytest.raises(ValueError, match="sum of AllocQty 200 differs from Quantity 300"):
        ac.build_allocation_instruction(_block(alloc_type=alloc_type), _lines(2))


# -- the flow: what goes to the broker and what to the OMS ------------------------------------


class _Capture:
    """FixOutbound's allocation port, building the real message instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, fix.Message, tuple[int, bool] | None]] = []

    def broker_key(self, broker_name: str) -> str:
        return f"FIX.4.4:FIXALLOC->{broker_name}"

    def send_udfs(self, key: str) -> bool:
        return True

    def allocation(self, key: str, block: ac.JBlock, lines: Sequence[ac.JLine], *,
                   send_udfs: bool, fragment: tuple[int, bool] | None = None) -> bool:
        self.sent.append((key, ac.build_allocation_instruction(
            block, lines, send_udfs=send_udfs, fragment=fragment), fragment))
        return True

    def handed_over_count(self, key: str, msg_type: str, ref_id: str) -> int:
        return 0


@pytest.mark.parametrize("trans", ["0", "1", "2"])
def test_the_flow_sends_the_broker_rtb_in_one_part_and_the_oms_every_line(trans: str) -> None:
    """A broker configured ready_to_book with max_lines_per_j = 2 still gets one J with
    no NoAllocs; the OMS gets the same J's five lines as a calculated allocation."""
    config = SimpleNamespace(config_hash=lambda: "test",
                             broker=lambda name: SimpleNamespace(max_lines_per_j=2,
                                                                 alloc_type="ready_to_book"))
    updates: list[dict[str, Any]] = []
    # No wire log here: nothing rides on it, so the flow records each J's state itself.
    db = SimpleNamespace(update_allocation=lambda _id, **k: updates.append(k),
                         riding_on_wire=lambda *_a: nullcontext(SimpleNamespace(done=False)))
    out = _Capture()
    flow = AllocationFlow(config, db, out, None, None, None,  # type: ignore[arg-type]
                          SimpleNamespace(now=lambda: NOW))
    order = Order(order_id="O1", oms_session="FIX.4.4:FIXALLOC->OMS1", oms_cl_ord_id="C-O1",
                  book="SMA-CORE", symbol="AAPL", side="buy", order_qty=Decimal(500),
                  ord_type="2", price=None, time_in_force=None, broker="BRKA",
                  trade_date="2026-11-20", broker_order_id="B1", alloc_id="O1-J1")
    lines = [] if trans == "2" else _lines(5)
    alloc = {"alloc_id": "O1-J1", "alloc_trans_type": trans, "alloc_type": "5",
             "quantity": "500", "avg_px": "190.0123", "trade_date": "2026-11-20",
             "settl_date": "2026-11-23", "ref_alloc_id": None if trans == "0" else "O1-J0"}
    rows = [{"individual_alloc_id": ln.individual_alloc_id, "account_id": ln.account_id,
             "qty": str(ln.qty), "avg_px": str(ln.avg_px), "custodian": ln.custodian,
             "prime_broker": ln.prime_broker, "strategy": ln.strategy, "vehicle": ln.vehicle}
            for ln in lines]
    assert flow._fragment_count("BRKA", 5, "5") == 1
    assert flow._fragments("BRKA", lines, "5") == [[]]
    flow.send_pending(order, stored=(alloc, rows))

    [(bkey, broker_j, fragment), (okey, oms_j, _)] = out.sent
    assert (bkey, okey, fragment) == ("FIX.4.4:FIXALLOC->BRKA", "FIX.4.4:FIXALLOC->OMS1",
                                      None)
    b, o = _tags(broker_j), _tags(oms_j)
    assert (b[626], b[71]) == (["5"], [trans]) and 78 not in b and 892 not in b
    assert 118 not in b
    assert o[626] == ["1"] and o[71] == [trans]
    if trans == "2":
        assert 78 not in o
    else:
        assert o[78] == ["5"] and len(o[467]) == 5 and o[118] == b[381] == ["95006.15"]
    assert [set(u) for u in updates] == [{"status", "sent_at"}, {"oms_sent_at"}]
