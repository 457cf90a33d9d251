"""The sweep's checkpoints as APScheduler cron jobs kept in the gateway's own database.

One job per checkpoint (Monday to Friday, wall-clock time in America/New_York), stored by
a SQLAlchemyJobStore in its own table of the gateway database, so a checkpoint missed
while the daemon was down runs once when it is back (coalesced, within
`misfire_grace_minutes`). A job holds only the path of `fire_checkpoint` and its
arguments: the callback that hands the sweep to the dispatcher cannot be pickled, so the
process registers it here under a name and the job looks it up. The job skips days that
are not XNYS sessions (exchange holidays fall on weekdays).

APScheduler 3 does not share a job store between schedulers: gateways on one PostgreSQL
database need their own `sweep.job_table`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from gateway.clock import Clock, SystemClock
from gateway.posttrade.sweep import SweepSettings, is_session_day, parse_checkpoint

log = structlog.get_logger("fixalloc.sweep.scheduler")

JOB_PREFIX = "sweep-"
FIRE = "gateway.posttrade.scheduler:fire_checkpoint"
Submit = Callable[[str, datetime], None]


@dataclass(frozen=True)
class _Registration:
    submit: Submit
    is_session: Callable[[date], bool]
    clock: Clock


_REGISTRY: dict[str, _Registration] = {}
_REGISTRY_LOCK = threading.Lock()


def job_id(checkpoint: str) -> str:
    return JOB_PREFIX + parse_checkpoint(checkpoint).replace(":", "")


def checkpoint_trigger(checkpoint: str, zone: ZoneInfo) -> CronTrigger:
    """Monday to Friday at the checkpoint's wall-clock time in `zone` (DST-aware)."""
    hour, minute = (int(x) for x in parse_checkpoint(checkpoint).split(":"))
    return CronTrigger(day_of_week="mon-fri", hour=hour, minute=minute, timezone=zone)


def latest_occurrence(checkpoint: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The last instant at or before `now` when the wall clock in `zone` read `checkpoint`.

    A late run (a missed checkpoint after a restart, even past midnight) thus keeps the
    trade date it was scheduled for.
    """
    hour, minute = (int(x) for x in parse_checkpoint(checkpoint).split(":"))
    local_day = now.astimezone(zone).date()
    for back in range(3):
        at = datetime.combine(local_day - timedelta(days=back), time(hour, minute), tzinfo=zone)
        if at.astimezone(UTC) <= now.astimezone(UTC):
            return at.astimezone(UTC)
    raise AssertionError("unreachable: a wall-clock time recurs every day")


def fire_checkpoint(name: str, checkpoint: str, time_zone: str) -> None:
    """The job: hand the checkpoint to the process's sweep callback on a trading day."""
    registration = _REGISTRY.get(name)
    if registration is None:
        log.warning("sweep.job_unclaimed", name=name, checkpoint=checkpoint,
                    reason="no sweep callback is registered under this name in this process")
        return
    zone = ZoneInfo(time_zone)
    at = latest_occurrence(checkpoint, registration.clock.now(), zone)
    trade_date = at.astimezone(zone).date()
    if not registration.is_session(trade_date):
        log.info("sweep.skipped", checkpoint=checkpoint, trade_date=trade_date.isoformat(),
                 reason="not an XNYS trading day")
        return
    log.info("sweep.checkpoint", checkpoint=checkpoint, trade_date=trade_date.isoformat(),
             scheduled_at=at.isoformat())
    registration.submit(checkpoint, at)


def _engine_options(db_url: str) -> dict[str, Any]:
    if db_url.startswith("sqlite"):
        return {"connect_args": {"check_same_thread": False, "timeout": 10}}
    return {"pool_pre_ping": True}


class SweepScheduler:
    """APScheduler's BackgroundScheduler with one persisted cron job per checkpoint.

    `submit(checkpoint, scheduled_at)` runs on a scheduler thread: it must only enqueue
    (the dispatcher runs the sweep). `scheduled_at` is the checkpoint's UTC instant; its
    New York date is the trade date.
    """

    def __init__(self, db_url: str, settings: SweepSettings, submit: Submit, *,
                 name: str = "default", is_session: Callable[[date], bool] | None = None,
                 clock: Clock | None = None) -> None:
        self.db_url = db_url
        self.settings = settings
        self.name = name
        self._registration = _Registration(submit, is_session or is_session_day,
                                           clock or SystemClock())
        self._scheduler: BackgroundScheduler | None = None

    @property
    def grace_seconds(self) -> int:
        return self.settings.misfire_grace_minutes * 60

    def start(self) -> None:
        """Register the callback, bring the stored jobs in line with the settings, run."""
        with _REGISTRY_LOCK:
            if self.name in _REGISTRY:
                raise RuntimeError(f"a sweep scheduler named {self.name!r} is already running")
            _REGISTRY[self.name] = self._registration
        store = SQLAlchemyJobStore(url=self.db_url, tablename=self.settings.job_table,
                                   engine_options=_engine_options(self.db_url))
        scheduler = BackgroundScheduler(
            jobstores={"default": store}, executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": self.grace_seconds},
            timezone=self.settings.zone)
        try:
            # Paused: a stored job that is overdue must keep its missed run time until the
            # jobs are reconciled (replacing it would move it to the next occurrence).
            scheduler.start(paused=True)
            self._reconcile(scheduler)
            scheduler.resume()
        except Exception:
            if scheduler.running:
                scheduler.shutdown(wait=False)
            with _REGISTRY_LOCK:
                _REGISTRY.pop(self.name, None)
            raise
        self._scheduler = scheduler
        log.info("sweep.scheduled", jobs=self.next_runs())

    def _reconcile(self, scheduler: BackgroundScheduler) -> None:
        zone = self.settings.zone
        wanted = ({job_id(cp): cp for cp in self.settings.checkpoints}
                  if self.settings.enabled else {})
        for job in scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
                log.info("sweep.job_removed", job=job.id)
                job.remove()
        for jid, checkpoint in wanted.items():
            trigger = checkpoint_trigger(checkpoint, zone)
            args = (self.name, checkpoint, self.settings.time_zone)
            job = scheduler.get_job(jid)
            if (job is not None and job.func_ref == FIRE and tuple(job.args) == args
                    and str(job.trigger) == str(trigger)
                    and str(job.trigger.timezone) == str(zone)
                    and job.misfire_grace_time == self.grace_seconds and job.coalesce):
                continue  # unchanged: keep its stored next run time, overdue or not
            scheduler.add_job(FIRE, trigger=trigger, args=args, id=jid,
                              name=f"sweep {checkpoint} {self.settings.time_zone}",
                              replace_existing=True, coalesce=True, max_instances=1,
                              misfire_grace_time=self.grace_seconds)

    def next_runs(self) -> dict[str, str | None]:
        """Checkpoint -> its next run (UTC ISO), from the job store."""
        if self._scheduler is None:
            return {}
        out: dict[str, str | None] = {}
        for job in self._scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX):
                at = job.next_run_time
                out[job.args[1]] = at.astimezone(UTC).isoformat() if at else None
        return dict(sorted(out.items()))

    def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        with _REGISTRY_LOCK:
            if _REGISTRY.get(self.name) is self._registration:
                del _REGISTRY[self.name]
