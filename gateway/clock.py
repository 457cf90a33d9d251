"""Injectable clocks and the trading/settlement calendar.

Trade dates are US/Eastern wall-clock dates (LocalMktDate), never the UTC date: a block
executed at 19:55 ET belongs to that day even though UTC has rolled over. Settlement dates
come from the exchange calendar library rather than a hand-written holiday list.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
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


def settlement_date(trade_date: date, days: int = 1) -> date:
    """Trade date plus `days` NYSE sessions (T+1 for US equities since 2024-05-28)."""
    import pandas as pd

    cal = _xnys()
    ts = pd.Timestamp(trade_date)
    try:
        if not cal.is_session(ts):  # type: ignore[attr-defined]
            ts = cal.date_to_session(ts, direction="next")  # type: ignore[attr-defined]
        settle = cal.session_offset(ts, days)  # type: ignore[attr-defined]
        return settle.date()  # type: ignore[no-any-return]
    except Exception:
        # Outside the calendar's range (far past or future): weekdays are the best we know.
        d = trade_date
        left = days
        while left:
            d += timedelta(days=1)
            if d.weekday() < 5:
                left -= 1
        return d
