"""The bounded, thread-safe hand-off from FIX threads to the single dispatcher.

Two lanes. A fill that completes its order (the block's J waits on it) may overtake other
orders' execution reports still queued: it goes to the fast lane when nothing else of its
own order is waiting and nothing but other orders' reports is (no session event, no
operator's request, no rulebook change, no sweep). Everything else keeps arrival order.
So under a stream of other orders' fills, a block's J does not wait behind them; no event
ever overtakes another event of its own order, nor anything that is not a fill report.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from typing import Any

import structlog

from gateway.events import BrokerReportReceived

log = structlog.get_logger("fixalloc.inbox")


def completes_an_order(item: Any) -> bool:
    """A fill that leaves its order filled: the event its allocation waits for."""
    return (isinstance(item, BrokerReportReceived) and item.order_id is not None
            and item.exec_type == "F" and item.ord_status == "2")


class Inbox:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._cond = threading.Condition()
        self._fast: deque[Any] = deque()
        self._slow: deque[Any] = deque()
        self._reports: Counter[str | None] = Counter()  # slow-lane reports, by order
        self._others = 0  # slow-lane events that are not reports
        self.overtakes = 0  # fills sent through the fast lane (a metric for the tests)

    def put(self, item: Any) -> None:
        """Enqueue; when full, block (the item is already persisted) and say so once a second."""
        with self._cond:
            while len(self._fast) + len(self._slow) >= self.capacity:
                if not self._cond.wait(timeout=1.0):
                    log.warning("inbox.at_capacity", capacity=self.capacity)
            report = isinstance(item, BrokerReportReceived)
            if (self._slow and completes_an_order(item) and not self._others
                    and not self._reports[item.order_id]):
                self._fast.append(item)
                self.overtakes += 1
            else:
                self._slow.append(item)
                if report:
                    self._reports[item.order_id] += 1
                else:
                    self._others += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The next event (the fast lane first); queue.Empty when none came in `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._fast or self._slow):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(timeout=remaining)
            if self._fast:
                item = self._fast.popleft()
            else:
                item = self._slow.popleft()
                if isinstance(item, BrokerReportReceived):
                    self._reports[item.order_id] -= 1
                    if not self._reports[item.order_id]:
                        del self._reports[item.order_id]
                else:
                    self._others -= 1
            self._cond.notify_all()
            return item

    def depth(self) -> int:
        with self._cond:
            return len(self._fast) + len(self._slow)
