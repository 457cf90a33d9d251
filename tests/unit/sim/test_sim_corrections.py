"""Busts (150=H) and corrections (150=G) from the broker simulator: ExecRefID, recomputed
CumQty/LeavesQty/AvgPx, a correction of a correction, the FIX 4.2 forms. One broker and
one peer serve the module; each test has an order (and plan) of its own."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import BrokerSimulator, PostTradePlan
from tests.support.eventually import eventually
from tests.unit.sim.peer import ErSeen, GatewayPeer, new_order, pair

pytestmark = pytest.mark.fix

QTY = Decimal(3000)
P0, P1 = Decimal("189.90"), Decimal("189.96")  # the two fills of FAST at limit 190.00
Desk = tuple[BrokerSimulator, GatewayPeer]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    with pair(tmp_path_factory.mktemp("corrections")) as both:
        yield both


def _corrections(peer: GatewayPeer, order: str, n: int) -> list[ErSeen]:
    def seen() -> list[ErSeen]:
        return [e for e in peer.executions if e.exec_ref_id and e.fields.cl_ord_id == order]

    eventually(lambda: len(seen()) >= n, description=f"{n} busts/corrections of {order}")
    return seen()


def test_a_bust_after_the_j_lowers_cum_qty_and_names_the_fill(desk: Desk) -> None:
    """Scenarios 7/8: 150=H, ExecRefID = the busted ExecID, CumQty down, LeavesQty up."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(bust_after_j=(0,)))
    done = peer.filled(o, QTY)
    fills = peer.fills(o)
    assert [f.fields.last_px for f in fills] == [P0, P1]
    peer.send_j(f"{o}-A1", done, {"ACC1": QTY})
    [ak] = peer.wait_aks(1, f"{o}-A1")
    [bust] = _corrections(peer, o, 1)
    er = bust.fields
    assert (er.exec_type, bust.exec_ref_id) == ("H", fills[0].fields.exec_id)
    assert (er.last_qty, er.last_px) == (Decimal(1500), P0)
    assert (er.cum_qty, er.leaves_qty, er.ord_status) == (Decimal(1500), Decimal(1500), "1")
    assert er.avg_px == P1
    assert bust.exec_trans_type is None
    assert peer.order_seen.index(ak.confirm_id) < peer.order_seen.index(er.exec_id)
    assert broker.orders[o].executions[0].busted
    with pytest.raises(ValueError, match="already busted"):
        broker.bust(o, fills[0].fields.exec_id)


def test_a_correction_of_a_correction_refers_to_the_latest_exec_id(desk: Desk) -> None:
    """Scenario 9: the second 150=G names the first correction's ExecID."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(correct_after_j=((1, Decimal("190.50")),
                                                         (1, Decimal("190.70")))))
    done = peer.filled(o, QTY)
    fill1 = peer.fills(o)[1].fields
    peer.send_j(f"{o}-A1", done, {"ACC1": QTY})
    first, second = _corrections(peer, o, 2)
    assert (first.fields.exec_type, first.exec_ref_id) == ("G", fill1.exec_id)
    assert (second.fields.exec_type, second.exec_ref_id) == ("G", first.fields.exec_id)
    assert first.fields.last_px == Decimal("190.50")
    assert second.fields.last_px == Decimal("190.70")
    assert second.fields.cum_qty == QTY and second.fields.ord_status == "2"
    assert second.fields.avg_px == (1500 * P0 + 1500 * Decimal("190.70")) / QTY


def test_a_correction_with_a_new_quantity_and_a_bust_of_a_corrected_fill(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker)
    peer.filled(o, QTY)
    fill0 = peer.fills(o)[0].fields
    broker.correct(o, fill0.exec_id, Decimal(1000), Decimal("189.80"))
    [corr] = _corrections(peer, o, 1)
    assert (corr.fields.cum_qty, corr.fields.leaves_qty) == (Decimal(2500), Decimal(500))
    assert corr.fields.ord_status == "1"
    assert (corr.fields.last_qty, corr.fields.last_px) == (Decimal(1000), Decimal("189.80"))
    broker.bust(o, fill0.exec_id)  # named by the fill's own ExecID
    _, bust = _corrections(peer, o, 2)
    assert bust.exec_ref_id == corr.fields.exec_id  # the chain's latest
    assert (bust.fields.last_qty, bust.fields.cum_qty) == (Decimal(1000), Decimal(1500))
    assert broker.sent_corrections[-1].getField(19) == corr.fields.exec_id


def test_the_fix42_form_adds_exec_trans_type(desk: Desk) -> None:
    """Scenario 10: ExecTransType 1 (cancel) / 2 (correct) with 150=H/G."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(fix42_corrections=True, bust_after_j=(0,),
                                        correct_after_j=((1, Decimal("190.10")),)))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, {"ACC1": QTY})
    corr, bust = _corrections(peer, o, 2)
    assert (corr.wire_exec_type, corr.exec_trans_type) == ("G", "2")
    assert (bust.wire_exec_type, bust.exec_trans_type) == ("H", "1")


def test_the_fix42_only_form_uses_the_fills_own_exec_type(tmp_path: Path) -> None:
    # The 4.4 dictionary refuses 150=1/2: this peer reads without one.
    with pair(tmp_path, peer_extra={"UseDataDictionary": "N"}, comp="BRK42") as (broker, peer):
        peer.filled("B1", QTY)
        fill0, fill1 = (f.fields for f in peer.fills("B1"))
        broker.correct("B1", fill1.exec_id, None, Decimal("190.20"), fix42_only=True)
        broker.bust("B1", fill0.exec_id, fix42_only=True)
        corr, bust = _corrections(peer, "B1", 2)
        assert (corr.wire_exec_type, corr.exec_trans_type) == ("2", "2")  # the filling fill
        assert (bust.wire_exec_type, bust.exec_trans_type) == ("1", "1")  # a partial fill
        assert bust.fields.cum_qty == Decimal(1500)
