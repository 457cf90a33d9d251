"""A broker that refuses our Logon is retried with a growing pause, not every few seconds.

quickfix's initiator reconnects every ReconnectInterval whatever the peer said. When the
peer refuses the Logon itself (a wrong password, an unknown CompID, a session it has
disabled), hammering it every second achieves nothing, fills its logs and may get the
CompID locked. A refusal is a session that went down without ever being logged on since
its last Logon went out. After the n-th refusal in a row the session is disabled
(quickfix's Session.logout(), which stops the initiator from reconnecting) and enabled
again after reconnect_seconds x 2^(n-1), at most `max_seconds`. A logon that succeeds
ends the streak. The caller raises the alert; this class only counts and paces.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import quickfix as fix
import structlog

log = structlog.get_logger("fixalloc.fix")


@dataclass
class _Streak:
    refusals: int = 0
    logged_on: bool = False
    timer: threading.Timer | None = None


class LogonBackoff:
    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self._streaks: dict[str, _Streak] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def delay(self, reconnect_seconds: float, refusals: int) -> float:
        """The pause before the next attempt after `refusals` refusals in a row."""
        return float(min(self.max_seconds, reconnect_seconds * 2 ** max(refusals - 1, 0)))

    def on_logon(self, key: str) -> None:
        with self._lock:
            streak = self._streaks.setdefault(key, _Streak())
            streak.refusals, streak.logged_on = 0, True

    def on_logout(self, session_id: fix.SessionID, reconnect_seconds: float
                  ) -> tuple[int, float] | None:
        """(refusals in a row, seconds until the next attempt) when this logout was a
        refused logon; None when the session had been logged on."""
        key = session_id.toString()
        with self._lock:
            streak = self._streaks.setdefault(key, _Streak())
            if streak.logged_on:
                streak.logged_on = False
                return None
            streak.refusals += 1
            pause = self.delay(reconnect_seconds, streak.refusals)
            if self._stopped or pause <= reconnect_seconds:
                return streak.refusals, float(reconnect_seconds)
            session = fix.Session.lookupSession(session_id)
            if session is None:
                return streak.refusals, float(reconnect_seconds)
            session.logout()  # disabled: the initiator does not reconnect until logon()
            if streak.timer is not None:
                streak.timer.cancel()
            streak.timer = threading.Timer(pause, self._enable, args=(session_id,))
            streak.timer.daemon = True
            streak.timer.start()
            return streak.refusals, pause

    def _enable(self, session_id: fix.SessionID) -> None:
        with self._lock:
            if self._stopped:
                return
            session = fix.Session.lookupSession(session_id)
        if session is not None:
            log.info("fix.logon_retry", session=session_id.toString())
            session.logon()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for streak in self._streaks.values():
                if streak.timer is not None:
                    streak.timer.cancel()
