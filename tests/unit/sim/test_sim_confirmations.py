"""The broker simulator's AKs: economics, held (missing) AKs and BH, mismatches and their
correction after an AU rejection, status confirms, AKs after a J Replace or Cancel, AS/AT.

One broker and one peer serve the module; each test has an order (and plan) of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from gateway.fix.sim.broker import BrokerSimulator, PostTradePlan
from tests.support.eventually import eventually
from tests.unit.sim.peer import SETTL_DATE, TRADE_DATE, GatewayPeer, money, new_order, pair

pytestmark = pytest.mark.fix

QTY = Decimal(3000)
SPLIT = {"ACC1": Decimal(1000), "ACC2": Decimal(1200), "ACC3": Decimal(800)}
Desk = tuple[BrokerSimulator, GatewayPeer]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    with pair(tmp_path_factory.mktemp("confirmations")) as both:
        yield both


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_each_line_gets_one_ak_with_its_economics(desk: Desk, side: str) -> None:
    broker, peer = desk
    o = new_order(broker, PostTradePlan(commission_per_share=Decimal("0.0125")))
    done = peer.filled(o, QTY, side=side)
    peer.send_j(f"{o}-A1", done, SPLIT, side=side)
    aks = {a.account: a for a in peer.wait_aks(3, f"{o}-A1")}
    px = done.fields.avg_px.quantize(Decimal("0.0001"))
    for acct, qty in SPLIT.items():
        ak = aks[acct]
        gross = money(qty * px)
        commission = money(qty * Decimal("0.0125"))
        assert (ak.trans_type, ak.confirm_type, ak.confirm_status) == ("0", "2", "4")
        assert (ak.alloc_id, ak.individual_alloc_id) == (f"{o}-A1", f"{o}-A1-{acct}")
        assert (ak.qty, ak.side, ak.avg_px) == (qty, side, px)
        assert ak.gross == gross and ak.commission == commission
        assert ak.net_money == (gross + commission if side == "buy" else gross - commission)
        assert (ak.trade_date, ak.settl_date) == (TRADE_DATE, SETTL_DATE)
        assert ak.confirm_ref_id is None and ak.confirm_req_id is None
    assert len({a.confirm_id for a in aks.values()}) == 3
    assert {t.state for t in broker.tickets_of(f"{o}-A1").values()} == {"sent"}
    for ak in aks.values():
        peer.affirm(ak.confirm_id)
    eventually(lambda: all(a.confirm_id in broker.affirmations for a in aks.values()))
    assert {broker.affirmations[a.confirm_id] for a in aks.values()} == {("3", None)}
    assert {t.state for t in broker.tickets_of(f"{o}-A1").values()} == {"affirmed"}


def test_no_aks_when_the_plan_says_so(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker, PostTradePlan(acks=False))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    peer.final_ack(f"{o}-A1")
    peer.send_j(f"{o}-A2", done, SPLIT, trans="2", ref=f"{o}-A1")  # a later exchange
    peer.final_ack(f"{o}-A2")
    assert peer.aks_of(o) == [] and broker.tickets_of(f"{o}-A1") == {}


def test_a_missing_ak_comes_when_a_bh_asks_for_it(desk: Desk) -> None:
    """Scenario 24: the AK answering a BH echoes its ConfirmReqID; an unknown line gets a
    'request rejected' AK."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(missing_ak=frozenset({"ACC2"})))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    peer.wait_aks(2, f"{o}-A1")
    peer.request(f"{o}-R1", f"{o}-A1", "NO-SUCH-LINE", "ACC9")  # a later message
    refused = peer.answer_to(f"{o}-R1")
    assert (refused.confirm_type, refused.confirm_status) == ("3", "5")
    assert {a.account for a in peer.aks_of(o) if a.confirm_type == "2"} == {"ACC1", "ACC3"}
    assert broker.tickets_of(f"{o}-A1")["ACC2"].state == "held"
    peer.request(f"{o}-R2", f"{o}-A1", f"{o}-A1-ACC2", "ACC2")
    ak = peer.answer_to(f"{o}-R2")
    assert (ak.account, ak.trans_type, ak.confirm_type, ak.confirm_status) == \
        ("ACC2", "0", "2", "4")
    assert ak.qty == Decimal(1200)
    assert [r.confirm_req_id for r in broker.confirmation_requests
            if r.confirm_req_id.startswith(f"{o}-")] == [f"{o}-R1", f"{o}-R2"]


def test_a_mismatched_ak_rejected_by_au_is_replaced_by_a_correct_one(desk: Desk) -> None:
    """Scenario 22: the AU 940=2 is recorded and answered by AK 666=1 (ConfirmRefID)."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(mismatch={"ACC1": "net_money", "ACC3": "avg_px"}))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    aks = {a.account: a for a in peer.wait_aks(3, f"{o}-A1")}
    px = done.fields.avg_px.quantize(Decimal("0.0001"))
    assert aks["ACC1"].net_money == money(1000 * px) + 1
    assert aks["ACC1"].gross == money(1000 * px)
    assert aks["ACC3"].avg_px == px + Decimal("0.01")
    assert aks["ACC2"].net_money == money(1200 * px)
    peer.affirm(aks["ACC1"].confirm_id, "2", "99")
    fixed = peer.wait_aks(4, f"{o}-A1")[-1]
    assert (fixed.trans_type, fixed.confirm_ref_id) == ("1", aks["ACC1"].confirm_id)
    assert fixed.account == "ACC1" and fixed.net_money == money(1000 * px)
    assert broker.affirmations[aks["ACC1"].confirm_id] == ("2", "99")
    peer.affirm(fixed.confirm_id, "3")
    eventually(lambda: broker.affirmations.get(fixed.confirm_id) == ("3", None))
    assert broker.tickets_of(f"{o}-A1")["ACC1"].state == "affirmed"


def test_a_status_confirm_is_replaced_once_the_gateway_rejects_it(desk: Desk) -> None:
    """Scenario 21: 773=1 665=3, then after AU 940=2 a correct AK 666=1."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(status_confirm={"ACC2": "3", "ACC3": "2"}))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    aks = {a.account: a for a in peer.wait_aks(3, f"{o}-A1")}
    assert (aks["ACC2"].confirm_type, aks["ACC2"].confirm_status) == ("1", "3")
    assert (aks["ACC3"].confirm_type, aks["ACC3"].confirm_status) == ("1", "2")
    assert "settlement instructions" in (aks["ACC2"].text or "")
    assert broker.tickets_of(f"{o}-A1")["ACC2"].state == "status"
    peer.affirm(aks["ACC2"].confirm_id, "2", "2")
    fixed = peer.wait_aks(4, f"{o}-A1")[-1]
    assert (fixed.account, fixed.trans_type, fixed.confirm_ref_id) == \
        ("ACC2", "1", aks["ACC2"].confirm_id)
    assert (fixed.confirm_type, fixed.confirm_status) == ("2", "4")
    broker.reissue_confirmation("ACC3", f"{o}-A1")  # the other one, on a later trigger
    again = peer.wait_aks(5, f"{o}-A1")[-1]
    assert (again.account, again.trans_type, again.confirm_status) == ("ACC3", "1", "4")


def test_a_status_confirm_can_be_fixed_on_a_timer(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker, PostTradePlan(status_confirm={"ACC1": "3"},
                                        status_confirm_fix="timer", status_confirm_fix_ms=50))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, {"ACC1": QTY})
    first, fixed = peer.wait_aks(2, f"{o}-A1")
    assert (first.confirm_type, fixed.confirm_type, fixed.confirm_ref_id) == \
        ("1", "2", first.confirm_id)


def test_a_replace_replaces_changed_lines_adds_new_ones_and_cancels_the_rest(
        desk: Desk) -> None:
    """Scenario 8: after a Replace, AK 666=1 for a changed line, 666=0 for a new line,
    666=2 for a line that disappeared, nothing for an unchanged one."""
    broker, peer = desk
    o = new_order(broker)
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    first = {a.account: a for a in peer.wait_aks(3, f"{o}-A1")}
    new_split = {"ACC1": Decimal(1400), "ACC3": Decimal(800), "ACC4": Decimal(800)}
    peer.send_j(f"{o}-A2", done, new_split, trans="1", ref=f"{o}-A1")
    assert peer.final_ack(f"{o}-A2").alloc_status == "0"
    eventually(lambda: len(peer.aks_of(o)) == 6)
    later = {(a.account, a.trans_type): a for a in peer.aks_of(o)[3:]}
    assert set(later) == {("ACC1", "1"), ("ACC2", "2"), ("ACC4", "0")}
    assert later["ACC1", "1"].confirm_ref_id == first["ACC1"].confirm_id
    assert later["ACC1", "1"].qty == Decimal(1400)
    assert (later["ACC1", "1"].alloc_id, later["ACC1", "1"].individual_alloc_id) == \
        (f"{o}-A2", f"{o}-A2-ACC1")
    assert later["ACC2", "2"].confirm_ref_id == first["ACC2"].confirm_id
    assert later["ACC4", "0"].confirm_ref_id is None
    assert broker.bookings[f"{o}-A1"].status == "replaced"
    states = {a: t.state for a, t in broker.tickets_of(f"{o}-A2").items()}
    assert states == {"ACC1": "sent", "ACC3": "sent", "ACC4": "sent"}


def test_a_cancel_cancels_every_confirmed_line(desk: Desk) -> None:
    """Scenario 16: P accepted, then AK 666=2 for each line that had an AK."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(missing_ak=frozenset({"ACC3"})))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    first = {a.account: a for a in peer.wait_aks(2, f"{o}-A1")}
    peer.send_j(f"{o}-A2", done, SPLIT, trans="2", ref=f"{o}-A1")
    assert peer.final_ack(f"{o}-A2").alloc_status == "0"
    eventually(lambda: len(peer.aks_of(o)) == 4)
    cancels = {a.account: a for a in peer.aks_of(o)[2:]}
    assert set(cancels) == {"ACC1", "ACC2"}  # ACC3 was never confirmed
    for acct, ak in cancels.items():
        assert (ak.trans_type, ak.confirm_ref_id) == ("2", first[acct].confirm_id)
    assert broker.bookings[f"{o}-A1"].status == "cancelled"
    peer.request(f"{o}-R1", f"{o}-A1", f"{o}-A1-ACC3", "ACC3")  # the held line is gone too
    assert peer.answer_to(f"{o}-R1").confirm_type == "3"


def test_an_allocation_report_moves_quantity_and_the_aks_follow_it(desk: Desk) -> None:
    broker, peer = desk
    o = new_order(broker, PostTradePlan(send_as=True, as_move=("ACC2", "ACC1", Decimal(200))))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    [report] = eventually(lambda: [r for r in peer.reports if r.alloc_id == f"{o}-A1"])
    assert report.report_type == "4"
    assert dict(report.lines) == {"ACC1": Decimal(1200), "ACC2": Decimal(1000),
                                  "ACC3": Decimal(800)}
    aks = {a.account: a.qty for a in peer.wait_aks(3, f"{o}-A1")}
    assert aks == dict(report.lines)
    peer.ack_report(report.report_id, f"{o}-A1", "0")
    [seen] = eventually(lambda: [a for a in broker.allocation_report_acks
                                 if a.report_id == report.report_id])
    assert (seen.alloc_id, seen.status) == (f"{o}-A1", "0")


def test_aks_are_spaced_by_the_planned_delay(desk: Desk) -> None:
    """By the broker's own SendingTimes: the kth AK leaves (k-1) x 300 ms after the P."""
    broker, peer = desk
    o = new_order(broker, PostTradePlan(ak_delay_ms=300))
    done = peer.filled(o, QTY)
    peer.send_j(f"{o}-A1", done, SPLIT)
    aks = peer.wait_aks(3, f"{o}-A1")
    accepted = peer.sent_at[f"P:{o}-A1:0"]
    after = [(peer.sent_at[a.confirm_id] - accepted).total_seconds() for a in aks]
    assert all(t >= 0.3 * k - 0.002 for k, t in enumerate(after)), after
