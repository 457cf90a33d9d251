"""The bounded, thread-safe hand-off from FIX threads to the single dispatcher."""

from __future__ import annotations

import queue
from typing import Any

import structlog

log = structlog.get_logger("fixalloc.inbox")


class Inbox:
    def __init__(self, capacity: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self.capacity = capacity

    def put(self, item: Any) -> None:
        """Enqueue; when full, block (the item is already persisted) and say so once a second."""
        while True:
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                log.warning("inbox.at_capacity", capacity=self.capacity)

    def get(self, timeout: float | None = None) -> Any:
        return self._queue.get(timeout=timeout)

    def depth(self) -> int:
        return self._queue.qsize()
