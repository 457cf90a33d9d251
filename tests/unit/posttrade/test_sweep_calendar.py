"""Time and calendar for the sweep (FIX_ALLOCATION.md §7 scenario 29) on a frozen clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.clock import settlement_date, trade_date_of
from gateway.persistence.store import Database
from gateway.posttrade.scheduler import (
    _REGISTRY,
    _Registration,
    checkpoint_trigger,
    fire_checkpoint,
    latest_occurrence,
)
from gateway.posttrade.sweep import (
    END_OF_DAY,
    SweepSettings,
    checkpoint_instant,
    is_session_day,
    run_target,
)
from tests.support.clock import FakeClock
from tests.unit.posttrade.sweep_rows import NY, Blotter, ny, sweep


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_block_traded_at_19_55_et_belongs_to_its_new_york_trade_date(db: Database) -> None:
    """19:55 ET is already the next day in UTC; the block is still swept on its ET date."""
    traded = ny("19:55")
    assert traded == _utc("2026-11-21T00:55:00") and traded.date() == date(2026, 11, 21)
    assert trade_date_of(traded) == date(2026, 11, 20)
    b = Blotter(db, trade_date_of(traded))
    b.order("O-LATE", at="19:55", status="partially_filled", cum="100")
    friday = sweep(db, "20:00")
    assert friday.report["totals"]["blocks"] == 1
    assert friday.report["checkpoint_at"] == "2026-11-21T01:00:00+00:00"
    monday = sweep(db, "20:00", day=date(2026, 11, 23))
    assert monday.report["totals"]["blocks"] == 0


def test_a_late_run_keeps_the_trade_date_it_was_scheduled_for() -> None:
    """The 23:00 checkpoint run at 00:30 ET (a restart) is still Friday's."""
    late = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)  # Saturday 00:30 ET
    at = latest_occurrence("23:00", late, NY)
    assert at == _utc("2026-11-21T04:00:00") and trade_date_of(at) == date(2026, 11, 20)
    assert latest_occurrence("16:30", ny("16:30"), NY) == ny("16:30")
    assert latest_occurrence("16:30", ny("16:29"), NY) == ny("16:30", date(2026, 11, 19))


@pytest.mark.parametrize(("day", "checkpoint", "utc"), [
    (date(2026, 3, 6), "16:30", "2026-03-06T21:30:00"),  # EST, Friday before
    (date(2026, 3, 8), "16:30", "2026-03-08T20:30:00"),  # DST begins: EDT from 02:00
    (date(2026, 3, 9), "21:00", "2026-03-10T01:00:00"),
    (date(2026, 10, 30), "23:00", "2026-10-31T03:00:00"),  # EDT, Friday before
    (date(2026, 11, 1), "16:30", "2026-11-01T21:30:00"),  # DST ends: EST from 02:00
    (date(2026, 11, 2), "19:00", "2026-11-03T00:00:00"),
])
def test_checkpoints_on_dst_change_days_map_to_the_right_utc_instant(
        day: date, checkpoint: str, utc: str) -> None:
    """A checkpoint is New York wall-clock time: its UTC instant moves by an hour with DST."""
    assert checkpoint_instant(day, checkpoint, NY) == _utc(utc)


def test_the_cron_trigger_fires_at_new_york_time_across_both_dst_changes() -> None:
    """The scheduler's trigger skips the DST Sundays and fires at 16:30 ET the Monday after."""
    trigger = checkpoint_trigger("16:30", NY)
    spring = trigger.get_next_fire_time(None, ny("22:00", date(2026, 3, 6)))
    assert spring == datetime(2026, 3, 9, 16, 30, tzinfo=NY)
    assert spring.astimezone(UTC) == _utc("2026-03-09T20:30:00")
    autumn = trigger.get_next_fire_time(None, ny("22:00", date(2026, 10, 30)))
    assert autumn.astimezone(UTC) == _utc("2026-11-02T21:30:00")
    assert not is_session_day(date(2026, 3, 8)) and not is_session_day(date(2026, 11, 1))


def test_settlement_crosses_thanksgiving_and_the_weekend(db: Database) -> None:
    """T+1 of the day before Thanksgiving is the Friday; the 21:00 list names the DDO date."""
    wednesday = date(2026, 11, 25)
    assert settlement_date(wednesday) == date(2026, 11, 27)
    assert settlement_date(date(2026, 11, 27)) == date(2026, 11, 30)
    b = Blotter(db, wednesday)
    b.order("O-1")
    [line] = b.allocation("O-1", lines=(("SMA0001", "1000", "CUST-A"),), acked="16:11")
    db.update_allocation("A-O-1", settl_date="2026-11-27")
    assert sweep(db, "20:45", day=wednesday).report["unaffirmed_tickets"] is None
    at21 = sweep(db, "21:00", day=wednesday).report
    assert at21["settlement_date"] == "2026-11-27" and at21["past_affirmation_cutoff"]
    [ticket] = at21["unaffirmed_tickets"]
    assert ticket["individual_alloc_id"] == line and ticket["account_id"] == "SMA0001"
    assert ticket["next_step"].endswith(
        "affirm by 23:30 ET for a Night Delivery Order (NDO), otherwise a Day Delivery Order "
        "(DDO) on 2026-11-27")
    late = SweepSettings(checkpoints=("16:30", "23:45"))
    [after] = sweep(db, "23:45", day=wednesday, settings=late).report["unaffirmed_tickets"]
    assert after["next_step"].endswith("past 23:30 ET: a Day Delivery Order (DDO) on 2026-11-27")


@pytest.mark.parametrize(("day", "session"), [
    (date(2026, 11, 26), False),  # Thanksgiving: a weekday without trading
    (date(2026, 11, 28), False),  # Saturday
    (date(2026, 11, 27), True),  # the half day after Thanksgiving trades
    (date(2026, 11, 20), True),
])
def test_trading_days_come_from_the_xnys_calendar(day: date, session: bool) -> None:
    """Weekends and exchange holidays are not trading days; a half day is."""
    assert is_session_day(day) is session


def test_a_scheduled_checkpoint_on_a_holiday_is_skipped() -> None:
    """The cron job fires on weekdays; on Thanksgiving the job does not submit the sweep."""
    calls: list[tuple[str, datetime]] = []
    clock = FakeClock(ny("16:30", date(2026, 11, 26)))
    _REGISTRY["calendar-test"] = _Registration(lambda cp, at: calls.append((cp, at)),
                                               is_session_day, clock)
    try:
        fire_checkpoint("calendar-test", "16:30", "America/New_York")
        assert calls == []
        clock.advance(timedelta(days=1))
        fire_checkpoint("calendar-test", "16:30", "America/New_York")
        assert calls == [("16:30", ny("16:30", date(2026, 11, 27)))]
        fire_checkpoint("nobody-registered", "16:30", "America/New_York")  # logged, no error
    finally:
        del _REGISTRY["calendar-test"]


def test_a_manual_run_names_its_checkpoint_and_trade_date() -> None:
    """`--at`/`--date` default to now in New York; bad, future or holiday dates are refused."""
    now = ny("15:07")
    assert run_target(None, None, now) == ("15:07", date(2026, 11, 20))
    assert run_target("21:00", None, now) == ("21:00", date(2026, 11, 20))
    assert run_target(None, "2026-11-19", now) == (END_OF_DAY, date(2026, 11, 19))
    late = datetime(2026, 11, 21, 1, 30, tzinfo=UTC)  # 20:30 ET: the UTC date has rolled
    assert run_target(None, None, late) == ("20:30", date(2026, 11, 20))
    for at, on, message in (
            ("9:00", None, "invalid time '9:00': expected HH:MM"),
            ("24:00", None, "invalid time '24:00'"),
            (None, "2026-13-01", "invalid date '2026-13-01': expected YYYY-MM-DD"),
            (None, "2026-11-23", "trade date 2026-11-23 is in the future"),
            (None, "2026-11-26", "2026-11-26 is not an XNYS trading day")):
        with pytest.raises(ValueError, match=message):
            run_target(at, on, ny("15:07", date(2026, 11, 20) if on != "2026-11-26"
                                  else date(2026, 11, 27)))


def test_settings_refuse_bad_checkpoints_and_zones() -> None:
    """Checkpoints are unique HH:MM times (kept sorted); the zone must exist."""
    assert SweepSettings(checkpoints=("21:00", "16:30")).checkpoints == ("16:30", "21:00")
    for bad in ({"checkpoints": ["16:3"]}, {"checkpoints": ["16:30", "16:30"]},
                {"time_zone": "Mars/Olympus"}, {"market_close": "4pm"}, {"unknown": 1}):
        with pytest.raises(ValueError):
            SweepSettings.model_validate(bad)
