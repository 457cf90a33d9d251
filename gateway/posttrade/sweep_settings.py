"""`[sweep]` settings and the sweep's calendar: checkpoints, trading days, manual runs."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, PositiveInt, field_validator

from gateway.clock import CalendarError, trade_date_of

DEFAULT_CHECKPOINTS = ("16:30", "18:00", "19:00", "20:00", "20:45", "21:00", "23:00")
END_OF_DAY = "23:59"
"""The checkpoint a manual run for a past trade date is filed under."""
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_checkpoint(text: str) -> str:
    """`HH:MM` (24-hour) or ValueError saying what is wrong."""
    if not isinstance(text, str) or not _HHMM.match(text):
        raise ValueError(f"invalid time {text!r}: expected HH:MM, 24-hour New York time")
    return text


def parse_trade_date(text: str) -> date:
    """`YYYY-MM-DD` or ValueError saying what is wrong."""
    try:
        if not re.match(r"^\d{4}-\d{2}-\d{2}$", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"invalid date {text!r}: expected YYYY-MM-DD") from None


class SweepSettings(BaseModel):
    """`[sweep]`: when the end-of-day sweep runs and how long it lets a J or a ticket wait."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    checkpoints: tuple[str, ...] = DEFAULT_CHECKPOINTS
    """New York wall-clock times, run on every XNYS trading day."""
    time_zone: str = "America/New_York"
    market_close: str = "16:00"
    allocation_deadline: str = "19:00"
    """DTCC: allocations done by 19:00 ET; a block without a J then is escalated."""
    ak_escalation: str = "20:00"
    """A ticket still without an AK at this checkpoint is escalated (after its BH)."""
    affirmation_cutoff: str = "21:00"
    """DTC's affirmation cutoff: from this checkpoint on, unaffirmed tickets are listed."""
    ndo_deadline: str = "23:30"
    """Last time for a Night Delivery Order; later, a Day Delivery Order on T+1."""
    ak_timeout_minutes: PositiveInt = 30
    p_timeout_minutes: PositiveInt = 15
    misfire_grace_minutes: PositiveInt = 240
    """A checkpoint missed while the daemon was down runs once on start within this."""
    job_table: str = "apscheduler_jobs"
    """The scheduler's table in the gateway's database (one per gateway sharing it)."""

    @field_validator("market_close", "allocation_deadline", "ak_escalation",
                     "affirmation_cutoff", "ndo_deadline")
    @classmethod
    def _time(cls, value: str) -> str:
        return parse_checkpoint(value)

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            parse_checkpoint(value)
        if len(set(values)) != len(values):
            raise ValueError("checkpoints must be unique")
        return tuple(sorted(values))

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("job_table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", value):
            raise ValueError("job_table must be a lower-case SQL identifier")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


# -- calendar -------------------------------------------------------------------------------


def checkpoint_instant(trade_date: date, checkpoint: str, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock checkpoint on a trade date (DST-aware)."""
    hour, minute = (int(x) for x in parse_checkpoint(checkpoint).split(":"))
    return datetime.combine(trade_date, time(hour, minute), tzinfo=zone).astimezone(UTC)


def is_session_day(day: date) -> bool:
    """Whether XNYS trades on this date (weekends and exchange holidays are not)."""
    import pandas as pd

    from gateway.clock import _xnys

    try:
        return bool(_xnys().is_session(pd.Timestamp(day)))  # type: ignore[attr-defined]
    except Exception as exc:
        raise CalendarError(f"XNYS calendar cannot tell whether {day} is a trading day: "
                            f"{type(exc).__name__}: {exc}") from exc


def run_target(at: str | None, on: str | None, now: datetime) -> tuple[str, date]:
    """The (checkpoint, trade date) of a manual run, or ValueError with a precise reason.

    Defaults: today's New York date, and the New York time now; a past date without a
    time is filed under 23:59 (the day is over).
    """
    today = trade_date_of(now)
    day = parse_trade_date(on) if on is not None else today
    if day > today:
        raise ValueError(f"trade date {day} is in the future (today is {today} in New York)")
    if not is_session_day(day):
        raise ValueError(f"{day} is not an XNYS trading day: there is nothing to sweep")
    if at is not None:
        return parse_checkpoint(at), day
    if day < today:
        return END_OF_DAY, day
    return now.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M"), day

