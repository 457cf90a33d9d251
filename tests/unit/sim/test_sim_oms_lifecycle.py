"""The OMS simulator records the lifecycle the gateway relays: busts and corrections with
the ExecRefID they name, each J with its trans type and RefAllocID, P for each J."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from gateway.fix import allocation_codec, codec, confirm_codec
from gateway.fix import tags as T
from gateway.fix.allocation_codec import JBlock, JLine
from gateway.fix.sim.common import SimApplication, SimEngine
from gateway.fix.sim.oms import OmsSimulator
from gateway.ports import free_port
from tests.support.eventually import eventually
from tests.unit.sim.peer import SETTL_DATE, TRADE_DATE

pytestmark = pytest.mark.fix


class FakeGateway(SimApplication):
    """The gateway's side of the OMS session (acceptor FIXALLOC <- OMS1)."""

    def __init__(self, port: int, state: Path) -> None:
        super().__init__(None)
        self.acks: list[allocation_codec.AllocAckFields] = []
        self.engine = SimEngine(self, role="acceptor", sender="FIXALLOC", target="OMS1",
                                port=port, state_dir=state)

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type != "P":
            raise fix.UnsupportedMessageType()
        self.acks.append(allocation_codec.parse_allocation_ack(message))

    def er(self, exec_id: str, exec_type: str, status: str, last: tuple[int, str],
           cum: int, ref: str | None = None) -> None:
        msg = codec.build_execution_report(
            order_id="GW1", cl_ord_id="B1", exec_id=exec_id, exec_type=exec_type,
            ord_status=status, symbol="AAPL", side="buy", order_qty=Decimal(1000),
            last_qty=Decimal(last[0]), last_px=Decimal(last[1]), cum_qty=Decimal(cum),
            avg_px=Decimal("190.00") if cum else Decimal(0), leaves_qty=Decimal(1000 - cum),
            book="SMA-CORE", transact_time=datetime.now(UTC), trade_date=TRADE_DATE)
        if ref:
            msg.setField(T.ExecRefID, ref)
        self.engine.send(msg)

    def j(self, alloc_id: str, trans: str, ref: str | None, qty: int,
          fragments: int = 0) -> None:
        block = JBlock(alloc_id=alloc_id, alloc_trans_type=trans, alloc_type="1",
                       cl_ord_id="B1", broker_order_id="GW1", order_qty=Decimal(1000),
                       side="buy", symbol="AAPL", quantity=Decimal(qty),
                       avg_px=Decimal("190.00"), trade_date=TRADE_DATE, settl_date=SETTL_DATE,
                       transact_time=datetime.now(UTC), ref_alloc_id=ref)
        line = JLine(individual_alloc_id=f"{alloc_id}-1", account_id="ACC1", qty=Decimal(qty),
                     avg_px=Decimal("190.00"), custodian=None, prime_broker=None,
                     strategy=None, vehicle=None)
        if fragments:
            each = Decimal(qty) / fragments
            for n in range(fragments):
                part = JLine(individual_alloc_id=f"{alloc_id}-{n}", account_id=f"ACC{n}",
                             qty=each, avg_px=Decimal("190.00"), custodian=None,
                             prime_broker=None, strategy=None, vehicle=None)
                self.engine.send(allocation_codec.build_allocation_instruction(
                    block, [part], fragment=(fragments, n == fragments - 1)))
            return
        lines = [] if trans == "2" else [line]
        self.engine.send(allocation_codec.build_allocation_instruction(block, lines))


def test_the_oms_records_busts_corrections_and_each_j_of_the_chain(tmp_path: Path) -> None:
    port = free_port()
    gw = FakeGateway(port, tmp_path / "gw")
    gw.start()
    oms = OmsSimulator(port=port, state_dir=tmp_path / "oms", ack_allocations=True)
    try:
        oms.start()
        eventually(oms.engine.is_logged_on, timeout=15)
        gw.er("X1", "F", "2", (1000, "190.00"), 1000)
        gw.j("A1", "0", None, 1000)
        gw.er("X2", "G", "2", (1000, "190.10"), 1000, ref="X1")
        gw.er("X3", "H", "0", (1000, "190.10"), 0, ref="X2")
        gw.j("A2", "1", "A1", 600)
        gw.j("A3", "2", "A2", 600)
        gw.engine.send(confirm_codec.build_confirmation(
            confirm_id="C1", alloc_id="A2", individual_alloc_id="A2-1", account="ACC1",
            qty=Decimal(600), side="buy", symbol="AAPL", avg_px=Decimal("190.00"),
            gross=Decimal("114000.00"), net_money=Decimal("114000.00"), trade_date=TRADE_DATE,
            settl_date=SETTL_DATE, transact_time=datetime.now(UTC)))
        gw.j("A4", "0", None, 1000, fragments=2)
        eventually(lambda: len(oms.confirmations) == 1 and len(gw.acks) == 6)
        trail = [(e.exec_type, e.exec_ref_id) for e in oms.executions["B1"]]
        assert trail == [("F", None), ("G", "X1"), ("H", "X2")]
        assert oms.last_execution("B1").cum_qty == 0  # type: ignore[union-attr]
        chain = [(j.alloc_id, j.alloc_trans_type, j.ref_alloc_id)
                 for j in oms.allocations_for("B1")]
        assert chain == [("A1", "0", None), ("A2", "1", "A1"), ("A3", "2", "A2"),
                         ("A4", "0", None)]
        assert len(oms.allocations[-1].lines) == 2 and len(oms.fragments) == 2
        assert oms.allocation_for("B1").alloc_id == "A1"  # type: ignore[union-attr]
        assert [(a.alloc_id, a.alloc_status) for a in gw.acks] == \
            [("A1", "0"), ("A2", "0"), ("A3", "0"), ("A4", "3"), ("A4", "3"), ("A4", "0")]
        text = "\n".join(oms.lifecycle)
        assert "exec_type=H (trade_cancel) exec_id=X3 ref=X2" in text
        assert "J   A2 trans=replace ref=A1 qty=600" in text
        assert "J   A3 trans=cancel ref=A2" in text
        assert "AK  C1 trans=0 ACC1" in text
    finally:
        oms.stop()
        if gw.engine.engine is not None:
            gw.engine.engine.stop(True)
            gw.engine.engine = None
            gc.collect()
