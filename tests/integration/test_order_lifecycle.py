"""Orders that end without a full fill, and OMS logon authentication."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import Ports, gateway_in_process, oms_sim, running, write_config

pytestmark = pytest.mark.fix

ORDER = BlotterOrder(cl_ord_id="LC-1", book="SMA-CORE", symbol="AAPL", side="buy",
                     qty=Decimal(100_000), price=Decimal("190.50"))


def test_cancel_after_partial_fills_allocates_only_what_executed(tmp_path: Path) -> None:
    """OMS cancel is routed; Canceled with CumQty > 0 allocates exactly CumQty."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, FillPlan(fills=20, interval_ms=100)) as (broker, gw, oms):
        oms.send_order(ORDER)
        eventually(lambda: broker.orders and
                        next(iter(broker.orders.values())).fills_sent >= 3, timeout=30)
        oms.send_cancel(ORDER)
        assert oms.wait(lambda: oms.allocation_for(ORDER.cl_ord_id) is not None, 30)
        sim_order = next(iter(broker.orders.values()))
        assert sim_order.status == "4" and Decimal(0) < sim_order.cum_qty < ORDER.qty
        [j] = broker.allocations
        assert j.quantity == sim_order.cum_qty
        assert sum(Decimal(str(x["qty"])) for x in j.lines) == sim_order.cum_qty
        # The J quotes the latest ClOrdID of the chain at the broker: the cancel's.
        assert j.cl_ord_ids[0].endswith("~C1")
        canceled = [e for seen in oms.executions.values() for e in seen if e.exec_type == "4"]
        assert len(canceled) == 1 and canceled[0].cl_ord_id.startswith("LC-1-CXL")
        eventually(lambda: gw.node.db.load_allocations()[0]["status"] == "accepted", timeout=10)


def test_done_for_day_allocates_the_executed_part(tmp_path: Path) -> None:
    """DoneForDay (150=3) after a partial execution is done: CumQty is allocated."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    plan = FillPlan(fills=4, interval_ms=20, done_for_day_at=Decimal("0.6"))
    with running(tmp_path, ports, cfg, plan) as (_broker, gw, oms):
        oms.send_order(ORDER)
        assert oms.wait(lambda: oms.allocation_for(ORDER.cl_ord_id) is not None, 30)
        j = oms.allocation_for(ORDER.cl_ord_id)
        assert j.quantity == Decimal(60_000)
        assert gw.node.db.load_orders()[0]["status"] == "done_for_day"


def test_oms_logon_password_checked_and_never_stored(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong Password(554) is refused, the right one logs on; neither reaches the database."""
    monkeypatch.setenv("FIXALLOC_TEST_OMS_PW", "s3cret-pw")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, oms_password_env="FIXALLOC_TEST_OMS_PW")
    with gateway_in_process(cfg, ports) as gw:
        with oms_sim(tmp_path / "bad", ports, password="wrong-pw") as bad:
            assert not bad.engine.wait_logged_on(3)
        with oms_sim(tmp_path / "good", ports, password="s3cret-pw") as good:
            assert good.engine.wait_logged_on(30)
        raws = " ".join(m["text"] for m in gw.node.db.wire_messages())
        assert "554=***" in raws
        assert "s3cret-pw" not in raws and "wrong-pw" not in raws


def test_cancel_of_a_filled_or_unknown_order_gets_order_cancel_reject(tmp_path: Path) -> None:
    """A cancel the gateway cannot honour is answered with 35=9, not a BusinessMessageReject."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    unknown = BlotterOrder(cl_ord_id="NEVER-SENT", book="SMA-CORE", symbol="AAPL", side="buy",
                           qty=Decimal(100), price=Decimal(1))
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (_broker, _gw, oms):
        oms.send_order(ORDER)
        assert oms.wait(lambda: oms.allocation_for(ORDER.cl_ord_id) is not None, 30)
        oms.send_cancel(ORDER)
        oms.send_cancel(unknown)
        assert oms.wait(lambda: len(oms.cancel_rejects) == 2, 10)
        late, missing = sorted(oms.cancel_rejects, key=lambda r: r.orig_cl_ord_id)
        assert (late.orig_cl_ord_id, late.reason, late.ord_status) == ("LC-1", "0", "2")
        assert (missing.orig_cl_ord_id, missing.reason) == ("NEVER-SENT", "1")
        assert oms.business_rejects == []


def test_pre_allocated_order_is_split_as_the_oms_said_pro_rated_on_a_partial(
    tmp_path: Path,
) -> None:
    """NoAllocs on the D (with the reason in Text) drives a manual split of what executed."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    order = BlotterOrder(cl_ord_id="PRE-1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=Decimal(30_000), price=Decimal("190.50"),
                         preallocations=(("SMA0001", Decimal(10_000)),
                                         ("SMA0002", Decimal(15_000)),
                                         ("SMA0003", Decimal(5_000))),
                         text="client-directed split per IPS addendum 7")
    plan = FillPlan(fills=2, interval_ms=20, done_for_day_at=Decimal("0.6"))
    with running(tmp_path, ports, cfg, plan) as (broker, gw, oms):
        oms.send_order(order)
        assert oms.wait(lambda: oms.allocation_for("PRE-1") is not None, 30)
        # The broker's J goes first but may be booked after the OMS has read its copy.
        assert oms.wait(lambda: bool(broker.allocations), 30)
        lines = {x["account"]: x["qty"] for x in broker.allocations[0].lines}
        assert lines == {"SMA0001": Decimal(6_000), "SMA0002": Decimal(9_000),
                         "SMA0003": Decimal(3_000)}
        alloc = gw.node.db.load_allocations()[0]
        decision = json.loads(gw.node.db.load_decision(alloc["decision_id"])["canonical_json"])
        assert decision["method"] == "manual"
        assert decision["method_params"]["preallocation_reason"] == order.text


@pytest.mark.parametrize(("pre", "text", "expected"), [
    ((("SMA0001", Decimal(600)),), "why", "AllocQty(80): pre-allocations sum to 600, "
                                          "OrderQty is 1000"),
    ((("SMA0001", Decimal(1000)),), None, "Text(58): required: the reason for the manual "
                                          "pre-allocation"),
    ((("NOT-IN-BOOK", Decimal(1000)),), "why", "pre-allocation names accounts not in book "
                                                "SMA-CORE: NOT-IN-BOOK"),
])
def test_bad_pre_allocation_rejects_the_order_with_the_reason(
    tmp_path: Path, pre: tuple[tuple[str, Decimal], ...], text: str | None, expected: str
) -> None:
    """A split that does not cover OrderQty, has no reason or names a stranger is refused."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    order = BlotterOrder(cl_ord_id="PRE-BAD", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=Decimal(1000), price=Decimal(190), preallocations=pre, text=text)
    with running(tmp_path, ports, cfg) as (broker, _gw, oms):
        oms.send_order(order)
        assert oms.wait(lambda: oms.last_execution("PRE-BAD") is not None, 30)
        er = oms.last_execution("PRE-BAD")
        assert er.ord_status == "8" and er.text == expected
        assert broker.orders == {}
