"""What a sweep asks the dispatcher to do, and how a sweep's result is stored."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import structlog
from sqlalchemy import func, select

from gateway.metrics import METRICS
from gateway.persistence import lifecycle_tables as lt
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.sweep")


# -- actions: what the dispatcher does with the result ---------------------------------------


@dataclass(frozen=True)
class RequestConfirmation:
    """Send a ConfirmationRequest (BH) for a ticket whose AK has not come."""

    alloc_id: str
    individual_alloc_id: str
    account_id: str


@dataclass(frozen=True)
class AllocateNow:
    """The block's final CumQty is known but it has no allocation: allocate and send the J."""

    order_id: str


@dataclass(frozen=True)
class OpenException:
    kind: str
    reason: str
    next_step: str
    order_id: str | None = None
    alloc_id: str | None = None
    individual_alloc_id: str | None = None
    broker: str | None = None
    book: str | None = None
    trade_date: str | None = None

    def kwargs(self, opened_at: datetime) -> dict[str, Any]:
        """Keyword arguments for `Database.open_exception`."""
        return {"kind": self.kind, "reason": self.reason, "next_step": self.next_step,
                "opened_at": opened_at, "order_id": self.order_id, "alloc_id": self.alloc_id,
                "individual_alloc_id": self.individual_alloc_id, "book": self.book,
                "broker": self.broker, "trade_date": self.trade_date,
                "detail": {"opened_by": "sweep"}}


@dataclass(frozen=True)
class ResolveException:
    """A problem the sweep opened earlier is gone (the P came, the AK came, ...)."""

    exception_id: int
    kind: str
    resolution: str


SweepAction = RequestConfirmation | AllocateNow | OpenException | ResolveException


@dataclass(frozen=True)
class SweepResult:
    report: dict[str, Any]
    actions: tuple[SweepAction, ...]



# -- storing (the dispatcher and the CLI store the same way) ----------------------------------


def latest_swept_date(db: Database) -> str | None:
    """The newest trade date with a stored sweep report."""
    with db.engine.connect() as conn:
        day = conn.execute(select(func.max(lt.sweep_reports.c.trade_date))).scalar()
    return str(day) if day is not None else None


_latest_ratio_day: list[date] = []
_gauge_lock = threading.Lock()
_exception_kinds: set[str] = set()


def apply_exception_actions(db: Database, actions: Iterable[SweepAction], at: datetime) -> int:
    """Do the database-only actions (open/resolve exceptions); return how many changed."""
    changed = 0
    for action in actions:
        if isinstance(action, OpenException):
            changed += db.open_exception(**action.kwargs(at))[1]
        elif isinstance(action, ResolveException):
            changed += db.resolve_exceptions(at=at, by="sweep", resolution=action.resolution,
                                             exception_id=action.exception_id)
    if changed:
        publish_open_exceptions(db)
    return changed


def publish_open_exceptions(db: Database) -> None:
    """Set fixalloc_open_exceptions{kind} from the database (kinds now closed go to 0)."""
    counts = db.open_exceptions_by_kind()
    with _gauge_lock:
        _exception_kinds.update(counts)
        for kind in _exception_kinds:
            METRICS.open_exceptions.labels(kind=kind).set(counts.get(kind, 0))


def store(db: Database, result: SweepResult, trade_date: date, checkpoint: str,
          ran_at: datetime) -> int:
    """Store the report (one per trade date and checkpoint) and publish its metrics."""
    report_id = db.save_sweep_report(trade_date=trade_date.isoformat(), checkpoint=checkpoint,
                                     ran_at=ran_at, report=result.report)
    totals = result.report["totals"]
    with _gauge_lock:
        newest = not _latest_ratio_day or trade_date >= _latest_ratio_day[0]
        if newest and totals["tickets"]:
            _latest_ratio_day[:] = [trade_date]
            METRICS.affirmed_same_day_ratio.set(totals["affirmed_same_day"] / totals["tickets"])
    publish_open_exceptions(db)
    METRICS.sweep_runs.inc()
    METRICS.sweep_last_run.set(ran_at.timestamp())
    log.info("sweep.stored", report_id=report_id, trade_date=trade_date.isoformat(),
             checkpoint=checkpoint)
    return report_id
