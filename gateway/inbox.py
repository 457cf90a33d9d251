"""The bounded, thread-safe hand-off from FIX threads to the single dispatcher.

Execution reports are taken in turn by order: between two events that are not reports
(a session event, an operator's request, a rulebook change, the sweep), the queued
reports are served one per order in rotation, each order's in arrival order. So a block's
fills do not wait behind a long run of another order's fills: under a stream of
background fills, a block's ten fills each wait for about one background fill, not for
the whole backlog. A fill that completes its order (the block's J waits on it) goes
further: it is taken first when nothing else of its own order and nothing but other
orders' reports is waiting. No event ever overtakes another event of its own order, nor
anything that is not a report, and nothing that is not a report overtakes anything.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Any

import structlog

from gateway.events import BrokerReportReceived

log = structlog.get_logger("fixalloc.inbox")


def completes_an_order(item: Any) -> bool:
    """A fill that leaves its order filled: the event its allocation waits for."""
    return (isinstance(item, BrokerReportReceived) and item.order_id is not None
            and item.exec_type == "F" and item.ord_status == "2")


class _Segment:
    """Reports by order (served in rotation), then the event that closes the segment."""

    __slots__ = ("barrier", "closed", "queues")

    def __init__(self) -> None:
        self.queues: OrderedDict[str | None, deque[Any]] = OrderedDict()
        self.barrier: Any = None
        self.closed = False


class Inbox:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._cond = threading.Condition()
        self._fast: deque[Any] = deque()
        self._segments: deque[_Segment] = deque([_Segment()])
        self._depth = 0  # events waiting in the segments
        self._reports: Counter[str | None] = Counter()  # queued reports, by order
        self._others = 0  # queued events that are not reports
        self.overtakes = 0  # fills sent through the fast lane (a metric for the tests)

    def put(self, item: Any) -> None:
        """Enqueue; when full, block (the item is already persisted) and say so once a second."""
        with self._cond:
            while len(self._fast) + self._depth >= self.capacity:
                if not self._cond.wait(timeout=1.0):
                    log.warning("inbox.at_capacity", capacity=self.capacity)
            if (self._depth and completes_an_order(item) and not self._others
                    and not self._reports[item.order_id]):
                self._fast.append(item)
                self.overtakes += 1
            else:
                tail = self._segments[-1]
                if tail.closed:
                    tail = _Segment()
                    self._segments.append(tail)
                if isinstance(item, BrokerReportReceived):
                    tail.queues.setdefault(item.order_id, deque()).append(item)
                    self._reports[item.order_id] += 1
                else:
                    tail.barrier, tail.closed = item, True
                    self._others += 1
                self._depth += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The next event (the fast lane first); queue.Empty when none came in `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._fast or self._depth):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(timeout=remaining)
            item = self._fast.popleft() if self._fast else self._next()
            self._cond.notify_all()
            return item

    def _next(self) -> Any:
        """The next queued event: the head segment's next order in rotation, else the
        event that closes it."""
        # Only the last segment is open, and it is empty only when nothing is queued: the
        # head has reports or its closing event.
        head = self._segments[0]
        self._depth -= 1
        if head.queues:
            key, mine = next(iter(head.queues.items()))
            item = mine.popleft()
            if mine:
                head.queues.move_to_end(key)  # the next order's turn
            else:
                del head.queues[key]
            self._reports[key] -= 1
            if not self._reports[key]:
                del self._reports[key]
            return item
        self._segments.popleft()
        if not self._segments:
            self._segments.append(_Segment())
        self._others -= 1
        return head.barrier

    def depth(self) -> int:
        with self._cond:
            return len(self._fast) + self._depth
