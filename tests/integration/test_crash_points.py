"""The daemon killed (SIGKILL) at every step that writes or sends, then restarted.

The kill lands exactly at the step: the daemon kills itself when FIXALLOC_FAULT names it
(gateway/faults.py), not after a timed sleep. Each run ends the same way: exactly one J
as New per block on each session, no ER relayed to the OMS twice, every fill stored once,
the broker's P recorded. The step that matters most for "never a second J as New" is
`broker_j_stored`: quickfix has stored the J for resend, but neither its wire row nor the
allocation's "sent" (which commit together) is in the database; only quickfix's store
tells recovery not to send it again.
"""

from __future__ import annotations

import signal
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    OMS_KEY,
    Gateway,
    Ports,
    broker_sim,
    http_get,
    oms_sim,
    start_daemon,
    stop_daemon,
    write_config,
)

pytestmark = pytest.mark.fix

FILLS = 6
QTY = Decimal(60_000)


def _accepted(port: int) -> bool:
    code, body = http_get(port, "/status")
    return code == 200 and body["allocations"].get("accepted") == 1


def _run_with_faults(tmp_path: Path, faults: list[str]
                     ) -> tuple[Path, BrokerSimulator, OmsSimulator, str]:
    """Send one block with the daemon dying at each fault in turn, then run it clean."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    log = tmp_path / "daemon.log"
    order = BlotterOrder(cl_ord_id="CP-1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=QTY, ord_type="2", price=Decimal("190.50"))
    with broker_sim(tmp_path, ports, FillPlan(fills=FILLS, interval_ms=40)) as broker, \
            oms_sim(tmp_path, ports) as oms:
        sent = False
        for fault in faults:
            daemon = start_daemon(cfg, log, fault=fault)
            try:
                if not sent:
                    assert oms.engine.wait_logged_on(60), log.read_text()[-3000:]
                    oms.send_order(order)
                    sent = True
                assert daemon.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
            finally:
                if daemon.poll() is None:
                    daemon.kill()
            assert f"fault injected at {fault.split(':')[0]}" in log.read_text()
        daemon = start_daemon(cfg, log)
        try:
            eventually(lambda: _accepted(ports.http), timeout=90,
                       description=f"the block was allocated and accepted after {faults}")
            eventually(lambda: oms.allocation_for(order.cl_ord_id), timeout=30,
                       description="the OMS received its J")
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        return cfg, broker, oms, order.cl_ord_id


def _check_once(cfg: Path, broker: BrokerSimulator, oms: OmsSimulator, cl_ord_id: str) -> None:
    db = Gateway(cfg, Ports(0, 0, 0)).db
    try:
        fills = [r for r in db.load_reports() if r["exec_type"] == "F"]
        assert len(fills) == FILLS == len({r["exec_id"] for r in fills})
        assert sum(Decimal(r["last_qty"]) for r in fills) == QTY
        for key in (BROKER_KEY, OMS_KEY):
            # A J handed to quickfix while the session was down goes out first as a
            # PossDup resend of its own sequence number: that is one message. A second J
            # as New would carry a sequence number of its own.
            new_j = {m["seq_num"] for m in db.wire_messages(session_id=key, direction="out",
                                                            msg_type="J")
                     if b"\x0171=0\x01" in m["raw"]}
            assert len(new_j) == 1, f"{key}: {len(new_j)} J sent as New"
        [alloc] = db.load_allocations()
        assert alloc["status"] == "accepted" and alloc["sent_at"] and alloc["oms_sent_at"]
        # The audit record survives the crash too: every fill as received, and every relay
        # the OMS holds as it went out (first time or resent after the restart).
        received = {m["ref_id"] for m in db.wire_messages(session_id=BROKER_KEY,
                                                            direction="in", msg_type="8")}
        relayed = {m["ref_id"] for m in db.wire_messages(session_id=OMS_KEY,
                                                           direction="out", msg_type="8")}
    finally:
        db.dispose()
    assert len(broker.allocations) == 1, "the broker booked a second J"
    assert broker.allocations[0].quantity == QTY
    relays = Counter(e.exec_id for e in oms.executions[cl_ord_id])
    assert all(n == 1 for n in relays.values()), f"relayed twice: {relays}"
    assert {r["exec_id"] for r in fills} <= received, "a fill is missing from the wire log"
    assert set(relays) <= relayed, "a relay the OMS holds is missing from the wire log"
    assert sum(e.last_qty for e in oms.executions[cl_ord_id] if e.exec_type == "F") == QTY


@pytest.mark.parametrize("fault", [
    "decision_stored",     # decision stored, no J handed to quickfix
    "broker_j_stored",     # J to the broker in quickfix's store; its wire row and "sent"
                           # not yet committed
    "broker_j_sent",       # J to the broker on the wire
    "broker_j_recorded",   # J to the broker recorded, J to the OMS not yet sent
    "oms_j_stored",        # J to the OMS in quickfix's store, nothing of it committed
    "oms_j_sent",          # J to the OMS on the wire
    "ack_received",        # the broker's P read, not yet stored on the allocation
    "relay_stored:3",      # the third relay in quickfix's store; its wire row, the order
                           # and its mark not yet committed
    "relay_sent:3",        # the third ER relay on the wire
    "fill_stored:4",       # the fourth fill committed, not yet handed to the dispatcher
])
def test_kill_at_a_step_then_restart_sends_nothing_twice(tmp_path: Path, fault: str) -> None:
    _check_once(*_run_with_faults(tmp_path, [fault]))


def test_kill_during_recovery_itself(tmp_path: Path) -> None:
    """A fill stored but never relayed, then a crash while recovery relays it."""
    _check_once(*_run_with_faults(tmp_path, ["fill_stored:3", "recovery_redriving"]))


def test_kill_after_recovery_hands_a_relay_to_quickfix(tmp_path: Path) -> None:
    """Recovery relays while the sessions are down: quickfix stores the relay without
    sending it. A kill before the relay is marked must not make the next start relay it
    again (the OMS would get the stored copy on resend, and the new one)."""
    _check_once(*_run_with_faults(tmp_path, ["fill_stored:3", "relay_sent:1"]))
