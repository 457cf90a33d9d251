"""FIX_ALLOCATION.md §7 scenario 20 on real sessions: the Ready-To-Book J.

A broker configured `alloc_type = "ready_to_book"` gets a J with AllocType 626=5, the
order in NoOrders and no NoAllocs (§1.4): it answers P 87=3 then 87=0 and sends no AK,
because the accounts are booked elsewhere (e.g. CTM). The gateway still decides and
stores the split, sends it to the OMS as a calculated J, never asks the broker for AKs
(BH) and the end-of-day sweep counts the lines as booked elsewhere, not unaffirmed.

The gateway and the OMS run on a hand-moved clock on a trading day, so that the AK waits
can be passed at once and the sweep run for that day.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import NEW_YORK
from gateway.fix.confirm_codec import build_confirmation
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.fix.sim.plans import PostTradePlan
from gateway.persistence.store import Database
from tests.support.clock import FakeClock
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    OMS_KEY,
    Gateway,
    Ports,
    broker_sim,
    gateway_in_process,
    http_get,
    oms_sim,
    write_config,
)

pytestmark = pytest.mark.fix

QTY = Decimal(30_000)
FILLS = FillPlan(fills=3, interval_ms=20)
START = datetime(2026, 11, 24, 15, 0, tzinfo=NEW_YORK)  # a Tuesday afternoon
TRADE_DATE = "2026-11-24"
RTB = 'alloc_type = "ready_to_book"'


def _order(cl: str) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side="buy", qty=QTY,
                        price=Decimal("190.50"))


@contextmanager
def _run(tmp_path: Path, post_trade: PostTradePlan, *, broker_extra: str = RTB
         ) -> Iterator[tuple[BrokerSimulator, Gateway, OmsSimulator, Ports, FakeClock]]:
    clock = FakeClock(START)
    ports = Ports.free()
    # The scheduled sweep is off: the test runs the one it checks through the API.
    cfg = write_config(tmp_path, ports, broker_extra=broker_extra,
                       extra="[sweep]\nenabled = false")
    with broker_sim(tmp_path, ports, FILLS, post_trade=post_trade) as broker, \
            gateway_in_process(cfg, ports, clock) as gw, \
            oms_sim(tmp_path, ports, clock=clock) as oms:
        assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30), \
            "FIX sessions did not log on"
        yield broker, gw, oms, ports, clock


def _db(gw: Gateway) -> Database:
    assert gw.node is not None and gw.node.db is not None
    return gw.node.db


def _allocs(gw: Gateway) -> list[dict[str, Any]]:
    return _db(gw).load_allocations()


def _status(gw: Gateway, alloc_id: str) -> str | None:
    row = _db(gw).load_allocation(alloc_id)
    return None if row is None else str(row["status"])


def _wire(gw: Gateway, session: str, direction: str, msg_type: str,
          ref_id: str | None = None) -> list[bytes]:
    return [bytes(m["raw"]) for m in _db(gw).wire_messages(
        session_id=session, direction=direction, msg_type=msg_type)
        if ref_id is None or m["ref_id"] == ref_id]


def _field(raw: bytes, tag: int) -> list[bytes]:
    return re.findall(rb"\x01" + str(tag).encode() + rb"=([^\x01]*)", raw)


def _operate(ports: Ports, action: str, alloc_id: str, reason: str) -> tuple[int, Any]:
    body = json.dumps({"reason": reason, "actor": "ops:test"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports.http}/allocations/{alloc_id}/{action}", data=body,
        method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _assert_rtb_j(raw: bytes, trans: str) -> None:
    """The broker's J: 626=5, the order in NoOrders, the block figures, no account line."""
    assert _field(raw, 626) == [b"5"] and _field(raw, 71) == [trans.encode()]
    assert _field(raw, 73) == [b"1"] and _field(raw, 11)
    for tag in (78, 79, 80, 467, 154, 118, 892, 893):
        assert _field(raw, tag) == [], f"tag {tag} on a Ready-To-Book J"
    assert _field(raw, 75) == [b"20261124"] and _field(raw, 64) == [b"20261125"]
    if trans != "2":
        assert len(_field(raw, 53)) == len(_field(raw, 6)) == len(_field(raw, 381)) == 1


def test_ready_to_book_j_is_accepted_and_nothing_waits_for_an_ak(tmp_path: Path) -> None:
    """Scenario 20: J 626=5 without NoAllocs; P 87=3 then 87=0; no AK, no BH, the lines
    booked elsewhere; the OMS gets the split; the sweep reports nothing unaffirmed. An AK
    that arrives later for a line (the allocation done elsewhere) is matched as usual."""
    # An AK wait of 0.6 seconds: a line awaiting an AK would get a BH at the next tick.
    extra = f"{RTB}\nak_timeout_minutes = 0.01"
    with _run(tmp_path, PostTradePlan(), broker_extra=extra) as (broker, gw, oms, ports,
                                                                 clock):
        oms.send_order(_order("RTB-1"))
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _status(gw, j1) == "accepted", timeout=30,
                   description="the RTB J accepted")

        # What crossed the wire to the broker, as we logged it and as the broker read it.
        [raw] = _wire(gw, BROKER_KEY, "out", "J")
        _assert_rtb_j(raw, "0")
        assert _field(raw, 53) == [b"30000"]
        [seen] = broker.allocations
        assert (seen.alloc_id, seen.alloc_type, seen.lines) == (j1, "5", ())
        assert broker.bookings[j1].lines == [] and broker.bookings[j1].status == "accepted"
        # P 87=3, then 87=0: sent by the broker, received and stored in that order.
        assert [a.alloc_status for a in broker.sent_acks if a.alloc_id == j1] == ["3", "0"]
        ps = _wire(gw, BROKER_KEY, "in", "P", j1)
        assert [_field(p, 87) for p in ps] == [[b"3"], [b"0"]]

        # Our record: the engine's split, each line booked elsewhere (no AK expected).
        lines = _db(gw).load_allocation_lines(j1)
        assert len(lines) > 1 and sum(Decimal(x["qty"]) for x in lines) == QTY
        assert {x["ticket_state"] for x in lines} == {"booked_elsewhere"}
        alloc = _db(gw).load_allocation(j1)
        assert alloc is not None and (alloc["alloc_type"], alloc["fragments"]) == ("5", 1)

        # The OMS's copy carries every line, as a calculated allocation.
        oms_j = eventually(lambda: oms.allocation_for("RTB-1"), timeout=10,
                           description="the OMS got its J")
        assert oms_j.alloc_type == "1" and len(oms_j.lines) == len(lines)
        assert {x["individual_alloc_id"] for x in oms_j.lines} == {
            x["individual_alloc_id"] for x in lines}
        assert sum(Decimal(str(x["qty"])) for x in oms_j.lines) == QTY
        [oms_raw] = _wire(gw, OMS_KEY, "out", "J")
        assert _field(oms_raw, 626) == [b"1"] and _field(oms_raw, 78) == [
            str(len(lines)).encode()]

        # Past the broker's AK wait: the AK timer looks at J1 and asks for nothing.
        clock.advance(timedelta(minutes=5))
        confirmations = gw.node.dispatcher.confirmations  # type: ignore[union-attr]
        eventually(lambda: j1 in confirmations.recently_checked, timeout=10,
                   description="the AK timer checked J1")
        time.sleep(1)  # anything it had sent would be on the wire by now
        assert all(x["bh_sent_at"] is None and x["confirm_req_id"] is None
                   for x in _db(gw).load_allocation_lines(j1))
        assert _wire(gw, BROKER_KEY, "out", "BH") == [] and broker.confirmation_requests == []
        assert broker.sent_confirmations == [] and _wire(gw, BROKER_KEY, "in", "AK") == []
        assert _db(gw).confirmations(j1) == []

        # The end-of-day sweep at the DTC cutoff, six hours after P accepted.
        clock.advance(datetime(2026, 11, 24, 21, 5, tzinfo=NEW_YORK) - clock.now())
        code, ran = http_get(ports.http, "/sweep/run", method="POST",
                             body={"at": "21:00", "date": TRADE_DATE})
        assert code == 200, ran
        report = ran["report"]
        totals = report["totals"]
        assert (totals["blocks_done"], totals["allocated_pct"], totals["accepted_pct"]) == (
            1, "100.0", "100.0")
        assert (totals["tickets"], totals["unaffirmed"], totals["booked_elsewhere"]) == (
            0, 0, len(lines))
        assert report["by_broker"]["BRKA"]["booked_elsewhere"] == len(lines)
        assert sum(f["booked_elsewhere"] for f in report["by_account"].values()) == len(lines)
        assert report["unaffirmed_tickets"] == []
        assert [i for i in report["open_items"] if i["kind"] == "missing_ak"] == []
        assert report["open_items"] == [], report["open_items"]
        assert _wire(gw, BROKER_KEY, "out", "BH") == []

        # The allocation done elsewhere: an AK for one of our lines is matched and affirmed.
        line = lines[0]
        qty, px = Decimal(line["qty"]), Decimal(line["avg_px"])
        gross = (qty * px).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        assert broker.engine.send(build_confirmation(
            confirm_id="CTM-1", alloc_id=j1, individual_alloc_id=line["individual_alloc_id"],
            account=line["account_id"], qty=qty, side="buy", symbol="AAPL", avg_px=px,
            gross=gross, net_money=gross, trade_date=TRADE_DATE, settl_date="2026-11-25",
            transact_time=clock.now()))
        eventually(lambda: _db(gw).line(line["individual_alloc_id"])["ticket_state"]
                   == "affirmed", timeout=15, description="the late AK affirmed")
        eventually(lambda: [(au.confirm_id, au.affirm_status) for au in broker.affirmation_log]
                   == [("CTM-1", "3")], timeout=10, description="AU 940=3 for it")


def test_replace_after_a_bust_and_cancel_keep_the_ready_to_book_form(tmp_path: Path) -> None:
    """A bust after the J: J Replace (71=1, 796=2) still 626=5 without NoAllocs; then an
    operator's Cancel (71=2) likewise; the OMS gets both with its lines (626=1)."""
    with _run(tmp_path, PostTradePlan(bust_after_j=(0,))) as (broker, gw, oms, ports, _clock):
        oms.send_order(_order("RTB-2"))
        eventually(lambda: len(_allocs(gw)) == 2, timeout=30, description="J2 stored")
        j1, j2 = (a["alloc_id"] for a in _allocs(gw))
        eventually(lambda: _status(gw, j2) == "accepted" and _status(gw, j1) == "replaced",
                   timeout=30, description="the Replace accepted")
        [raw2] = _wire(gw, BROKER_KEY, "out", "J", j2)
        _assert_rtb_j(raw2, "1")
        assert _field(raw2, 72) == [j1.encode()] and _field(raw2, 796) == [b"2"]
        assert _field(raw2, 53) == [b"20000"]  # 30,000 less the busted 10,000
        assert [(j.alloc_type, j.lines) for j in broker.allocations] == [("5", ()), ("5", ())]
        lines2 = _db(gw).load_allocation_lines(j2)
        assert {x["ticket_state"] for x in lines2} == {"booked_elsewhere"}
        # The J is marked replaced a moment before its tickets are marked superseded.
        eventually(lambda: {x["ticket_state"] for x in _db(gw).load_allocation_lines(j1)}
                   == {"superseded"}, timeout=10, description="J1's tickets superseded")
        oms_j2 = eventually(lambda: next((j for j in oms.allocations if j.alloc_id == j2),
                                         None), timeout=10, description="the OMS's Replace")
        assert (oms_j2.alloc_type, oms_j2.alloc_trans_type) == ("1", "1")
        assert len(oms_j2.lines) == len(lines2)

        code, body = _operate(ports, "cancel", j2, "block booked in error")
        assert code == 200, body
        j3 = body["result"]
        eventually(lambda: _status(gw, j2) == "cancelled", timeout=30,
                   description="the Cancel accepted")
        [raw3] = _wire(gw, BROKER_KEY, "out", "J", j3)
        _assert_rtb_j(raw3, "2")
        assert _field(raw3, 72) == [j2.encode()]
        # As with the Replace: the J is marked cancelled a moment before its tickets are.
        eventually(lambda: {x["ticket_state"] for x in _db(gw).load_allocation_lines(j2)}
                   == {"cancelled"}, timeout=10, description="J2's tickets cancelled")
        oms_j3 = eventually(lambda: next((j for j in oms.allocations if j.alloc_id == j3),
                                         None), timeout=10, description="the OMS's Cancel")
        assert (oms_j3.alloc_type, oms_j3.alloc_trans_type) == ("1", "2")
        assert broker.sent_confirmations == [] and _db(gw).confirmations() == []
