"""Every §5.3 check of the sweep on a real database: its open item, its action, once."""

from __future__ import annotations

from datetime import timedelta

from gateway.persistence.store import Database
from gateway.posttrade.sweep import (
    AllocateNow,
    OpenException,
    RequestConfirmation,
    ResolveException,
    apply_exception_actions,
    store,
)
from tests.support.clock import FakeClock
from tests.unit.posttrade.sweep_rows import (
    DAY,
    OMS_SESSION,
    Blotter,
    actions,
    items,
    ny,
    sweep,
)

THREE = (("SMA0001", "500", "CUST-A"), ("SMA0002", "300", "CUST-B"), ("SMA0003", "200", "CUST-A"))


def test_an_order_still_working_after_the_close_is_an_open_item_and_an_exception(
        db: Database) -> None:
    """Before the close a working order is normal; from 16:30 it is an item and an exception."""
    Blotter(db).order("O-1", status="partially_filled", cum="400")
    before = sweep(db, "15:00")
    assert items(before) == [] and before.actions == ()
    after = sweep(db, "16:30")
    [item] = items(after)
    assert item["kind"] == "order_open_after_close" and item["order_id"] == "O-1"
    assert "still partially_filled after the 16:00 close" in item["reason"]
    assert "do not allocate an unknown final quantity" in item["next_step"]
    [opened] = after.actions
    assert opened == OpenException(
        "order_open_after_close", item["reason"], item["next_step"], order_id="O-1",
        broker="BRKA", book="SMA-CORE", trade_date="2026-11-20")
    assert after.report["totals"]["blocks_working"] == 1


def test_a_done_block_without_allocation_is_allocated_now_and_escalated_at_19(
        db: Database) -> None:
    """Final CumQty known and no J: allocate at once; from 19:00 also an exception."""
    b = Blotter(db)
    b.order("O-1", status="done_for_day", cum="700")
    b.order("O-2", status="canceled", cum="0")  # nothing executed: nothing to allocate
    at18 = sweep(db, "18:00")
    assert at18.actions == (AllocateNow("O-1"),)
    assert [(i["kind"], i["order_id"]) for i in items(at18)] == [("not_allocated", "O-1")]
    at19 = sweep(db, "19:00")
    assert actions(at19, AllocateNow) == [AllocateNow("O-1")]
    [opened] = actions(at19, OpenException)
    assert (opened.kind, opened.order_id, opened.alloc_id) == ("not_allocated", "O-1", None)
    totals = at19.report["totals"]
    assert (totals["blocks"], totals["blocks_done"], totals["allocated"]) == (2, 1, 0)
    assert totals["allocated_pct"] == "0.0"


def test_a_j_without_p_or_with_only_87_3_is_flagged_after_the_p_timeout(db: Database) -> None:
    """No P, or only P 87=3, after 15 minutes: an item and an exception, never a new J."""
    b = Blotter(db)
    b.order("O-1")
    b.allocation("O-1", status="sent", sent="16:10", ticket_state=None)
    b.order("O-2")
    b.allocation("O-2", status="received", sent="16:10", received="16:12", ticket_state=None)
    early = sweep(db, "16:30", now=ny("16:20"))
    assert items(early) == [] and early.actions == ()
    late = sweep(db, "16:30")
    assert [(i["kind"], i["alloc_id"]) for i in items(late)] == [
        ("no_p", "A-O-1"), ("p_not_accepted", "A-O-2")]
    assert "do not resend the J as New" in items(late)[0]["next_step"]
    assert {(a.kind, a.alloc_id) for a in late.actions} == {
        ("no_p", "A-O-1"), ("p_not_accepted", "A-O-2")}
    assert not actions(late, AllocateNow)  # the J exists: never allocate again


def test_a_block_reject_opened_by_the_lifecycle_is_listed_not_reopened(db: Database) -> None:
    """P 87=1 with its code and text is listed; the lifecycle's exception is not duplicated."""
    b = Blotter(db)
    b.order("O-1")
    b.allocation("O-1", status="block_rejected", ack_status="1", rej_code="2",
                 ack_text="AvgPx 190.01 expected", ticket_state=None)
    b.exception("block_rejected", order_id="O-1", alloc_id="A-O-1")
    result = sweep(db, "16:30")
    [item] = items(result)
    assert item["kind"] == "block_rejected" and item["source"] == "sweep"
    assert item["reason"] == ("P 87=1 on J A-O-1, AllocRejCode 2 (incorrect average price): "
                              "AvgPx 190.01 expected")
    assert "New J with a new AllocID" in item["next_step"]
    assert result.actions == ()  # no second exception, and no AllocateNow: a J row exists
    assert result.report["totals"]["tickets"] == 0  # a rejected J's lines are not tickets


def test_an_account_reject_without_exception_is_opened_once(db: Database) -> None:
    """P 87=2 unresolved: opened when nothing is open on the J, left alone once something is."""
    b = Blotter(db)
    b.order("O-1")
    b.allocation("O-1", status="account_rejected", ack_status="2", rej_code="0",
                 ack_text="SMA0002 unknown", ticket_state=None)
    first = sweep(db, "16:30")
    [opened] = first.actions
    assert (opened.kind, opened.alloc_id) == ("account_rejected", "A-O-1")
    assert "AllocRejCode 0 (unknown account)" in opened.reason
    b.exception("j_account_rejected", order_id="O-1", alloc_id="A-O-1")  # lifecycle's own kind
    second = sweep(db, "16:30")
    assert second.actions == ()
    assert [i["kind"] for i in items(second)] == ["account_rejected"]


def test_allocation_that_no_longer_matches_the_order_is_an_exception(db: Database) -> None:
    """Σ AllocQty ≠ CumQty and AvgPx ≠ the broker's (after a bust) block the affirmation."""
    b = Blotter(db)
    b.order("O-1", status="done_for_day", cum="900", avg_px="190.1234")
    b.allocation("O-1", avg_px="190.1200", acked="17:50")
    b.bust("O-1", "X9", at="17:00")
    result = sweep(db, "18:00")
    [item] = items(result, "alloc_mismatch")
    assert item["reason"] == ("J A-O-1: Σ AllocQty 1000 ≠ CumQty 900; J AvgPx 190.1200 ≠ the "
                              "broker's AvgPx 190.1234 after bust/correction X9 arrived")
    assert "J Replace (71=1, 796=2)" in item["next_step"]
    assert [a.kind for a in actions(result, OpenException)] == ["alloc_mismatch"]


def test_a_ticket_without_ak_gets_one_bh_and_is_escalated_at_20(db: Database) -> None:
    """After 30 minutes a BH is asked for each ticket without AK, once; at 20:00 escalated."""
    b = Blotter(db)
    b.order("O-1")
    one, two, three = b.allocation("O-1", lines=THREE, acked="16:11")
    b.affirm(three)
    db.update_line(two, bh_sent_at=ny("16:50"), confirm_req_id="R-2")
    b.wire("BH", "out", "R-2", at="16:50")
    early = sweep(db, "16:30")
    assert early.actions == () and items(early) == []
    at17 = sweep(db, "18:00", now=ny("17:00"))
    assert at17.actions == (RequestConfirmation("A-O-1", one, "SMA0001"),)
    assert [i["individual_alloc_id"] for i in items(at17)] == [one, two]
    assert all("ConfirmationRequest (BH)" in i["next_step"] for i in items(at17))
    # Thirty minutes after its BH the second ticket is escalated before 20:00 ...
    at1730 = sweep(db, "18:00", now=ny("17:30"))
    assert [a.individual_alloc_id for a in actions(at1730, OpenException)] == [two]
    # ... and at 20:00 every ticket still without AK.
    at20 = sweep(db, "20:00")
    assert sorted(a.individual_alloc_id for a in actions(at20, OpenException)) == [one, two]
    assert {a.kind for a in actions(at20, OpenException)} == {"missing_ak"}


def test_ticket_states_from_the_lifecycle_are_listed_with_their_reason(db: Database) -> None:
    """An AU 940=2, a status AK and an AK not yet affirmed each show what to do next."""
    b = Blotter(db)
    b.order("O-1")
    one, two, three = b.allocation("O-1", lines=THREE)
    db.update_line(one, ticket_state="rejected", ak_received_at=ny("16:20"), confirm_id="K-1")
    b.confirmation(one, "A-O-1", outcome="rejected", affirm_status="2",
                   mismatches={"net_money": ["95000.00", "95001.00"]})
    db.update_line(two, ticket_state="exception", ak_received_at=ny("16:20"), confirm_id="K-2")
    b.confirmation(two, "A-O-1", account="SMA0002", confirm_type="1", confirm_status="3",
                   outcome="exception", affirm_status=None)
    db.update_line(three, ak_received_at=ny("16:20"), confirm_id="K-3")
    for ref in (f"K-{one}", f"K-{two}"):
        b.wire("AK", "in", ref, at="16:20")
    b.wire("AU", "out", f"K-{one}", at="16:20")
    result = sweep(db, "16:30")
    by_kind = {i["kind"]: i for i in items(result)}
    assert set(by_kind) == {"ak_rejected", "ticket_exception", "ak_not_affirmed"}
    assert "95001.00" in by_kind["ak_rejected"]["reason"]
    assert "replacement AK" in by_kind["ak_rejected"]["next_step"]
    assert by_kind["ticket_exception"]["reason"] == (
        "AK ConfirmType 1, ConfirmStatus 3 (missing settlement instructions)")
    assert "AU 940=3" in by_kind["ak_not_affirmed"]["next_step"]
    assert result.actions == ()  # the lifecycle owns these
    assert result.report["recordkeeping"]["ok"]


def test_a_broker_session_down_with_work_is_an_exception(db: Database) -> None:
    """Down broker sessions with open work today are escalated; without work only listed."""
    b = Blotter(db)
    b.order("O-1", broker="BRKB")
    b.allocation("O-1", status="sent", broker="BRKB", ticket_state=None)
    sessions = [{"name": "OMS1", "role": "oms", "logged_on": False},
                {"name": "BRKA", "role": "broker", "logged_on": False},
                {"name": "BRKB", "role": "broker", "logged_on": False}]
    result = sweep(db, "16:30", sessions=sessions)
    assert result.report["sessions_not_logged_on"] == ["BRKA", "BRKB", "OMS1"]
    assert [(i["kind"], i["broker"]) for i in items(result)] == [
        ("session_down", None), ("no_p", "BRKB")]
    assert items(result, "session_down")[0]["reason"] == (
        "broker FIX session(s) not logged on: BRKB (open work today)")
    assert "the BRKB session is not logged on" in items(result, "no_p")[0]["reason"]
    assert sorted(a.kind for a in actions(result, OpenException)) == ["no_p", "session_down"]
    apply_exception_actions(db, result.actions, ny("16:30"))
    assert sweep(db, "16:30", sessions=sessions).actions == ()
    # Back up: the sweep's session_down exception is resolved; nothing down, nothing listed.
    back = sweep(db, "16:30")
    assert [(a.kind, type(a).__name__) for a in back.actions] == [
        ("session_down", "ResolveException")]
    quiet = sweep(db, "16:30", sessions=[{"name": "BRKA", "role": "broker",
                                          "logged_on": False}])
    assert items(quiet, "session_down") == [] and quiet.report["sessions_not_logged_on"] == [
        "BRKA"]


def test_recordkeeping_finds_messages_without_a_stored_raw_copy(db: Database) -> None:
    """Each J/P/AK/AU of the day must be in the wire log; a gap is an exception until filed."""
    b = Blotter(db)
    clock = FakeClock(ny("16:30"))
    b.order("O-1")
    [line] = b.allocation("O-1", lines=(("SMA0001", "1000", "CUST-A"),), wire=False)
    db.update_allocation("A-O-1", oms_sent_at=ny("16:10"))
    b.wire("J", "out", "A-O-1")  # to the broker only: the OMS's copy is not filed
    b.affirm(line)
    confirm = b.confirmation(line, "A-O-1")
    b.wire("AK", "in", confirm, at="16:20")
    first = sweep(db, "16:30", now=clock.now())
    rec = first.report["recordkeeping"]
    assert rec["ok"] is False
    assert rec["messages"] == {"J": {"expected": 1, "stored": 0}, "P": {"expected": 1, "stored": 0},
                               "AK": {"expected": 1, "stored": 1},
                               "AU": {"expected": 1, "stored": 0}}
    [item] = items(first)
    assert item["kind"] == "record_missing" and item["alloc_id"] == "A-O-1"
    assert item["reason"] == ("no stored raw message with a timestamp for: J out (A-O-1), "
                              f"P in (A-O-1), AU out ({confirm})")
    apply_exception_actions(db, first.actions, clock.now())
    assert [e["kind"] for e in b.open_exceptions()] == ["record_missing"]
    b.wire("J", "out", "A-O-1", session=OMS_SESSION)
    b.wire("P", "in", "A-O-1", at="16:11")
    b.wire("AU", "out", confirm, at="16:21")
    clock.advance(timedelta(minutes=5))
    second = sweep(db, "16:30", now=clock.now())
    assert second.report["recordkeeping"]["ok"] and items(second) == []
    [resolve] = second.actions
    assert isinstance(resolve, ResolveException) and resolve.kind == "record_missing"
    apply_exception_actions(db, second.actions, clock.now())
    assert b.open_exceptions() == []


def test_a_sweep_exception_is_resolved_when_its_problem_is_gone(db: Database) -> None:
    """The sweep's own no_p exception closes on the next run after the P arrives."""
    b = Blotter(db)
    b.order("O-1")
    b.allocation("O-1", status="sent", ticket_state=None)
    first = sweep(db, "16:30")
    apply_exception_actions(db, first.actions, ny("16:30"))
    [exc] = b.open_exceptions()
    db.update_allocation("A-O-1", status="accepted", acked_at=ny("16:40"))
    b.wire("P", "in", "A-O-1", at="16:40")
    second = sweep(db, "18:00", now=ny("16:45"))
    gone = "the 2026-11-20 18:00 sweep found the problem gone"
    assert second.actions == (ResolveException(exc["id"], "no_p", gone),)
    assert items(second) == []  # nothing listed for what is being resolved


def test_open_exceptions_of_the_day_that_no_check_explains_are_listed(db: Database) -> None:
    """A lifecycle exception of the trade date is listed with its id; other dates are not."""
    b = Blotter(db)
    b.order("O-1")
    [line] = b.allocation("O-1", lines=(("SMA0001", "1000", "CUST-A"),))
    b.affirm(line)
    exc_id = b.exception("ak_unknown_alloc", alloc_id="A-O-1")
    db.open_exception("ak_unknown_alloc", reason="old", next_step="-", opened_at=ny("16:00"),
                      alloc_id="A-OTHER", trade_date="2026-11-19")
    result = sweep(db, "16:30")
    [item] = items(result)
    assert item == {"kind": "ak_unknown_alloc", "order_id": None, "alloc_id": "A-O-1",
                    "individual_alloc_id": None, "account_id": None, "broker": None,
                    "reason": "ak_unknown_alloc (lifecycle)", "next_step": "see the lifecycle",
                    "source": "exception", "exception_id": exc_id}
    assert result.actions == ()


def test_running_twice_gives_the_same_report_and_asks_nothing_already_done(
        any_db: Database) -> None:
    """Second run after the dispatcher acted: same report apart from ran_at/runs, no action."""
    db = any_db
    b = Blotter(db)
    b.order("O-1", status="partially_filled", cum="100")
    b.order("O-2")
    b.allocation("O-2", status="sent", ticket_state=None)
    b.order("O-3")
    one, _two, three = b.allocation("O-3", lines=THREE, acked="16:11")
    b.affirm(three)
    now = ny("19:00")
    first = sweep(db, "19:00", now=now)
    assert {type(a).__name__ for a in first.actions} == {"OpenException", "RequestConfirmation"}
    # What the dispatcher does with the actions: exceptions, and a BH per ticket.
    apply_exception_actions(db, first.actions, now)
    for n, ask in enumerate(actions(first, RequestConfirmation)):
        db.update_line(ask.individual_alloc_id, bh_sent_at=now, confirm_req_id=f"R-{n}")
        b.wire("BH", "out", f"R-{n}", at="19:00")
    first_id = store(db, first, DAY, "19:00", now)
    later = now + timedelta(seconds=40)
    second = sweep(db, "19:00", now=later)
    assert second.actions == ()
    assert second.report | {"ran_at": None} == first.report | {"ran_at": None}
    assert store(db, second, DAY, "19:00", later) == first_id
    [row] = db.sweep_reports("2026-11-20")
    assert row["runs"] == 2 and row["ran_at"] == later
    assert one in {i["individual_alloc_id"] for i in items(second, "missing_ak")}


def test_the_lifecycles_p_timeout_exception_covers_a_missing_p(db: Database) -> None:
    """A J the lifecycle already flagged (p_timeout) is listed once and not opened again."""
    b = Blotter(db)
    b.order("O-1")
    b.allocation("O-1", status="sent", ticket_state=None)
    b.exception("p_timeout", order_id="O-1", alloc_id="A-O-1")
    result = sweep(db, "16:30")
    assert [(i["kind"], i["source"]) for i in items(result)] == [("no_p", "sweep")]
    assert result.actions == ()


def test_a_refused_replace_leaves_the_accepted_j_live(db: Database) -> None:
    """After a refused Replace the original J's tickets count; the refusal is listed."""
    b = Blotter(db)
    b.order("O-1")
    [line] = b.allocation("O-1", lines=(("SMA0001", "1000", "CUST-A"),))
    b.affirm(line)
    b.allocation("O-1", "A-O-1-R1", status="replace_refused", trans="1", created="17:00",
                 sent="17:00", acked="17:02", ref_alloc_id="A-O-1",
                 lines=(("SMA0002", "1000", "CUST-B"),), ticket_state=None)
    exc_id = b.exception("replace_refused", order_id="O-1", alloc_id="A-O-1-R1")
    result = sweep(db, "18:00")
    assert result.report["totals"]["tickets"] == 1
    assert result.report["totals"]["affirmed_pct"] == "100.0"
    assert [(i["kind"], i.get("exception_id")) for i in items(result)] == [
        ("replace_refused", exc_id)]
    assert result.actions == ()
