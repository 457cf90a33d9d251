"""Live blocks crossed inside the gateway, on real sessions: an OMS's buy block waits for
the other side, an opposite sell block arrives, the overlap is crossed at the policy's
price (an execution of its own at the internal venue, with both sides, price and source),
only the net goes to the broker, each side's allocation shows its crossed and its routed
part, and the OMS hears every execution and gets a J marking the crossed lines."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.crossing import Quote
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from tests.support.eventually import eventually
from tests.support.harness import CONFIG, Gateway, Ports, running, write_config

pytestmark = pytest.mark.fix

D = Decimal
POLICY = """crossing:
  enabled: true
  description: Cross opposite live interest at the last sale
  price_rule: last
  max_price_age_seconds: 60
  live_window_seconds: {window}
  excluded_accounts:
    accounts: [SMA0042]
"""
BUY = (("SMA0005", D(1000)), ("SMA0006", D(2000)))
SELL = (("SMA0002", D(1500)), ("SMA0042", D(500)))


@contextmanager
def crossing_stack(tmp: Path, window: int = 30
                   ) -> Iterator[tuple[BrokerSimulator, Gateway, OmsSimulator]]:
    rules = tmp / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    (rules / "40-crossing.yaml").write_text(POLICY.format(window=window), encoding="utf-8")
    ports = Ports.free()
    cfg = write_config(tmp, ports, rules=rules)
    plan = FillPlan(fills=1, interval_ms=5, prices=(D("190.50"),))
    with running(tmp, ports, cfg, plan) as stack:
        yield stack


def _push(gw: Gateway, last: str, age: timedelta = timedelta(seconds=1)) -> None:
    assert gw.node is not None and gw.node.dispatcher is not None
    gw.node.dispatcher.crossing.prices.update(Quote(
        symbol="AAPL", last=D(last), as_of=datetime.now(UTC) - age, source="http:test"))


def _order(cl: str, side: str, pre: tuple[tuple[str, Decimal], ...], limit: str
           ) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side=side,
                        qty=sum((q for _a, q in pre), D(0)), price=D(limit), preallocations=pre,
                        text="the PM's split of the block")


def _events(db: Any, kind: str) -> list[dict[str, Any]]:
    return [{**e, "detail": json.loads(e["detail_json"])} for e in db.events(kind)]


def _lines(j: Any) -> dict[str, Decimal]:
    return {str(x["account"]): D(str(x["qty"])) for x in j.lines}


def test_opposite_blocks_cross_and_only_the_net_is_routed(tmp_path: Path) -> None:
    with crossing_stack(tmp_path) as (broker, gw, oms):
        _push(gw, "190.25")
        oms.send_order(_order("XB-1", "buy", BUY, "191.00"))
        # The buy waits for the other side: the OMS hears "pending new", the broker nothing.
        first = eventually(lambda: oms.executions.get("XB-1"), timeout=15)
        assert first[0].ord_status == "A" and "internal crossing" in (first[0].text or "")
        assert not broker.orders
        oms.send_order(_order("XS-1", "sell", SELL, "189.00"))

        # Only the net reaches the broker: 1,500 of the buy, the 500 SMA0042 may not cross.
        eventually(lambda: len(broker.orders) == 2, timeout=30)
        routed = sorted((o.side, o.qty) for o in broker.orders.values())
        assert routed == [("buy", D(1500)), ("sell", D(500))]
        eventually(lambda: len(broker.allocations) == 2, timeout=30)
        by_side = {j.side: j for j in broker.allocations}
        # The broker's Js cover only what it executed, over the rest of each account.
        assert _lines(by_side["buy"]) == {"SMA0005": D(500), "SMA0006": D(1000)}
        assert _lines(by_side["sell"]) == {"SMA0042": D(500)}
        assert by_side["buy"].avg_px == D("190.50")

        # The OMS: the crossed execution on both blocks, at the cross price, then the net.
        for cl, total in (("XB-1", 3000), ("XS-1", 2000)):
            eventually(lambda cl=cl: len(oms.allocations_for(cl)) == 2, timeout=30)
            seen = oms.executions[cl]
            crossed = [e for e in seen if e.exec_type == "F" and e.last_px == D("190.25")]
            assert [e.last_qty for e in crossed] == [D(1500)]
            assert "internal cross XR-" in (crossed[0].text or "")
            assert seen[-1].cum_qty == total and seen[-1].ord_status == "2"
            assert len({e.order_id for e in seen}) == 1
            # Past "new" once the crossed part executed: the broker's own acknowledgement
            # of the routed part is not relayed as a New after a fill.
            after = seen[seen.index(crossed[0]):]
            assert [e.exec_type for e in after if e.exec_type in ("0", "A")] == []
            cums = [e.cum_qty for e in after]
            assert cums == sorted(cums)
            js = oms.allocations_for(cl)
            marked = [j for j in js if j.text and "internal cross" in j.text]
            assert len(marked) == 1
            assert all(str(x["text"]).startswith("CROSS=XR-") for x in marked[0].lines)
            assert marked[0].avg_px == D("190.25") and marked[0].quantity == 1500
            other = next(j for j in js if j is not marked[0])
            assert all(not str(x.get("text") or "").startswith("CROSS=") for x in other.lines)
        buy_js = oms.allocations_for("XB-1")
        cross_j = next(j for j in buy_js if j.text)
        assert _lines(cross_j) == {"SMA0005": D(500), "SMA0006": D(1000)}
        sell_cross = next(j for j in oms.allocations_for("XS-1") if j.text)
        assert _lines(sell_cross) == {"SMA0002": D(1500)}

        # The record: the cross with both sides, price and source; the venue's reports and
        # its J accepted on its own session; each block split into crossed and routed parts.
        assert gw.node is not None and gw.node.sessions is not None
        db = gw.node.db
        assert db is not None
        events = _events(db, "cross.executed")
        assert len(events) == 2
        detail = events[0]["detail"]
        assert detail["price"] == "190.25" and detail["price_source"] == "http:test"
        assert detail["qty"] == "1500" and detail["commission"] == "0"
        assert {a["account_id"] for a in detail["buys"]} == {"SMA0005", "SMA0006"}
        assert [e["account_id"] for e in detail["excluded"]] == ["SMA0042"]
        venue = gw.node.sessions.cross.key
        wire = db.wire_messages(session_id=venue)
        assert sorted(m["msg_type"] for m in wire) == ["8", "8", "J", "J", "P", "P"]
        for cl in ("XB-1", "XS-1"):
            parent = db.find_order(gw.node.sessions.key_of("OMS1"), cl)
            assert parent is not None and parent["status"] == "split"
            parts = {c["broker"]: c for c in db.children_of(parent["order_id"])}
            assert set(parts) == {"cross", "BRKA"}
            assert D(parts["cross"]["avg_px"]) == D("190.25")
            assert all(c["status"] == "filled" for c in parts.values())


def test_a_stale_price_refuses_the_cross_and_both_go_whole(tmp_path: Path) -> None:
    with crossing_stack(tmp_path) as (broker, gw, oms):
        _push(gw, "190.25", age=timedelta(minutes=10))
        oms.send_order(_order("XB-2", "buy", BUY, "191.00"))
        eventually(lambda: oms.executions.get("XB-2"), timeout=15)
        oms.send_order(_order("XS-2", "sell", SELL, "189.00"))
        eventually(lambda: len(broker.orders) == 2, timeout=30)
        assert sorted((o.side, o.qty) for o in broker.orders.values()) == [
            ("buy", D(3000)), ("sell", D(2000))]
        assert gw.node is not None and gw.node.db is not None
        refusals = _events(gw.node.db, "cross.refused")
        assert {r["detail"]["code"] for r in refusals} == {"STALE_PRICE"}
        assert not _events(gw.node.db, "cross.executed")


def test_a_limit_the_price_would_break_refuses_the_cross(tmp_path: Path) -> None:
    with crossing_stack(tmp_path) as (broker, gw, oms):
        _push(gw, "190.25")
        oms.send_order(_order("XB-3", "buy", BUY, "190.00"))  # will not pay 190.25
        eventually(lambda: oms.executions.get("XB-3"), timeout=15)
        oms.send_order(_order("XS-3", "sell", SELL, "189.00"))
        eventually(lambda: len(broker.orders) == 2, timeout=30)
        assert gw.node is not None and gw.node.db is not None
        [refusal, _] = _events(gw.node.db, "cross.refused")
        assert refusal["detail"]["code"] == "PRICE_BEYOND_LIMIT"
        assert "above the buy block's limit 190.00" in refusal["detail"]["text"]


def test_a_block_alone_goes_whole_when_its_window_ends(tmp_path: Path) -> None:
    with crossing_stack(tmp_path, window=1) as (broker, gw, oms):
        _push(gw, "190.25")
        oms.send_order(_order("XB-4", "buy", BUY, "191.00"))
        eventually(lambda: len(broker.orders) == 1, timeout=15)
        [child] = broker.orders.values()
        assert child.qty == 3000
        assert gw.node is not None and gw.node.db is not None
        [none] = _events(gw.node.db, "cross.none")
        assert none["detail"]["code"] == "NO_OPPOSITE_INTEREST"
        eventually(lambda: len(oms.allocations_for("XB-4")) == 1, timeout=30)


def test_a_waiting_block_canceled_by_the_oms_never_reaches_the_broker(tmp_path: Path
                                                                      ) -> None:
    with crossing_stack(tmp_path) as (broker, gw, oms):
        order = _order("XB-5", "buy", BUY, "191.00")
        oms.send_order(order)
        eventually(lambda: oms.executions.get("XB-5"), timeout=15)
        oms.send_cancel(order)
        last = eventually(lambda: next((e for e in oms.executions.get("XB-5-CXL1", [])
                                        + oms.executions.get("XB-5", [])
                                        if e.ord_status == "4"), None), timeout=15)
        assert last.leaves_qty == 0
        assert not broker.orders
        assert gw.node is not None and gw.node.dispatcher is not None
        assert not gw.node.dispatcher.crossing.waiting


def test_an_ioc_block_never_waits_to_cross(tmp_path: Path) -> None:
    # Immediate-or-cancel must not sit in a window: it goes to the broker at once.
    with crossing_stack(tmp_path) as (broker, gw, oms):
        _push(gw, "190.25")
        ioc = BlotterOrder(cl_ord_id="XB-6", book="SMA-CORE", symbol="AAPL", side="buy",
                           qty=D(3000), price=D("191.00"), time_in_force="3",
                           preallocations=BUY, text="the PM's split of the block")
        oms.send_order(ioc)
        eventually(lambda: len(broker.orders) == 1, timeout=15)
        assert gw.node is not None and gw.node.dispatcher is not None
        assert not gw.node.dispatcher.crossing.waiting
        assert gw.node.db is not None and not _events(gw.node.db, "cross.waiting")
