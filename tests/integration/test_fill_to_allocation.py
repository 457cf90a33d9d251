"""OMS -> fixalloc -> broker -> partial fills -> J -> P, over real quickfix sessions."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from gateway.fix import tags as T
from gateway.fix.sim.broker import BrokerSimulator, FillPlan, SimOrder
from gateway.fix.sim.oms import BlotterOrder
from gateway.metrics import METRICS
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    OMS_KEY,
    Ports,
    broker_sim,
    gateway_in_process,
    oms_sim,
    running,
    write_config,
)

pytestmark = pytest.mark.fix

BLOCK = BlotterOrder(cl_ord_id="BLK-1", book="SMA-CORE", symbol="AAPL", side="buy",
                     qty=Decimal(500_000), ord_type="2", price=Decimal("190.50"))


def _sent_count(engine_session_id: fix.SessionID) -> int:
    session = fix.Session.lookupSession(engine_session_id)
    return int(session.getExpectedSenderNum()) - 1


def _processed_through(broker: BrokerSimulator, tag: str) -> None:
    """Return once the gateway's dispatcher has processed everything the broker sent so far.

    The barrier is one more message on the same broker session: a fill for no order, which
    only the dispatcher answers (DontKnowTrade). quickfix delivers one session's messages
    to the callback in sequence, the callback enqueues in that order and the dispatcher
    handles its inbox in order, so when the DK reaches the broker every earlier message
    has been fully handled, including whatever the dispatcher sent because of it (the
    outbound wire log is written on the sending thread before the bytes leave).
    """
    ghost = SimOrder(broker_order_id=f"BRK-{tag}", cl_ord_id=f"BARRIER-{tag}", symbol="AAPL",
                     side="buy", qty=Decimal(100), price=None)
    broker.send_raw_report(ghost, exec_id=f"BARRIER-{tag}", last_qty=Decimal(100),
                           last_px=Decimal(1))
    eventually(lambda: any(exec_id == f"BARRIER-{tag}" for exec_id, _ in broker.dont_knows),
               timeout=10, description=f"the DK for barrier {tag} reached the broker")


def test_block_is_routed_filled_allocated_and_every_message_persisted(
    tmp_path: Path, database_url: str
) -> None:
    """A block fills in parts, one J with every account goes out, P is recorded, all is stored."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, database_url=database_url)
    with running(tmp_path, ports, cfg, FillPlan(fills=5, interval_ms=20)) as (broker, gw, oms):
        oms.send_order(BLOCK)
        assert oms.wait(lambda: oms.allocation_for(BLOCK.cl_ord_id) is not None, 60)
        eventually(lambda: len(broker.allocations) == 1, 30, description="the broker got a J")
        db = gw.node.db
        eventually(lambda: db.load_allocations()[0]["status"] == "accepted", 30,
                   description="the allocation is accepted")
        # Let the final messages reach the wire log before counting.
        eventually(lambda: len(db.wire_messages(session_id=BROKER_KEY, direction="in",
                                                msg_type="P")) == 2, 10,
                   description="both Ps are in the wire log")
        broker_sent = _sent_count(broker.engine.session_id)
        oms_sent = _sent_count(oms.engine.session_id)
        broker_order = next(iter(broker.orders.values()))

        j = broker.allocations[0]
        assert j.alloc_trans_type == "0" and j.alloc_type == "1"
        assert j.quantity == Decimal(500_000) == broker_order.cum_qty
        assert sum(Decimal(str(x["qty"])) for x in j.lines) == j.quantity
        assert len({x["individual_alloc_id"] for x in j.lines}) == len(j.lines) > 150
        first = j.lines[0]
        roles = {role for _, _, role in first["parties"]}
        assert roles == {"28", "4"}  # custodian and prime broker as clearing firm
        assert first["strategy"] and first["vehicle"]
        assert all(x["avg_px"] == j.avg_px for x in j.lines)

        relayed = oms.executions[BLOCK.cl_ord_id]
        assert [e.exec_type for e in relayed].count("F") == 5
        assert relayed[-1].cum_qty == Decimal(500_000) and relayed[-1].ord_status == "2"
        assert oms.allocation_for(BLOCK.cl_ord_id).alloc_id == j.alloc_id

        # Every message each counterparty sent (admin included) is in the wire log. The
        # broker goes on confirming each account (AK) after its P, so its count is read
        # until both sides agree rather than at one instant mid-stream.
        eventually(lambda: len(db.wire_messages(session_id=BROKER_KEY, direction="in"))
                   == _sent_count(broker.engine.session_id), 60,
                   description="every message the broker sent is in the wire log")
        inbound_broker = db.wire_messages(session_id=BROKER_KEY, direction="in")
        assert len(inbound_broker) >= broker_sent
        inbound_oms = db.wire_messages(session_id=OMS_KEY, direction="in")
        assert len(inbound_oms) == oms_sent
        types_out = [m["msg_type"] for m in db.wire_messages(session_id=BROKER_KEY,
                                                             direction="out")]
        assert types_out.count("D") == 1 and types_out.count("J") == 1 and "A" in types_out
        assert db.count("broker_reports") == 6  # New + 5 fills
        alloc = db.load_allocations()[0]
        lines = db.load_allocation_lines(alloc["alloc_id"])
        assert len(lines) == len(j.lines)
        decision = json.loads(db.load_decision(alloc["decision_id"])["canonical_json"])
        assert decision["method"] == "pro_rata"
        assert Decimal(decision["allocated_qty"]) == Decimal(500_000)
        assert len(decision["results"]) == 200


def test_possdup_and_possresend_repeats_are_applied_once(tmp_path: Path) -> None:
    """A fill repeated with PossDupFlag or PossResend is dropped; the ledger is unchanged."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, FillPlan(fills=3, interval_ms=20)) as (broker, gw, oms):
        oms.send_order(BLOCK)
        assert oms.wait(lambda: oms.allocation_for(BLOCK.cl_ord_id) is not None, 60)
        db = gw.node.db
        order_id = db.load_orders()[0]["order_id"]
        reports_before = db.count("broker_reports")
        relayed_before = len(oms.executions[BLOCK.cl_ord_id])
        relays_out_before = len(db.wire_messages(session_id=OMS_KEY, direction="out",
                                                 msg_type="8"))
        dupes_before = METRICS.duplicates.labels(session=BROKER_KEY)._value.get()
        er_in_before = len(db.wire_messages(session_id=BROKER_KEY, direction="in",
                                            msg_type="8"))

        broker.resend_as_duplicate(broker.sent_fills[0], flag=T.PossDupFlag)
        broker.resend_as_duplicate(broker.sent_fills[1], flag=T.PossResend)
        # Not the duplicates metric: the callback bumps it before the dispatcher would act.
        _processed_through(broker, "DUP")

        assert METRICS.duplicates.labels(session=BROKER_KEY)._value.get() == dupes_before + 2
        assert len(db.wire_messages(session_id=BROKER_KEY, direction="in",
                                    msg_type="8")) == er_in_before + 3  # 2 repeats + barrier
        assert db.count("broker_reports") == reports_before + 1  # the barrier's row only
        order = db.load_orders()[0]
        assert Decimal(order["cum_qty"]) == Decimal(500_000)
        # Applied once each: three fills stored (the repeats were dropped by the callback),
        # whether or not the finished order is still in the dispatcher's memory.
        applied = [r for r in db.load_reports(order_id)
                   if r["exec_type"] == "F" and not r["dk_reason"]]
        assert len(applied) == 3
        assert sum(Decimal(r["last_qty"]) for r in applied) == Decimal(500_000)
        assert len(db.wire_messages(session_id=OMS_KEY, direction="out",
                                    msg_type="8")) == relays_out_before  # nothing relayed
        assert len(oms.executions[BLOCK.cl_ord_id]) == relayed_before
        assert len(db.wire_messages(session_id=BROKER_KEY, direction="out",
                                    msg_type="J")) == 1
        assert len(broker.allocations) == 1


def test_conflicting_repeat_raises_an_alert_and_is_not_applied(tmp_path: Path) -> None:
    """The same ExecID with a different LastQty is recorded as an alert, never applied."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=20)) as (broker, gw, oms):
        oms.send_order(BLOCK)
        assert oms.wait(lambda: oms.allocation_for(BLOCK.cl_ord_id) is not None, 60)
        db = gw.node.db
        order = next(iter(broker.orders.values()))
        exec_id = broker.sent_fills[0].getField(T.ExecID)
        before = db.count("broker_reports")
        relays_out_before = len(db.wire_messages(session_id=OMS_KEY, direction="out",
                                                 msg_type="8"))
        broker.send_raw_report(order, exec_id=exec_id, last_qty=Decimal(999_900),
                               last_px=Decimal("1.00"))
        # The alert is written by the callback; wait until the dispatcher is past it too.
        _processed_through(broker, "CONFLICT")
        [alert] = db.events("alert.exec_id_conflict")
        detail = json.loads(alert["detail_json"])
        assert detail["repeat"]["last_qty"] == "999900"
        assert db.count("broker_reports") == before + 1  # the barrier's row only
        assert Decimal(db.load_orders()[0]["cum_qty"]) == Decimal(500_000)
        assert len(db.wire_messages(session_id=OMS_KEY, direction="out",
                                    msg_type="8")) == relays_out_before


@pytest.mark.parametrize(
    ("book", "symbol", "expected"),
    [("NO-SUCH-BOOK", "AAPL", "unknown book 'NO-SUCH-BOOK'"),
     ("SMA-CORE", "ZZZZ", "unknown symbol 'ZZZZ'")],
)
def test_unknown_book_or_symbol_is_rejected_with_a_precise_text(
    tmp_path: Path, book: str, symbol: str, expected: str
) -> None:
    """A block for an unknown book or symbol gets ER 39=8 with the reason; nothing is routed."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    order = BlotterOrder(cl_ord_id="BAD-1", book=book, symbol=symbol, side="buy",
                         qty=Decimal(1000), ord_type="2", price=Decimal(10))
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports) as gw, \
            oms_sim(tmp_path, ports) as oms:
        assert oms.engine.wait_logged_on(30)
        oms.send_order(order)
        assert oms.wait(lambda: oms.last_execution("BAD-1") is not None, 30)
        er = oms.last_execution("BAD-1")
        assert er.exec_type == "8" and er.ord_status == "8"
        assert expected in (er.text or "")
        assert broker.orders == {}
        assert gw.node.db.load_orders()[0]["status"] == "rejected"


def test_fill_for_unknown_order_gets_dont_know_trade(tmp_path: Path) -> None:
    """An ER whose ClOrdID matches no order is answered with DK (35=Q, DKReason D)."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports) as gw:
        assert broker.engine.wait_logged_on(30)
        ghost = SimOrder(broker_order_id="BRK-GHOST", cl_ord_id="NOT-OURS", symbol="AAPL",
                         side="buy", qty=Decimal(100), price=None)
        broker.send_raw_report(ghost, exec_id="GHOST-1", last_qty=Decimal(100),
                               last_px=Decimal(1))
        eventually(lambda: broker.dont_knows, 10, description="the broker got a DK")
        assert broker.dont_knows[0][0] == "GHOST-1"
        assert "NOT-OURS" in broker.dont_knows[0][1]
        assert len(gw.node.db.events("alert.dk_unknown_order")) == 1
