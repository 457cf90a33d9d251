"""More of FIX_ALLOCATION.md §7 on real sessions: scenarios 7, 11, 16, 17, 23 and 29.

Each test runs the gateway in process between the product's broker and OMS simulators
over quickfix on 127.0.0.1, and checks what crossed the wire (the gateway's wire log, what
the simulators recorded) and what the gateway stored.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import quickfix as fix

from gateway.clock import NEW_YORK, trade_date_of
from gateway.fix import tags as T
from gateway.fix.allocation_codec import JReceived
from gateway.fix.confirm_codec import build_confirmation
from gateway.fix.sim.broker import BrokerSimulator, FillPlan, SimOrder
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.fix.sim.plans import PostTradePlan
from gateway.persistence.store import Database
from tests.support.clock import FakeClock
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    Gateway,
    Ports,
    broker_sim,
    gateway_in_process,
    oms_sim,
    running,
    write_config,
)

pytestmark = pytest.mark.fix

QTY = Decimal(30_000)
FILLS = FillPlan(fills=3, interval_ms=20)


def _order(cl: str = "LS-1") -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side="buy", qty=QTY,
                        price=Decimal("190.50"))


@contextmanager
def _run(tmp_path: Path, post_trade: PostTradePlan, *, broker_extra: str = "",
         fills: FillPlan = FILLS) -> Iterator[tuple[BrokerSimulator, Gateway, OmsSimulator,
                                                     Ports]]:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=broker_extra)
    with running(tmp_path, ports, cfg, fills, post_trade=post_trade) as (broker, gw, oms):
        yield broker, gw, oms, ports


def _db(gw: Gateway) -> Database:
    assert gw.node is not None and gw.node.db is not None
    return gw.node.db


def _allocs(gw: Gateway) -> list[dict[str, Any]]:
    return _db(gw).load_allocations()


def _status(gw: Gateway, alloc_id: str) -> str | None:
    row = _db(gw).load_allocation(alloc_id)
    return None if row is None else str(row["status"])


def _all_affirmed(gw: Gateway, alloc_id: str) -> bool:
    lines = _db(gw).load_allocation_lines(alloc_id)
    return bool(lines) and all(x["ticket_state"] == "affirmed" for x in lines)


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


def _broker_out(gw: Gateway, msg_type: str) -> list[dict[str, Any]]:
    return _db(gw).wire_messages(session_id=BROKER_KEY, direction="out", msg_type=msg_type)


def _field(raw: bytes, tag: int) -> list[bytes]:
    return re.findall(rb"\x01" + str(tag).encode() + rb"=([^\x01]*)", raw)


def _processed_through(broker: BrokerSimulator, tag: str) -> None:
    """Return once the gateway has handled everything the broker sent so far.

    The barrier is a fill for no order on the same session, which only the dispatcher
    answers (DK): the dispatcher handles one session's messages in order, and the broker
    receives the gateway's messages in order, so once the DK is here, anything the gateway
    sent because of an earlier message has reached the broker too.
    """
    ghost = SimOrder(broker_order_id=f"BRK-{tag}", cl_ord_id=f"BARRIER-{tag}", symbol="AAPL",
                     side="buy", qty=Decimal(100), price=None)
    broker.send_raw_report(ghost, exec_id=f"BARRIER-{tag}", last_qty=Decimal(100),
                           last_px=Decimal(1))
    eventually(lambda: any(exec_id == f"BARRIER-{tag}" for exec_id, _ in broker.dont_knows),
               timeout=10, description=f"the DK for barrier {tag} reached the broker")


def _ak(confirm_id: str, alloc_id: str, individual_alloc_id: str,
        account: str = "SMA0001") -> fix.Message:
    """A well-formed confirmation (AK) naming whatever AllocID and line it is given."""
    now = datetime.now(UTC)
    qty, px = Decimal(100), Decimal("190.45")
    return build_confirmation(
        confirm_id=confirm_id, alloc_id=alloc_id, individual_alloc_id=individual_alloc_id,
        account=account, qty=qty, side="buy", symbol="AAPL", avg_px=px, gross=qty * px,
        net_money=qty * px, trade_date=trade_date_of(now).isoformat(), settl_date=None,
        transact_time=now)


# -- scenario 23 -----------------------------------------------------------------------------


def test_ak_for_an_unknown_allocation_or_line_is_rejected_and_alerted(tmp_path: Path) -> None:
    """Scenario 23: an AK naming an AllocID or IndividualAllocID we never sent (or a line
    of another J) is answered AU 940=2 774=99 and raises alert.unknown_confirmation."""
    with _run(tmp_path, PostTradePlan()) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _all_affirmed(gw, j1), timeout=30,
                   description="the broker's own AKs affirmed")
        real_line = _db(gw).load_allocation_lines(j1)[0]["individual_alloc_id"]
        cases = {
            "CNF-UNK-ALLOC": ("NO-SUCH-ALLOC", "NO-SUCH-ALLOC-1"),
            "CNF-UNK-LINE": (j1, f"{j1}-NO-SUCH-LINE"),
            "CNF-WRONG-ALLOC": ("NO-SUCH-ALLOC", real_line),
        }
        for confirm_id, (alloc_id, line_id) in cases.items():
            assert broker.engine.send(_ak(confirm_id, alloc_id, line_id))

        def answers() -> dict[str, tuple[str, str | None]]:
            return {au.confirm_id: (au.affirm_status, au.rej_reason)
                    for au in broker.affirmation_log if au.confirm_id in cases}

        got = eventually(lambda: len(answers()) == len(cases) and answers(), timeout=15,
                         description="an AU for each unknown AK")
        assert got == {cid: ("2", "99") for cid in cases}
        # The AUs on the wire, as the gateway logged them.
        aus = {m["ref_id"]: m["raw"] for m in _broker_out(gw, "AU")
               if m["ref_id"] in cases}
        assert set(aus) == set(cases)
        assert all(b"\x01940=2\x01" in raw and b"\x01774=99\x01" in raw for raw in aus.values())
        alerts = _db(gw).events("alert.unknown_confirmation")
        named = {json.loads(e["detail_json"])["confirm_id"] for e in alerts}
        assert named == set(cases)
        # Nothing of ours changed: the real line is still affirmed under the broker's AK.
        assert _all_affirmed(gw, j1)
        outcomes = {c["confirm_id"]: c["outcome"] for c in _db(gw).confirmations()}
        assert {outcomes[cid] for cid in cases} == {"unknown"}


def test_ak_without_no_capacities_gets_a_session_reject(tmp_path: Path) -> None:
    """Scenario 23, second part: NoCapacities(862) is required in an AK -> 35=3, 373=1,
    371=862; the AK is not stored and not answered."""
    with _run(tmp_path, PostTradePlan()) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _all_affirmed(gw, j1), timeout=30)
        line = _db(gw).load_allocation_lines(j1)[0]
        ak = _ak("CNF-NO-CAP", j1, line["individual_alloc_id"], line["account_id"])
        ak.removeGroup(fix.Group(T.NoCapacities, T.OrderCapacity))
        ak.removeField(T.NoCapacities)
        assert "\x01862=" not in ak.toString()
        assert broker.engine.send(ak)
        reject = eventually(lambda: next((r for r in broker.rejects if "|45=" in r
                                          and "|371=862|" in r), None), timeout=15,
                            description="a session Reject naming tag 862")
        assert "|35=3|" in reject and "|373=1|" in reject and "|372=AK|" in reject
        _processed_through(broker, "NOCAP")
        assert all(au.confirm_id != "CNF-NO-CAP" for au in broker.affirmation_log)
        assert all(c["confirm_id"] != "CNF-NO-CAP" for c in _db(gw).confirmations())
        assert _all_affirmed(gw, j1)


# -- scenario 7 ------------------------------------------------------------------------------


def test_bust_before_the_j_is_allocated_out_of_the_first_j(tmp_path: Path) -> None:
    """Scenario 7: a bust (150=H) while the order is still working: CumQty goes down, the
    OMS sees the bust, and the one J (71=0, no Replace) allocates what was left."""
    slow = FillPlan(fills=4, interval_ms=400)
    order = _order("BB-1")
    with _run(tmp_path, PostTradePlan(), fills=slow) as (broker, gw, oms, _ports):
        oms.send_order(order)
        # The broker knows the order under the gateway's ClOrdID, not the OMS's.
        sim = eventually(lambda: next(iter(broker.orders.values()), None), timeout=15)
        first = eventually(lambda: next(iter(sim.executions), None), timeout=15,
                           description="the first fill")
        bust = broker.bust(sim, first.exec_id)
        assert sim.fills_sent < 4, "the bust must go out while the order is still working"
        busted = first.qty
        # The order can no longer fill (the busted shares are not re-worked): once the
        # fills are over, the OMS cancels the rest and the executed part is allocated.
        eventually(lambda: sim.fills_sent == 4, timeout=15, description="every fill sent")
        filled = sum((ex.qty for ex in sim.executions), Decimal(0))
        assert filled == QTY
        assert oms.send_cancel(order)
        alloc = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)
        eventually(lambda: _status(gw, alloc["alloc_id"]) == "accepted", timeout=30)
        [alloc] = _allocs(gw)
        assert alloc["alloc_trans_type"] == "0" and alloc["ref_alloc_id"] is None
        assert Decimal(alloc["quantity"]) == filled - busted
        lines = _db(gw).load_allocation_lines(alloc["alloc_id"])
        assert sum(Decimal(x["qty"]) for x in lines) == filled - busted
        [wire] = _broker_out(gw, "J")
        assert b"\x0171=0\x01" in wire["raw"] and _field(wire["raw"], 72) == []
        assert _field(wire["raw"], 53) == [str(filled - busted).encode()]
        assert len(broker.allocations) == 1 and broker.allocations[0].quantity == filled - busted
        # The OMS got the bust, naming the fill under the ExecID it was given it with.
        seen = oms.executions["BB-1"]
        fill = next(e for e in seen if e.exec_type == "F")
        relay = eventually(lambda: next((e for e in oms.executions["BB-1"]
                                         if e.exec_type == "H"), None), timeout=10)
        assert relay.exec_ref_id == fill.exec_id and relay.last_qty == busted
        assert relay.cum_qty == Decimal(bust.getField(T.CumQty))
        assert not any(j.alloc_trans_type != "0" for j in oms.allocations)


# -- scenario 16 -----------------------------------------------------------------------------


def test_cancel_aks_after_a_j_cancel_get_no_au_and_no_bh(tmp_path: Path) -> None:
    """Scenario 16: after an operator's J Cancel, the broker's AK 666=2 close the tickets;
    none is answered with an AU, and no BH goes out, even past the AK wait."""
    with _run(tmp_path, PostTradePlan(), broker_extra="ak_timeout_minutes = 0.1") as (
            broker, gw, oms, ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _all_affirmed(gw, j1), timeout=30)
        lines = _db(gw).load_allocation_lines(j1)
        aus_before = len(broker.affirmation_log)
        assert aus_before == len(lines)
        bh_before = len(broker.confirmation_requests)
        code, body = _operate(ports, "cancel", j1, "block booked in error")
        assert code == 200
        cancel_id = body["result"]
        eventually(lambda: _status(gw, j1) == "cancelled"
                   and _status(gw, cancel_id) == "accepted", timeout=30)
        eventually(lambda: sum(1 for c in broker.sent_confirmations if c.trans_type == "2"
                               and c.alloc_id == j1) == len(lines), timeout=30,
                   description="one AK 666=2 per line sent")
        eventually(lambda: all(x["ticket_state"] == "cancelled"
                               for x in _db(gw).load_allocation_lines(j1)), timeout=30)
        # Past the AK wait of the Cancel J: the tick has looked for missing AKs.
        confirmations = gw.node.dispatcher.confirmations  # type: ignore[union-attr]
        eventually(lambda: cancel_id in confirmations.recently_checked, timeout=20,
                   description="the AK wait of the Cancel J ended and was acted on")
        _processed_through(broker, "CXL")
        assert len(broker.affirmation_log) == aus_before
        assert len(broker.confirmation_requests) == bh_before
        assert len(_broker_out(gw, "AU")) == aus_before
        assert len(_broker_out(gw, "BH")) == bh_before
        cancelled = [c for c in _db(gw).confirmations(j1) if c["trans_type"] == "2"]
        assert len(cancelled) == len(lines)
        assert all(c["outcome"] == "cancelled" and c["affirm_status"] is None
                   for c in cancelled)
        assert {t.state for t in broker.tickets_of(j1).values()} == {"cancelled"}


# -- scenario 11 -----------------------------------------------------------------------------


def test_fill_for_an_unknown_order_is_dk_with_reason_d_on_the_wire(tmp_path: Path) -> None:
    """Scenario 11: the DK (35=Q) the gateway sends carries DKReason(127)=D (unknown
    order), and no order or allocation is created."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports) as gw:
        assert broker.engine.wait_logged_on(30)
        ghost = SimOrder(broker_order_id="BRK-GHOST", cl_ord_id="NOT-OURS", symbol="AAPL",
                         side="buy", qty=Decimal(100), price=None)
        broker.send_raw_report(ghost, exec_id="GHOST-1", last_qty=Decimal(100),
                               last_px=Decimal(1))
        eventually(lambda: broker.dont_knows, timeout=10, description="the broker got a DK")
        [dk] = _broker_out(gw, "Q")
        assert b"\x01127=D\x01" in dk["raw"]
        assert b"\x0117=GHOST-1\x01" in dk["raw"] and b"\x0137=BRK-GHOST\x01" in dk["raw"]
        assert _db(gw).load_orders() == [] and _allocs(gw) == []


# -- scenario 29 -----------------------------------------------------------------------------


def test_block_traded_at_1955_new_york_keeps_its_trade_date_after_utc_midnight(
    tmp_path: Path,
) -> None:
    """Scenario 29: at 19:55 ET on 24 Nov 2026 UTC is already the 25th; the J still says
    TradeDate 20261124 and SettlDate 20261125 (T+1, the Wednesday before Thanksgiving)."""
    clock = FakeClock(datetime(2026, 11, 24, 19, 55, tzinfo=NEW_YORK))
    assert clock.now().astimezone(UTC).date() == date(2026, 11, 25)
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports, FILLS) as broker, \
            gateway_in_process(cfg, ports, clock) as gw:
        oms = OmsSimulator(port=ports.oms, state_dir=tmp_path / "oms", clock=clock)
        oms.start()
        try:
            assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30)
            assert oms.send_order(_order("EVE-1"))
            j = eventually(lambda: oms.allocation_for("EVE-1"), timeout=30,
                           description="the OMS got its J")
            [wire] = _broker_out(gw, "J")
            assert _field(wire["raw"], 75) == [b"20261124"]
            assert _field(wire["raw"], 64) == [b"20261125"]
            assert j.trade_date == "20261124" and j.settl_date == "20261125"
            [alloc] = _allocs(gw)
            assert (alloc["trade_date"], alloc["settl_date"]) == ("2026-11-24", "2026-11-25")
            [order] = _db(gw).load_orders()
            assert order["trade_date"] == "2026-11-24"
            assert broker.allocations[0].trade_date == "20261124"
        finally:
            oms.stop()


# -- scenario 17 -----------------------------------------------------------------------------


class _DropsMidSet(BrokerSimulator):
    """A broker that drops the connection right after the 2nd fragment of the first set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dropped = threading.Event()

    def _on_fragment(self, j: JReceived) -> None:
        super()._on_fragment(j)
        if not self.dropped.is_set() and len(self.fragments) == 2:
            self.dropped.set()
            session = fix.Session.lookupSession(self.engine.session_id)
            assert session is not None
            session.disconnect()


def test_broker_drops_mid_fragment_set_and_the_resend_completes_it(tmp_path: Path) -> None:
    """Scenario 17: the broker disconnects after the 2nd fragment; on reconnection the rest
    of the set is resent: TotNoAllocs constant, LastFragment=Y on the last fragment only,
    one booking with every line, accepted."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra="max_lines_per_j = 25")
    broker = _DropsMidSet(port=ports.broker, state_dir=tmp_path / "broker", plan=FILLS,
                          post_trade=PostTradePlan(acks=False))
    broker.start()
    try:
        with gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
            assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
            oms.send_order(_order("FRAG-1"))
            j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
            eventually(lambda: _status(gw, j1) == "accepted", timeout=30,
                       description="the fragmented J accepted after the drop")
            assert broker.dropped.is_set()
            lines = _db(gw).load_allocation_lines(j1)
            ids = [x["individual_alloc_id"] for x in lines]
            assert len(ids) > 50, "needs at least three fragments of 25"
            last_id = ids[-1].encode()
            parts = _broker_out(gw, "J")
            assert any(b"\x0143=Y\x01" in m["raw"] for m in parts), \
                "the fragments after the drop were resent"
            assert all(_field(m["raw"], 892) == [str(len(ids)).encode()] for m in parts)
            for m in parts:
                is_last = last_id in _field(m["raw"], 467)
                assert _field(m["raw"], 893) == [b"Y" if is_last else b"N"], m["text"]
            # Every line went out, each fragment at most 25 lines.
            sent = {x for m in parts for x in _field(m["raw"], 467)}
            assert sent == {x.encode() for x in ids}
            assert all(len(_field(m["raw"], 467)) <= 25 for m in parts)
            # Exactly one booking, with every line once.
            assert len(broker.allocations) == 1
            booked = broker.allocations[0]
            assert booked.alloc_id == j1
            assert sorted(str(x["individual_alloc_id"]) for x in booked.lines) == sorted(ids)
            assert [a.alloc_status for a in broker.sent_acks
                    if a.alloc_id == j1 and a.alloc_status != "3"] == ["0"]
    finally:
        broker.stop()
