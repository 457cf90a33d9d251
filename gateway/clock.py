"""Injectable clocks and the trading/settlement calendar.

Trade dates are US/Eastern wall-clock dates (LocalMktDate), never the UTC date: a block
executed at 19:55 ET belongs to that day even though UTC has rolled over. Settlement dates
come from the exchange calendar library rather than a hand-written holiday list.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    """A trading day replayed: starts at `start` and runs `speed` times faster than real time.

    For rehearsals and `fixalloc demo --scenario day` (`fixalloc run --clock-start`), never
    production: it moves our timestamps, trade dates and deadlines, not quickfix's own
    SendingTime, which stays real.
    """

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulated clock's start needs a time zone")
        if speed <= 0:
            raise ValueError("the simulated clock's speed must be positive")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._real_start = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._real_start) * self.speed)


def trade_date_of(ts: datetime) -> date:
    return ts.astimezone(NEW_YORK).date()


@functools.lru_cache(maxsize=1)
def _xnys() -> object:
    import exchange_calendars as xcals

    return xcals.get_calendar("XNYS", start="2020-01-01")


class CalendarError(RuntimeError):
    """No settlement date can be computed: a J must not carry a guessed one."""


@functools.lru_cache(maxsize=1)
def _bank_holidays() -> frozenset[date]:
    """The Federal Reserve's holidays, which are DTC's settlement holidays.

    The federal holidays, as pandas defines them, with the Fed's own weekend rule: a
    holiday on a Sunday is observed on the Monday, but on a Saturday the Fed is open the
    Friday before (the federal calendar would close that Friday).
    """
    from pandas.tseries.holiday import Holiday, USFederalHolidayCalendar, sunday_to_monday

    rules = [Holiday(r.name, month=r.month, day=r.day, observance=sunday_to_monday)
             if r.observance is not None else r for r in USFederalHolidayCalendar.rules]
    days = USFederalHolidayCalendar(rules=rules).holidays(start="2020-01-01", end="2040-12-31")
    return frozenset(d.date() for d in days)


def settlement_date(trade_date: date, days: int = 1) -> date:
    """Trade date plus `days` settlement days (T+1 for US equities since 2024-05-28).

    A settlement day is an NYSE session on which the Federal Reserve is open too.

    Outside the calendar's range, or if the calendar library fails, this raises rather
    than fall back to weekdays: a weekday guess would put a wrong SettlDate on a J (a
    holiday) with nothing in the log. The caller turns it into an alert and an exception.
    """
    import pandas as pd

    cal = _xnys()
    ts = pd.Timestamp(trade_date)
    try:
        if not cal.is_session(ts):  # type: ignore[attr-defined]
            ts = cal.date_to_session(ts, direction="next")  # type: ignore[attr-defined]
        # Settlement needs the exchange open and the Fed/DTC open: NYSE trades on Columbus
        # Day and Veterans Day, but nothing settles on them.
        closed = _bank_holidays()
        left = days
        while left:
            ts = cal.next_session(ts)  # type: ignore[attr-defined]
            if ts.date() not in closed:
                left -= 1
        return ts.date()  # type: ignore[no-any-return]
    except Exception as exc:
        # Whatever the library raised, the answer is "unknown", said loudly.
        raise CalendarError(f"no XNYS settlement date for trade date {trade_date} "
                            f"(T+{days}): {type(exc).__name__}: {exc}") from exc
