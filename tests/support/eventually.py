"""The one way tests wait for something another thread or process does.

    eventually(predicate, timeout=10.0, interval=0.02, description="...", nudge=None)

Style: it **raises** ``AssertionError`` when the predicate is still false at the deadline,
with the description, how long it waited and the predicate's last value; it never returns
False. On success it returns the predicate's (truthy) value, so a test can wait for and use
a result in one step::

    j = eventually(lambda: oms.allocation_for("BLK-1"), timeout=30,
                   description="the OMS received its J")

Rules for callers (they are why this helper exists):

* Wait on the event that proves the work is done, never on a fixed sleep: for "nothing
  happened", first wait for a later event that can only have been processed after the one
  that must change nothing (a later message on the same session, the dispatcher having
  applied a version), then assert.
* ``nudge`` is for an action whose delivery is not guaranteed, such as editing a file a
  watcher may not have subscribed to yet (watchfiles gives no ready signal): it is called
  every ``nudge_every`` seconds while the predicate is false, to repeat the action.
  It must be idempotent.
* The predicate is called once more at the deadline, so a slow last poll still counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, *,
               description: str | None = None, nudge: Callable[[], object] | None = None,
               nudge_every: float = 0.5) -> T:
    """Poll ``predicate`` until it returns a truthy value and return it; raise on timeout."""
    if timeout <= 0 or interval <= 0:
        raise ValueError("timeout and interval must be positive")
    start = time.monotonic()
    deadline = start + timeout
    next_nudge = start + nudge_every
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            break
        if nudge is not None and now >= next_nudge:
            nudge()
            next_nudge = now + nudge_every
        time.sleep(min(interval, max(0.0, deadline - now)))
    value = predicate()
    if value:
        return value
    what = description or getattr(predicate, "__qualname__", repr(predicate))
    raise AssertionError(
        f"not true within {timeout:g}s: {what} (last value: {value!r}, "
        f"waited {time.monotonic() - start:.2f}s)")
