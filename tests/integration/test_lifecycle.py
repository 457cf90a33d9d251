"""After the first J, on real sessions: corrections, every P outcome, fragments, confirmations.

FIX_ALLOCATION.md §7 scenarios 7-24, each with the product's broker simulator playing the
broker's side of it (gateway/fix/sim/plans.py PostTradePlan).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.fix.sim.plans import PostTradePlan
from gateway.ledger import FillLedger
from gateway.persistence.store import Database
from tests.support.eventually import eventually
from tests.support.harness import BROKER_KEY, Gateway, Ports, http_get, running, write_config

pytestmark = pytest.mark.fix

QTY = Decimal(30_000)
FILLS = FillPlan(fills=3, interval_ms=20)


def _order(cl: str = "LC-1") -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side="buy", qty=QTY,
                        price=Decimal("190.50"))


@contextmanager
def _run(tmp_path: Path, post_trade: PostTradePlan, *, broker_extra: str = "",
         fills: FillPlan = FILLS, database_url: str = ""
         ) -> Iterator[tuple[BrokerSimulator, Gateway, OmsSimulator, Ports]]:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=broker_extra, database_url=database_url)
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


def _open(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    return [e for e in _db(gw).exceptions(state="open") if e["kind"] == kind]


def _operate(ports: Ports, action: str, alloc_id: str, reason: str) -> tuple[int, Any]:
    import urllib.request

    body = json.dumps({"reason": reason, "actor": "ops:test"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports.http}/allocations/{alloc_id}/{action}", data=body,
        method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _all_affirmed(gw: Gateway, alloc_id: str) -> bool:
    lines = _db(gw).load_allocation_lines(alloc_id)
    return bool(lines) and all(x["ticket_state"] == "affirmed" for x in lines)


def test_happy_path_every_ticket_is_affirmed(tmp_path: Path, database_url: str) -> None:
    """Scenario 1: J, P 87=3 then 87=0, one AK per line, each answered AU 940=3 (on
    SQLite and PostgreSQL: the lifecycle tables on both)."""
    with _run(tmp_path, PostTradePlan(), database_url=database_url) as (broker, gw, oms,
                                                                         ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _all_affirmed(gw, j1), timeout=30,
                   description="every ticket affirmed")
        lines = _db(gw).load_allocation_lines(j1)
        # The ticket is marked affirmed when fixalloc sends the AU; the broker reads it a
        # moment later, so wait for the broker's side rather than race it.
        eventually(lambda: all(x["confirm_id"] in broker.affirmations for x in lines),
                   timeout=10, description="the broker received every AU")
        assert {broker.affirmations[x["confirm_id"]][0] for x in lines} == {"3"}
        assert all(x["affirmed_at"] is not None for x in lines)
        code, body = http_get(ports.http, "/exceptions")
        assert code == 200 and body["count"] == 0


def test_bust_after_the_j_sends_a_replace_decided_under_the_original_versions(
    tmp_path: Path, database_url: str,
) -> None:
    """Scenario 8: a bust after P accepted -> J Replace (71=1, RefAllocID, 796=2)."""
    plan = PostTradePlan(bust_after_j=(0,))
    with _run(tmp_path, plan, database_url=database_url) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        eventually(lambda: len(_allocs(gw)) == 2, timeout=30, description="J2 stored")
        j1, j2 = _allocs(gw)
        assert (j2["alloc_trans_type"], j2["ref_alloc_id"]) == ("1", j1["alloc_id"])
        eventually(lambda: _status(gw, j2["alloc_id"]) == "accepted"
                   and _status(gw, j1["alloc_id"]) == "replaced", timeout=30)
        busted = Decimal(10_000)
        assert Decimal(j2["quantity"]) == QTY - busted
        lines = _db(gw).load_allocation_lines(j2["alloc_id"])
        assert sum(Decimal(x["qty"]) for x in lines) == QTY - busted
        [event] = _db(gw).events("allocation.replaced")
        detail = json.loads(event["detail_json"])
        assert detail["replaces"] == j1["alloc_id"] and detail["lines_changed"]
        assert detail["old_decision"] == j1["decision_id"]
        assert detail["new_decision"] == j2["decision_id"]
        old = json.loads(_db(gw).load_decision(j1["decision_id"])["canonical_json"])
        new = json.loads(_db(gw).load_decision(j2["decision_id"])["canonical_json"])
        assert old["rulebook_version"] == new["rulebook_version"]
        wire = [m for m in _db(gw).wire_messages(session_id=BROKER_KEY, direction="out",
                                                 msg_type="J") if m["ref_id"] == j2["alloc_id"]]
        assert b"\x0171=1\x01" in wire[0]["raw"] and b"\x01796=2\x01" in wire[0]["raw"]
        assert f"\x0172={j1['alloc_id']}\x01".encode() in wire[0]["raw"]
        # The OMS sees the bust, naming the fill under the ExecID it got it with.
        bust = eventually(lambda: next((e for e in oms.executions["LC-1"]
                                        if e.exec_type == "H"), None), timeout=10)
        assert bust.last_qty == busted
        eventually(lambda: any(j.alloc_id == j2["alloc_id"] for j in oms.allocations),
                   timeout=10, description="the OMS got the Replace too")
        assert len(broker.allocations) == 2
        # The broker confirms the Replace's lines afresh; each is matched and affirmed.
        eventually(lambda: {x["ticket_state"] for x in _db(gw).load_allocation_lines(
            j2["alloc_id"])} == {"affirmed"}, timeout=30,
            description="every ticket of the Replace affirmed")
        j2_confirms = {x["confirm_id"] for x in _db(gw).load_allocation_lines(j2["alloc_id"])}
        eventually(lambda: j2_confirms <= {au.confirm_id for au in broker.affirmation_log
                                           if au.affirm_status == "3"}, timeout=10,
                   description="the broker received an AU 940=3 for each")


@pytest.mark.parametrize("fix42", [False, True])
def test_a_correction_of_a_correction_applies_to_the_right_fill(
    tmp_path: Path, fix42: bool
) -> None:
    """Scenarios 9 and 10: 150=G twice on one fill (or ExecTransType 2, the 4.2 form)."""
    plan = PostTradePlan(correct_after_j=((1, Decimal("190.00")), (1, Decimal("189.00"))),
                         fix42_corrections=fix42)
    with _run(tmp_path, plan) as (_broker, gw, oms, _ports):
        oms.send_order(_order())
        eventually(lambda: len(_allocs(gw)) == 3, timeout=30, description="two Replaces")
        # The fills as the ledger folds them from the stored reports (the finished order may
        # already have left the dispatcher's memory).
        ledger = FillLedger()
        for r in _db(gw).load_reports(_allocs(gw)[0]["order_id"]):
            qty, px = Decimal(r["last_qty"]), Decimal(r["last_px"])
            if r["exec_type"] == "F" and qty > 0:
                ledger.apply_fill(r["exec_id"], qty, px)
            elif r["exec_type"] == "G":
                assert ledger.correct(r["exec_ref_id"], r["exec_id"], qty, px)
        fills = [(f[1], f[2]) for f in ledger.fills]
        assert len(fills) == 3 and fills[1] == (Decimal(10_000), Decimal("189.00"))
        last = _allocs(gw)[-1]
        expected = sum(q * p for q, p in fills) / QTY
        assert Decimal(last["avg_px"]) == expected.quantize(Decimal("0.0001"))
        eventually(lambda: _status(gw, last["alloc_id"]) == "accepted", timeout=30)


# PostgreSQL runs the flows whose storage differs most (the J, a Replace, a missing P, an
# AR); the tests marked sqlite-only repeat the same reads and writes, and would add most
# of two minutes to the suite on PostgreSQL.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_block_reject_then_a_fresh_j_new_through_the_api(tmp_path: Path, database_url: str) -> None:
    """Scenario 12: P 87=1 makes J1 dead; the fix is a J New with a new AllocID."""
    plan = PostTradePlan(reject_block={1: "7"})
    with _run(tmp_path, plan, database_url=database_url) as (_broker, gw, oms, ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _open(gw, "block_rejected"), timeout=30)
        assert "fixalloc alloc resend" in _open(gw, "block_rejected")[0]["next_step"]
        code, body = _operate(ports, "replace", j1, "wrong action")
        assert code == 409 and "nothing live to replace" in body["detail"]
        code, body = _operate(ports, "resend", j1, "broker fixed its account mapping")
        assert code == 200 and body["result"].endswith("-J2")
        eventually(lambda: _status(gw, body["result"]) == "accepted", timeout=30)
        j2 = _db(gw).load_allocation(body["result"])
        assert j2 is not None and j2["alloc_trans_type"] == "0" and j2["ref_alloc_id"] is None
        assert _open(gw, "block_rejected") == []
        [action] = _db(gw).events("operator.resend")
        assert json.loads(action["detail_json"])["actor"] == "ops:test"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("fix", ["replace", "cancel_new"])
def test_account_reject_fixed_by_replace_or_by_cancel_then_new(
    tmp_path: Path, database_url: str, fix: str
) -> None:
    """Scenario 13: P 87=2 on one line; the broker's convention decides the fix."""
    plan = PostTradePlan(reject_account={"SMA0001": "0"})
    with _run(tmp_path, plan, broker_extra=f'account_reject_fix = "{fix}"',
              database_url=database_url) as (broker, gw, oms, ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        order_id = j1.rsplit("-J", 1)[0]
        broker.set_post_trade(f"{order_id}-J2", PostTradePlan())  # the fix is accepted
        broker.set_post_trade(f"{order_id}-J3", PostTradePlan())
        [exc] = eventually(lambda: _open(gw, "account_rejected"), timeout=30)
        assert "776=0" in exc["reason"]
        code, _ = _operate(ports, "replace", j1, "account SMA0001 set up at the broker")
        assert code == 200
        if fix == "replace":
            eventually(lambda: _status(gw, j1) == "replaced", timeout=30)
            assert [a["alloc_trans_type"] for a in _allocs(gw)] == ["0", "1"]
        else:
            eventually(lambda: len(_allocs(gw)) == 3 and _status(gw, j1) == "cancelled",
                       timeout=30)
            assert [a["alloc_trans_type"] for a in _allocs(gw)] == ["0", "2", "0"]
            eventually(lambda: _status(gw, _allocs(gw)[2]["alloc_id"]) == "accepted",
                       timeout=30)
        assert _open(gw, "account_rejected") == []


def test_no_final_p_is_an_exception_never_a_second_j(tmp_path: Path, database_url: str) -> None:
    """Scenario 14: only 87=3 comes; after the broker's wait the J is an exception."""
    plan = PostTradePlan(withhold_final_p=True)
    with _run(tmp_path, plan, broker_extra="p_timeout_minutes = 0.02",
              database_url=database_url) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        [exc] = eventually(lambda: _open(gw, "p_timeout"), timeout=30)
        assert "do NOT resend the J as New" in exc["next_step"]
        assert _status(gw, j1) == "received" and len(_allocs(gw)) == 1
        assert len(broker.allocations) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_replace_refused_after_acceptance_needs_a_person(tmp_path: Path, database_url: str) -> None:
    """Scenario 15: the broker refuses a Replace of a J it accepted."""
    plan = PostTradePlan(bust_after_j=(0,), reject_replace_after_accept=True)
    with _run(tmp_path, plan, database_url=database_url) as (_broker, gw, oms, _ports):
        oms.send_order(_order())
        [exc] = eventually(lambda: _open(gw, "replace_refused"), timeout=30)
        assert "manual intervention" in exc["next_step"]
        j1, j2 = _allocs(gw)
        assert (_status(gw, j1["alloc_id"]), _status(gw, j2["alloc_id"])) == (
            "accepted", "replace_refused")
        assert _db(gw).events("alert.exception_replace_refused")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancel_on_request_cancels_the_tickets(tmp_path: Path, database_url: str) -> None:
    """Scenario 16: J Cancel (71=2) on an operator's request; the AKs are cancelled."""
    with _run(tmp_path, PostTradePlan(), database_url=database_url) as (_broker, gw, oms, ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _all_affirmed(gw, j1), timeout=30)
        code, body = _operate(ports, "cancel", j1, "block booked in error")
        assert code == 200
        eventually(lambda: _status(gw, j1) == "cancelled", timeout=30)
        eventually(lambda: all(x["ticket_state"] == "cancelled"
                               for x in _db(gw).load_allocation_lines(j1)), timeout=30)
        assert _db(gw).load_allocation(body["result"])["alloc_trans_type"] == "2"


def test_a_large_book_goes_in_fragments_with_one_final_outcome(tmp_path: Path) -> None:
    """Scenario 17: TotNoAllocs constant, LastFragment=Y on the last, one final P."""
    with _run(tmp_path, PostTradePlan(acks=False),
              broker_extra="max_lines_per_j = 50") as (broker, gw, oms, _ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _status(gw, j1) == "accepted", timeout=30)
        lines = _db(gw).load_allocation_lines(j1)
        parts = [m for m in _db(gw).wire_messages(session_id=BROKER_KEY, direction="out",
                                                  msg_type="J")]
        assert len(parts) == -(-len(lines) // 50) > 1
        assert all(f"\x01892={len(lines)}\x01".encode() in m["raw"] for m in parts)
        assert [b"\x01893=Y\x01" in m["raw"] for m in parts] == [False] * (len(parts) - 1) \
            + [True]
        assert len(broker.allocations) == 1 and len(broker.allocations[0].lines) == len(lines)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("status", "field"), [("3", "net_money"), ("2", "commission")])
def test_status_confirm_and_mismatch_are_exceptions_until_the_broker_fixes_them(
    tmp_path: Path, database_url: str, status: str, field: str,
) -> None:
    """Scenarios 21 and 22: a status confirm (665=3 missing SSI, 665=2 mismatched account)
    is not affirmed; a net money or commission mismatch gets AU 940=2 with a 774."""
    plan = PostTradePlan(status_confirm={"SMA0003": status}, status_confirm_fix="timer",
                         status_confirm_fix_ms=1500, mismatch={"SMA0002": field},
                         commission_per_share=Decimal("0.01"))
    agreed = "commission_per_share = 0.01"  # the rate the broker's AKs are checked against
    with _run(tmp_path, plan, broker_extra=agreed,
              database_url=database_url) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _open(gw, "status_confirm") and _db(gw).events(
            "alert.exception_ak_mismatch"), timeout=30)
        rejected = [au for au in broker.affirmation_log if au.affirm_status == "2"]
        assert rejected, "the mismatched AK was not rejected"
        assert {au.rej_reason for au in rejected} <= {"1", "2", "99"}
        assert any(field in (au.text or "") for au in rejected), rejected
        eventually(lambda: _all_affirmed(gw, j1), timeout=30,
                   description="the replacement AKs matched and were affirmed")
        assert _open(gw, "status_confirm") == [] and _open(gw, "ak_mismatch") == []
        outcomes = {c["outcome"] for c in _db(gw).confirmations(j1)}
        assert {"affirmed", "rejected", "status_exception"} <= outcomes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_missing_ak_is_requested_with_bh_and_the_answer_echoes_it(
        tmp_path: Path, database_url: str) -> None:
    """Scenario 24: no AK for a line -> BH; the AK that answers carries ConfirmReqID."""
    plan = PostTradePlan(missing_ak=frozenset({"SMA0004"}))
    # Fifteen seconds: long enough for the other 194 AKs to be matched even on a loaded
    # machine with PostgreSQL, so that only the withheld one is asked for.
    with _run(tmp_path, plan, broker_extra="ak_timeout_minutes = 0.25",
              database_url=database_url) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        j1 = eventually(lambda: next(iter(_allocs(gw)), None), timeout=30)["alloc_id"]
        eventually(lambda: _all_affirmed(gw, j1), timeout=60)
        line = next(x for x in _db(gw).load_allocation_lines(j1)
                    if x["account_id"] == "SMA0004")
        assert line["bh_sent_at"] is not None and line["confirm_req_id"]
        confirmation = next(c for c in _db(gw).confirmations(j1)
                            if c["individual_alloc_id"] == line["individual_alloc_id"])
        assert confirmation["confirm_req_id"] == line["confirm_req_id"]
        assert len(broker.confirmation_requests) == 1


def test_an_allocation_report_is_recorded_reconciled_and_acknowledged(
        tmp_path: Path, database_url: str) -> None:
    """An AS that moves shares between accounts differs from our J: an exception and AT."""
    plan = PostTradePlan(send_as=True, as_move=("SMA0001", "SMA0002", Decimal(100)))
    with _run(tmp_path, plan, database_url=database_url) as (broker, gw, oms, _ports):
        oms.send_order(_order())
        [exc] = eventually(lambda: _open(gw, "report_mismatch"), timeout=30)
        assert "SMA0001" in exc["reason"]
        eventually(lambda: broker.allocation_report_acks, timeout=10)
        assert _db(gw).events("allocation.report_received")
