"""The broker simulator's P answers: accepted, block and account rejects, amendments of an
accepted J, fragments (repeated, incomplete, and across a restart in the middle of a set).

One broker and one peer serve the module: each test has an order of its own
(`new_order`) carrying its own PostTradePlan, which is also how a run gives one order a
behaviour of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import BrokerSimulator, PostTradePlan
from tests.support.eventually import eventually
from tests.unit.sim.peer import GatewayPeer, broker_at, new_order, pair

pytestmark = pytest.mark.fix

QTY = Decimal(3000)
SPLIT = {"ACC1": Decimal(1000), "ACC2": Decimal(1200), "ACC3": Decimal(800)}
Desk = tuple[BrokerSimulator, GatewayPeer]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    with pair(tmp_path_factory.mktemp("acks")) as both:
        yield both


def test_a_j_is_received_then_accepted(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker)
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    assert peer.final_ack(f"{o}-A1").alloc_status == "0"
    assert peer.acks_for(f"{o}-A1") == ["3", "0"]
    assert [j.alloc_id for j in broker.allocations if o in j.cl_ord_ids] == [f"{o}-A1"]
    assert broker.bookings[f"{o}-A1"].status == "accepted"


def test_the_nth_j_of_an_order_is_block_rejected_and_a_new_j_is_accepted(desk: Desk) -> None:
    """Scenario 12: the rejected J is dead; the next one is a New with its own AllocID."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(reject_block={1: "2"}))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    ack = peer.final_ack(f"{o}-A1")
    assert (ack.alloc_status, ack.rej_code) == ("1", "2")
    assert "incorrect average price" in (ack.text or "")
    peer.send_j(f"{o}-A2", done, SPLIT, trans="1", ref=f"{o}-A1")  # Replace of a dead J
    assert peer.final_ack(f"{o}-A2").rej_code == "7"
    peer.send_j(f"{o}-A3", done, SPLIT)
    assert peer.final_ack(f"{o}-A3").alloc_status == "0"
    assert peer.wait_aks(3, f"{o}-A3")
    assert peer.aks(f"{o}-A1") == []


def test_a_predicate_rejects_the_js_it_names(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker, PostTradePlan(reject_block_if=lambda j: "11" if "ACC3" in
                                        {ln["account"] for ln in j.lines} else None))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    assert peer.final_ack(f"{o}-A1").rej_code == "11"
    peer.send_j(f"{o}-A2", done, {"ACC1": Decimal(3000)})
    assert peer.final_ack(f"{o}-A2").alloc_status == "0"


def test_an_account_reject_lists_the_line_and_a_replace_without_it_is_accepted(
        desk: Desk) -> None:
    """Scenario 13: 87=2 with the line's IndividualAllocID and 776; Replace fixes it."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(reject_account={"ACC2": "0"}))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    ack = peer.final_ack(f"{o}-A1")
    assert ack.alloc_status == "2" and ack.rej_code is None
    assert ack.rejected_lines == ((f"{o}-A1-ACC2", "0"),)
    assert broker.bookings[f"{o}-A1"].status == "account_rejected"
    peer.send_j(f"{o}-A2", done, {"ACC1": Decimal(2200), "ACC3": Decimal(800)}, trans="1",
                ref=f"{o}-A1")
    assert peer.final_ack(f"{o}-A2").alloc_status == "0"
    aks = peer.wait_aks(2, f"{o}-A2")
    assert {(a.account, a.trans_type) for a in aks} == {("ACC1", "0"), ("ACC3", "0")}
    assert broker.bookings[f"{o}-A1"].status == "replaced"


@pytest.mark.parametrize("trans", ["1", "2"])
def test_an_amendment_of_an_accepted_j_can_be_refused(desk: Desk, trans: str) -> None:
    """Scenario 15: the broker may refuse a Replace/Cancel once it accepted the J."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(reject_replace_after_accept=True,
                                        reject_cancel_after_accept=True))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    peer.wait_aks(3, f"{o}-A1")
    peer.send_j(f"{o}-A2", done, {"ACC1": Decimal(3000)}, trans=trans, ref=f"{o}-A1")
    ack = peer.final_ack(f"{o}-A2")
    assert (ack.alloc_status, ack.rej_code) == ("1", "7")
    assert "amend it manually" in (ack.text or "")
    assert broker.bookings[f"{o}-A1"].status == "accepted"
    assert len(peer.aks_of(o)) == 3  # nothing cancelled or replaced


def test_quantities_are_checked_against_what_was_executed(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker)
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, {"ACC1": QTY + 100})
    ack = peer.final_ack(f"{o}-A1")
    assert (ack.alloc_status, ack.rej_code) == ("1", "1")


def test_a_new_j_reusing_a_booked_alloc_id_is_refused(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker)
    done = peer.filled(o, QTY)
    [j] = peer.send_j(f"{o}-A1", done, SPLIT)
    peer.final_ack(f"{o}-A1")
    peer.resend(j)  # PossDupFlag: recognised, not answered
    peer.send_j(f"{o}-A1", done, SPLIT)  # no flag: a second booking, refused
    eventually(lambda: len(peer.acks_for(f"{o}-A1")) == 4)
    assert peer.acks_for(f"{o}-A1") == ["3", "0", "3", "1"]
    assert [j.alloc_id for j in broker.repeated_allocations if o in j.cl_ord_ids] == \
        [f"{o}-A1"]
    assert len([j for j in broker.allocations if o in j.cl_ord_ids]) == 2


def test_a_withheld_j_never_goes_past_received(desk: Desk) -> None:
    """Scenario 14: P 87=3 and nothing more."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(withhold_final_p=True))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    peer.send_j(f"{o}-A2", done, SPLIT, trans="2", ref=f"{o}-A1")  # a later message
    eventually(lambda: peer.acks_for(f"{o}-A2") == ["3"], description="the Cancel received")
    assert peer.acks_for(f"{o}-A1") == ["3"]
    assert broker.bookings[f"{o}-A1"].status == "received"
    assert peer.aks_of(o) == []


def test_fragments_are_acked_each_and_answered_once_when_complete(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker)
    accounts = {f"ACC{i}": Decimal(300) for i in range(1, 11)}
    done = peer.filled(o, QTY)
    frags = peer.send_j(f"{o}-A1", done, accounts, fragments=4)
    assert len(frags) == 4
    assert peer.final_ack(f"{o}-A1").alloc_status == "0"
    assert peer.acks_for(f"{o}-A1") == ["3", "3", "3", "3", "0"]
    [whole] = [j for j in broker.allocations if o in j.cl_ord_ids]
    assert len(whole.lines) == 10 and whole.tot_no_allocs == 10
    assert len([f for f in broker.fragments if o in f.cl_ord_ids]) == 4
    assert len(peer.wait_aks(10, f"{o}-A1")) == 10
    peer.resend(frags[1])  # a fragment of a set already booked: ignored
    peer.send_j(f"{o}-A2", done, {"ACC1": Decimal(3000)}, trans="1", ref=f"{o}-A1")
    peer.final_ack(f"{o}-A2")
    assert any(j.alloc_id == f"{o}-A1" for j in broker.repeated_allocations)
    assert peer.acks_for(f"{o}-A1") == ["3", "3", "3", "3", "0"]


def test_an_incomplete_fragment_set_is_rejected_by_its_final_ack(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker)
    accounts = {f"ACC{i}": Decimal(500) for i in range(1, 7)}
    done = peer.filled(o, QTY)
    frags = peer.send_j(f"{o}-A1", done, accounts, fragments=3)
    assert peer.final_ack(f"{o}-A1").alloc_status == "0"
    for f in (frags[0], frags[2]):  # the same set as A9, its middle fragment lost
        f.setField(70, f"{o}-A9")
        peer.engine.send(f)
    ack = peer.final_ack(f"{o}-A9")
    assert (ack.alloc_status, ack.rej_code) == ("1", "7")
    assert "4 of 6 lines" in (ack.text or "")
    assert peer.acks_for(f"{o}-A9") == ["3", "3", "1"]


def test_a_fragment_set_survives_a_restart_and_resent_fragments_count_once(
        tmp_path: Path) -> None:
    """Scenario 17: the broker goes down mid-set; quickfix resends the last fragment
    (PossDup) after the restart, and a fragment sent twice is not counted twice."""
    accounts = {f"ACC{i}": Decimal(500) for i in range(1, 7)}
    with pair(tmp_path, comp="BRKR") as (broker, peer):
        done = peer.filled("B1", QTY)
        frags = peer.send_j("A1", done, accounts, fragments=3)
        eventually(lambda: peer.acks_for("A1") == ["3", "3", "3", "0"])
        # The same set again as A2, the broker stopped after its second fragment.
        for f in frags:
            f.setField(70, "A2")
        peer.engine.send(frags[0])
        peer.engine.send(frags[1])
        peer.resend(frags[1])  # PossDup repeat of fragment 2: counted once
        eventually(lambda: peer.acks_for("A2") == ["3", "3"])
        eventually(lambda: len(broker.repeated_allocations) == 1)
        broker.stop()
        eventually(lambda: not peer.engine.is_logged_on(), description="peer sees the drop")
        peer.engine.send(frags[2])  # stored by quickfix, delivered on the resend request
        restarted = broker_at(peer.port, tmp_path / "broker", sender="BRKR")
        try:
            ack = peer.final_ack("A2")
            assert ack.alloc_status == "0"
            assert peer.acks_for("A2") == ["3", "3", "3", "0"]
            assert len(restarted.allocations) == 1
            assert len(restarted.allocations[0].lines) == 6
            assert len(peer.wait_aks(6, "A2")) == 6
        finally:
            peer.stop()  # first: an acceptor stopping under a logged-on peer waits 1 s
            restarted.stop()
