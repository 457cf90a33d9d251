"""Injectable clocks and the trading/settlement calendar.

Trade dates are US/Eastern wall-clock dates (LocalMktDate), never the UTC date: a block
executed at 19:55 ET belongs to that day even though UTC has rolled over. Settlement dates
come from the exchange calendar library rather than a hand-written holiday list.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def trade_date_of(ts: datetime) -> date:
    return ts.astimezone(NEW_YORK).date()


@functools.lru_cache(maxsize=1)
def _xnys() -> object:
    import exchange_calendars as xcals

    return xcals.get_calendar("XNYS", start="2020-01-01")


class CalendarError(RuntimeError):
    """No settlement date can be computed: a J must not carry a guessed one."""


def settlement_date(trade_date: date, days: int = 1) -> date:
    """Trade date plus `days` NYSE sessions (T+1 for US equities since 2024-05-28).

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
        settle = cal.session_offset(ts, days)  # type: ignore[attr-defined]
        return settle.date()  # type: ignore[no-any-return]
    except Exception as exc:
        # Whatever the library raised, the answer is "unknown", said loudly.
        raise CalendarError(f"no XNYS settlement date for trade date {trade_date} "
                            f"(T+{days}): {type(exc).__name__}: {exc}") from exc
