"""The inbox: orders' reports taken in turn, a completing fill taken first, and nothing
ever reordered against its own order's events or anything that is not a report
(gateway/inbox.py)."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import BrokerReportReceived, SweepDue
from gateway.inbox import Inbox, completes_an_order

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def _er(order: str, n: int, *, last: bool = False, exec_type: str = "F") -> BrokerReportReceived:
    return BrokerReportReceived(
        session="S", report_id=n, order_id=order, cl_ord_id=order, broker_order_id="B",
        exec_id=f"{order}-{n}", exec_type=exec_type, ord_status="2" if last else "1",
        last_qty=Decimal(1), last_px=Decimal(1), cum_qty=Decimal(n), avg_px=Decimal(1),
        leaves_qty=Decimal(0) if last else Decimal(1), text=None, trade_date="2026-11-30",
        poss_dup=False, ts_recv=NOW)


def _drain(inbox: Inbox) -> list[object]:
    out = []
    while inbox.depth():
        out.append(inbox.get(timeout=0))
    return out


def test_a_completing_fill_overtakes_other_orders_reports() -> None:
    inbox = Inbox(100)
    background = [_er("BG", n) for n in range(1, 6)]
    for ev in background:
        inbox.put(ev)
    done = _er("A", 9, last=True)
    inbox.put(done)
    assert _drain(inbox) == [done, *background]
    assert inbox.overtakes == 1


def test_it_never_overtakes_its_own_orders_earlier_report() -> None:
    inbox = Inbox(100)
    first, done = _er("A", 1), _er("A", 2, last=True)
    inbox.put(_er("BG", 1))
    inbox.put(first)
    inbox.put(done)
    assert _drain(inbox) == [_er("BG", 1), first, done]
    assert inbox.overtakes == 0


def test_it_never_overtakes_anything_that_is_not_a_report() -> None:
    inbox = Inbox(100)
    sweep = SweepDue(checkpoint="19:00", trade_date=NOW.date())
    inbox.put(_er("BG", 1))
    inbox.put(sweep)
    done = _er("A", 2, last=True)
    inbox.put(done)
    assert _drain(inbox) == [_er("BG", 1), sweep, done]


def test_only_a_fill_that_leaves_its_order_filled_completes_it() -> None:
    assert completes_an_order(_er("A", 1, last=True))
    assert not completes_an_order(_er("A", 1))
    assert not completes_an_order(_er("A", 1, last=True, exec_type="H"))  # a bust


def test_get_waits_for_a_put_and_times_out_when_none_comes() -> None:
    inbox = Inbox(4)
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.01)
    threading.Timer(0.05, inbox.put, args=("x",)).start()
    assert inbox.get(timeout=5) == "x"


def test_a_full_inbox_blocks_the_producer_until_the_dispatcher_takes_one() -> None:
    inbox = Inbox(1)
    inbox.put("first")
    done = threading.Event()

    def produce() -> None:
        inbox.put("second")
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert not done.wait(0.2)  # blocked: the inbox holds one
    assert inbox.get(timeout=1) == "first"
    assert done.wait(5) and inbox.get(timeout=1) == "second"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C", "sweep"]), st.booleans()),
                max_size=40))
def test_per_order_and_non_report_order_is_kept(script: list[tuple[str, bool]]) -> None:
    inbox = Inbox(1000)
    sent: list[object] = []
    for n, (who, last) in enumerate(script):
        ev: object = (SweepDue(checkpoint=f"{n}", trade_date=NOW.date()) if who == "sweep"
                      else _er(who, n, last=last))
        inbox.put(ev)
        sent.append(ev)
    got = _drain(inbox)
    assert sorted(map(id, got)) == sorted(map(id, sent))  # nothing lost or doubled
    for key in ("A", "B", "C"):  # each order's events in arrival order
        mine = [e for e in got if isinstance(e, BrokerReportReceived) and e.order_id == key]
        assert mine == [e for e in sent if isinstance(e, BrokerReportReceived)
                        and e.order_id == key]
    # An event that is not a report keeps its place against everything sent before it.
    for i, ev in enumerate(sent):
        if isinstance(ev, SweepDue):
            assert {id(e) for e in got[:got.index(ev)]} >= {id(e) for e in sent[:i]}


def test_orders_reports_are_taken_in_turn_so_a_block_does_not_wait_for_a_backlog() -> None:
    inbox = Inbox(100)
    background = [_er("BG", n) for n in range(1, 6)]
    for ev in background:
        inbox.put(ev)
    block = [_er("A", 11), _er("A", 12), _er("A", 13, last=True)]
    for ev in block:
        inbox.put(ev)
    bg = background
    assert _drain(inbox) == [bg[0], block[0], bg[1], block[1], bg[2], block[2], bg[3], bg[4]]
    assert inbox.overtakes == 0  # the completing fill had its own order's reports ahead


def test_the_rotation_stops_at_an_event_that_is_not_a_report() -> None:
    inbox = Inbox(100)
    sweep = SweepDue(checkpoint="19:00", trade_date=NOW.date())
    for ev in (_er("BG", 1), _er("BG", 2), sweep, _er("A", 3), _er("BG", 4), _er("A", 5)):
        inbox.put(ev)
    assert _drain(inbox) == [_er("BG", 1), _er("BG", 2), sweep, _er("A", 3), _er("BG", 4),
                             _er("A", 5)]
    assert inbox.depth() == 0
    inbox.put(_er("C", 6))  # the inbox goes on after it has been emptied
    assert inbox.get(timeout=0) == _er("C", 6)
