"""The broker simulator's allocation book survives its own restart: the AKs it still owed
go out once the session is back, held AKs still answer a BH, and a Replace after the
restart refers to the confirmations sent before it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import PostTradePlan
from tests.support.eventually import eventually
from tests.unit.sim.peer import broker_at, pair

pytestmark = pytest.mark.fix

QTY = Decimal(4000)
SPLIT = {f"ACC{i}": Decimal(1000) for i in range(1, 5)}


def test_a_restarted_broker_sends_the_aks_it_still_owed(tmp_path: Path) -> None:
    """What is owed is in the saved state: the restarted broker (here with a default plan)
    sends it, and still holds the AK its first run held."""
    plan = PostTradePlan(ak_delay_ms=2000, missing_ak=frozenset({"ACC4"}))
    with pair(tmp_path, plan) as (broker, peer):
        done = peer.filled("B1", QTY)
        peer.send_j("A1", done, SPLIT)
        [first] = peer.wait_aks(1, "A1")
        broker.stop()
        saved = json.loads((tmp_path / "broker" / "broker-state.json").read_text())
        tickets = {t["account"]: t for t in saved["post_trade"]["tickets"]}
        assert tickets[first.account]["confirm_ids"] == [first.confirm_id]
        assert sum(t["pending"] is not None for t in tickets.values()) == 3
        assert tickets["ACC4"]["held"] is True
        assert len(peer.aks()) == 1
        restarted = broker_at(peer.port, tmp_path / "broker")
        try:
            aks = peer.wait_aks(3, "A1", timeout=20)
            assert sorted(a.account for a in aks) == ["ACC1", "ACC2", "ACC3"]
            assert all(a.trans_type == "0" for a in aks)
            assert len({a.confirm_id for a in aks}) == 3
            peer.request("REQ-1", "A1", "A1-ACC4", "ACC4")  # the held one, on request
            held = eventually(lambda: next((a for a in peer.aks()
                                            if a.confirm_req_id == "REQ-1"), None))
            assert (held.account, held.trans_type, held.confirm_type) == ("ACC4", "0", "2")
            # A Replace after the restart cancels and replaces what was sent before it.
            peer.send_j("A2", done, {"ACC1": Decimal(2000), "ACC2": Decimal(2000)},
                        trans="1", ref="A1")
            assert peer.final_ack("A2").alloc_status == "0"
            eventually(lambda: len(peer.aks()) == 8)
            later = {(a.account, a.trans_type): a.confirm_ref_id for a in peer.aks()[4:]}
            ids = {a.account: a.confirm_id for a in peer.aks()[:4]}
            assert later == {("ACC1", "1"): ids["ACC1"], ("ACC2", "1"): ids["ACC2"],
                             ("ACC3", "2"): ids["ACC3"], ("ACC4", "2"): ids["ACC4"]}
            assert restarted.repeated_allocations == []
        finally:
            peer.stop()  # first: an acceptor stopping under a logged-on peer waits 1 s
            restarted.stop()


def test_busts_planned_after_the_j_survive_a_restart(tmp_path: Path) -> None:
    plan = PostTradePlan(ak_delay_ms=2000, bust_after_j=(1,))
    with pair(tmp_path, plan) as (broker, peer):
        done = peer.filled("B1", QTY)
        fill1 = peer.fills("B1")[1].fields.exec_id
        peer.send_j("A1", done, {"ACC1": QTY})
        peer.final_ack("A1")
        broker.stop()  # before the bust, due 2 s after the AK
        restarted = broker_at(peer.port, tmp_path / "broker")
        try:
            bust = eventually(lambda: next((e for e in peer.executions
                                            if e.fields.exec_type == "H"), None), timeout=20)
            assert bust.exec_ref_id == fill1
            assert len(peer.wait_aks(1, "A1")) == 1
            assert [e.fields.exec_type for e in peer.executions].count("H") == 1
        finally:
            peer.stop()  # first: an acceptor stopping under a logged-on peer waits 1 s
            restarted.stop()
