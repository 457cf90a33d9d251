"""The checkpoints as APScheduler jobs in the gateway's own database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

from gateway.posttrade.scheduler import SweepScheduler, latest_occurrence
from gateway.posttrade.sweep import SweepSettings
from tests.support.eventually import eventually
from tests.unit.posttrade.sweep_rows import NY

SETTINGS = SweepSettings(checkpoints=("16:30", "19:00", "21:00"))


def _expected_next(checkpoint: str, now: datetime) -> datetime:
    """The next Monday-to-Friday New York wall-clock occurrence after `now`."""
    hour, minute = (int(x) for x in checkpoint.split(":"))
    day = now.astimezone(NY).date()
    while True:
        at = datetime.combine(day, time(hour, minute), tzinfo=NY)
        if day.weekday() < 5 and at.astimezone(UTC) > now:
            return at
        day += timedelta(days=1)


def _stored(url: str) -> dict[str, Any]:
    store = SQLAlchemyJobStore(url=url)
    store.start(None, "default")  # type: ignore[arg-type]
    try:
        return {job.id: job for job in store.get_all_jobs()}
    finally:
        store.shutdown()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, datetime]] = []
        self.lock = threading.Lock()

    def __call__(self, checkpoint: str, at: datetime) -> None:
        with self.lock:
            self.calls.append((checkpoint, at))


@pytest.fixture
def scheduled(database_url: str) -> Iterator[tuple[str, Recorder, list[SweepScheduler]]]:
    recorder = Recorder()
    running: list[SweepScheduler] = []
    yield database_url, recorder, running
    for scheduler in running:
        scheduler.stop()


def _start(url: str, recorder: Recorder, running: list[SweepScheduler],
           settings: SweepSettings = SETTINGS) -> SweepScheduler:
    scheduler = SweepScheduler(url, settings, recorder, name="test",
                               is_session=lambda _day: True)
    scheduler.start()
    running.append(scheduler)
    return scheduler


def test_jobs_are_stored_with_their_next_new_york_run(
        scheduled: tuple[str, Recorder, list[SweepScheduler]]) -> None:
    """One persisted cron job per checkpoint, next run at that New York time on a weekday."""
    url, recorder, running = scheduled
    before = datetime.now(UTC)
    scheduler = _start(url, recorder, running)
    jobs = _stored(url)
    assert sorted(jobs) == ["sweep-1630", "sweep-1900", "sweep-2100"]
    for checkpoint in SETTINGS.checkpoints:
        job = jobs["sweep-" + checkpoint.replace(":", "")]
        assert job.func_ref == "gateway.posttrade.scheduler:fire_checkpoint"
        assert tuple(job.args) == ("test", checkpoint, "America/New_York")
        assert job.coalesce and job.misfire_grace_time == 240 * 60
        expected = _expected_next(checkpoint, before)
        assert job.next_run_time == expected
        assert job.next_run_time.astimezone(NY).strftime("%H:%M") == checkpoint
    assert set(scheduler.next_runs()) == set(SETTINGS.checkpoints)
    assert recorder.calls == []


def test_a_checkpoint_missed_while_down_runs_once_after_the_restart(
        scheduled: tuple[str, Recorder, list[SweepScheduler]]) -> None:
    """An overdue stored job keeps its run over a restart and runs once, for its own day."""
    url, recorder, running = scheduled
    _start(url, recorder, running).stop()
    running.clear()
    store = SQLAlchemyJobStore(url=url)
    store.start(None, "default")  # type: ignore[arg-type]
    job = store.lookup_job("sweep-1900")
    assert job is not None
    job.next_run_time = datetime.now(UTC) - timedelta(minutes=1)
    store.update_job(job)
    store.shutdown()
    restarted = datetime.now(UTC)
    _start(url, recorder, running)
    eventually(lambda: recorder.calls, timeout=20, description="the missed 19:00 ran")
    eventually(lambda: _stored(url)["sweep-1900"].next_run_time.astimezone(UTC) > restarted,
               timeout=20, description="the job moved on to its next occurrence")
    [(checkpoint, at)] = recorder.calls
    assert checkpoint == "19:00"
    assert at == latest_occurrence("19:00", at + timedelta(seconds=1), NY)
    assert at.astimezone(NY).strftime("%H:%M") == "19:00"


def test_changed_checkpoints_replace_the_stored_jobs(
        scheduled: tuple[str, Recorder, list[SweepScheduler]]) -> None:
    """A restart with other checkpoints removes the old jobs; `enabled = false` removes all."""
    url, recorder, running = scheduled
    _start(url, recorder, running).stop()
    running.clear()
    _start(url, recorder, running, SweepSettings(checkpoints=("18:00", "21:00"))).stop()
    running.clear()
    assert sorted(_stored(url)) == ["sweep-1800", "sweep-2100"]
    _start(url, recorder, running, SweepSettings(enabled=False)).stop()
    running.clear()
    assert _stored(url) == {}


def test_two_schedulers_under_one_name_are_refused(
        scheduled: tuple[str, Recorder, list[SweepScheduler]]) -> None:
    """The callback registry is per name: a second start under the same name fails loudly."""
    url, recorder, running = scheduled
    _start(url, recorder, running)
    with pytest.raises(RuntimeError, match="already running"):
        SweepScheduler(url, SETTINGS, recorder, name="test").start()


def test_latest_occurrence_is_never_in_the_future() -> None:
    """Whatever the hour, the instant handed to the dispatcher is at or before now."""
    now = datetime(2026, 3, 8, 6, 59, tzinfo=UTC)  # 01:59 EST, a minute before the jump
    for checkpoint in ("00:00", "01:30", "16:30", "23:59"):
        at = latest_occurrence(checkpoint, now, NY)
        assert at <= now and now - at < timedelta(days=1, hours=1)
    assert latest_occurrence("16:30", now, NY).astimezone(NY).date() == date(2026, 3, 7)
