"""The daemon's watch on its own record: check the recent chain at start-up and on a
schedule, write a checkpoint each time, and raise an alert the moment it breaks."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import Gauge

from gateway.alerts import Alerts
from gateway.audit.chain_checkpoints import read_key, write_checkpoint
from gateway.audit.chain_seal import seal
from gateway.audit.chain_verify import VerifyResult, verify
from gateway.audit.settings import AuditSettings
from gateway.metrics import METRICS
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.audit")

INTACT = Gauge("fixalloc_audit_chain_intact", "1 when the last check of the recent audit "
               "chain found it intact, 0 when it found a break", registry=METRICS.registry)
HEAD = Gauge("fixalloc_audit_chain_head_seq", "The audit chain's newest entry at the last "
             "check", registry=METRICS.registry)
CHECK_SECONDS = Gauge("fixalloc_audit_chain_check_seconds", "How long the last check of the "
                      "recent chain took", registry=METRICS.registry)


class ChainWatch:
    def __init__(self, db: Database, settings: AuditSettings, alerts: Alerts, *,
                 checkpoint_file: Path | None, key_file: Path | None, where: str) -> None:
        self._db = db
        self._settings = settings
        self._alerts = alerts
        self._export = checkpoint_file
        self._key = read_key(key_file) if key_file is not None else None
        self._where = where
        self._scheduler: BackgroundScheduler | None = None
        self.last: VerifyResult | None = None

    def check(self) -> VerifyResult:
        started = time.perf_counter()
        seal(self._db)  # so the check covers everything written until now
        since = datetime.now(UTC) - timedelta(hours=self._settings.verify_window_hours)
        result = verify(self._db, since=since)
        CHECK_SECONDS.set(time.perf_counter() - started)
        INTACT.set(1 if result.ok else 0)
        HEAD.set(result.head_seq or 0)
        self.last = result
        if result.ok:
            log.info("audit.chain_checked", summary=result.summary(),
                     seconds=round(time.perf_counter() - started, 3))
            write_checkpoint(self._db, export=self._export, key=self._key, where=self._where)
        else:
            # No checkpoint over a broken chain: it would vouch for the break.
            assert result.first_break is not None
            self._alerts.raise_("audit_chain_broken", detail={
                "first_break": result.first_break.describe(), "breaks": result.breaks,
                "summary": result.summary()})
        return result

    def start(self) -> None:
        self.check()
        if self._settings.verify_every_minutes:
            self._scheduler = BackgroundScheduler(timezone="UTC")
            self._scheduler.add_job(self._scheduled, "interval",
                                    minutes=self._settings.verify_every_minutes,
                                    id="audit-chain-check", max_instances=1, coalesce=True)
            self._scheduler.start()

    def _scheduled(self) -> None:
        try:
            self.check()
        except Exception as exc:  # a failed check must not stop the next one
            log.error("audit.chain_check_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
