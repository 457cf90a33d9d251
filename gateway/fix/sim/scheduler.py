"""One thread that runs the broker simulator's delayed work (AKs, AS, busts) in time order.

Tasks due at the same moment run in the order they were scheduled. Stopping drops what has
not run yet: the simulator's saved state says what is still owed, and a restarted simulator
schedules it again.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Scheduler:
    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, due: float, task: Callable[[], None]) -> None:
        """Run `task` at `due` (time.monotonic()) or as soon as possible after it."""
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), task))
            self._cond.notify()

    def call_soon(self, task: Callable[[], None]) -> None:
        self.call_at(time.monotonic(), task)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._stopped:
                    return
                _, _, task = heapq.heappop(self._heap)
            try:
                task()
            except Exception as exc:  # a simulator never dies of its own bug: it reports it
                self._on_error(exc)
