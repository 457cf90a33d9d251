"""Fairness figures on /metrics: a collector over the last N days of allocations.

Scrapes come every few seconds and the figures need a pass over the window's decisions,
so they are recomputed at most once per `interval` seconds (and by one scraping thread
at a time: another scrape meanwhile gets the last figures). collect() never raises: a
failure is logged and the last good figures are served, with
fixalloc_fairness_last_success_timestamp_seconds showing their age.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import pstdev
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.audit.fairness import DEFAULT_ALPHA, FairnessReport, fairness_report
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.fairness")

_REGISTERED: dict[int, FairnessCollector] = {}
"""One fairness collector per registry: registering again replaces it (a reload)."""


@dataclass(frozen=True)
class Snapshot:
    flagged_accounts: int
    dispersion: float  # population stdev of the accounts' fill rates over the window
    max_abs_deviation: float  # largest |fill rate - 1| of any account over the window
    pvalue_min: float  # smallest adjusted p-value of any account (1 when none tested)
    blocks: int
    computed_at: float  # unix time

    @classmethod
    def of(cls, report: FairnessReport, at: float) -> Snapshot:
        rates = [f.fill_rate for f in report.accounts if f.fill_rate is not None]
        pvals = [f.p_adjusted for f in report.accounts if f.p_adjusted is not None]
        return cls(flagged_accounts=sum(1 for f in report.accounts if f.flagged),
                   dispersion=pstdev(rates) if len(rates) > 1 else 0.0,
                   max_abs_deviation=max((abs(r - 1) for r in rates), default=0.0),
                   pvalue_min=min(pvals, default=1.0), blocks=report.blocks, computed_at=at)


def _today_fn(clock_or_today_fn: Any) -> Callable[[], date]:
    """Accept a gateway Clock (its now()), or a function giving a date or datetime."""
    fn = clock_or_today_fn.now if hasattr(clock_or_today_fn, "now") else clock_or_today_fn

    def today() -> date:
        value = fn()
        return value.date() if isinstance(value, datetime) else value

    return today


class FairnessCollector(Collector):
    def __init__(self, db: Database, today: Callable[[], date], *, days: int = 20,
                 interval: float = 60.0, alpha: float = DEFAULT_ALPHA,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if days < 1:
            raise ValueError(f"days must be at least 1, was {days}")
        self.db = db
        self.today = today
        self.days = days
        self.interval = interval
        self.alpha = alpha
        self.monotonic = monotonic
        self.last: Snapshot | None = None
        self._due = -math.inf  # monotonic time of the next recomputation
        self._lock = threading.Lock()

    def refresh(self) -> Snapshot | None:
        """Recompute if due (and no other thread is at it); the figures to serve."""
        if self.monotonic() < self._due or not self._lock.acquire(blocking=False):
            return self.last
        try:
            end = self.today()
            report = fairness_report(self.db, end - timedelta(days=self.days - 1), end,
                                     alpha=self.alpha)
            self.last = Snapshot.of(report, time.time())
        except Exception:
            # A scrape must never fail because of this: serve the last figures.
            log.exception("fairness.metrics_failed", days=self.days)
        finally:
            # Failed or not, wait a full interval: a failing query is not retried per scrape.
            self._due = self.monotonic() + self.interval
            self._lock.release()
        return self.last

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the first scrape computes

    def collect(self) -> Iterator[Metric]:
        snap = self.refresh()
        window = f" over the last {self.days} days"
        specs = (
            ("fixalloc_fairness_flagged_accounts",
             "Accounts flagged as consistently favoured or disfavoured" + window,
             "flagged_accounts"),
            ("fixalloc_fairness_fill_rate_dispersion",
             "Population stdev of the accounts' fill rates (received/intended)" + window,
             "dispersion"),
            ("fixalloc_fairness_fill_rate_max_abs_deviation",
             "Largest |fill rate - 1| of any account" + window, "max_abs_deviation"),
            ("fixalloc_fairness_pvalue_min",
             "Smallest multiplicity-adjusted p-value of any account" + window, "pvalue_min"),
            ("fixalloc_fairness_blocks", "Blocks allocated" + window, "blocks"),
            ("fixalloc_fairness_last_success_timestamp_seconds",
             "When these fairness figures were computed (unix time)", "computed_at"),
        )
        for name, doc, attr in specs:
            family = GaugeMetricFamily(name, doc)
            if snap is not None:
                family.add_metric([], float(getattr(snap, attr)))
            yield family


def register_fairness_metrics(db: Database, clock_or_today_fn: Any, days: int = 20, *,
                              registry: CollectorRegistry | None = None,
                              interval: float = 60.0) -> FairnessCollector:
    """Expose the fairness figures on `registry` (default: METRICS.registry).

    `clock_or_today_fn`: the gateway's Clock or a function returning today's trade date
    (a datetime's date is taken). Calling it again for the same registry replaces the
    collector registered before.
    """
    if registry is None:
        from gateway.metrics import METRICS

        registry = METRICS.registry
    old = _REGISTERED.pop(id(registry), None)
    if old is not None:
        registry.unregister(old)
    collector = FairnessCollector(db, _today_fn(clock_or_today_fn), days=days,
                                  interval=interval)
    registry.register(collector)
    _REGISTERED[id(registry)] = collector
    return collector
