"""Notifications to the people who act on an allocation: routing, the outbox, the worker.

`Notifier.notify(notification)` never raises and never waits for a network: it writes
one outbox row per (channel, recipient) the routes select, in the caller's thread (one
INSERT), and wakes the worker. If even that INSERT fails, the rows are kept in memory
and the worker writes them once the database answers, so a notification is lost only if
the process also dies before then. The worker thread hands due rows to a small pool of
delivery threads; each attempt is recorded in the row (see `gateway.notify.outbox` for
the states and the claim, `webhook` and `mail` for what each channel treats as worth
retrying). A row that ends `failed` is logged and raised as an alert.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter

from gateway.alerts import Alerts
from gateway.clock import Clock, SystemClock
from gateway.metrics import METRICS
from gateway.notify.mail import MailChannel
from gateway.notify.message import (
    Channel,
    Delivery,
    DeliveryError,
    Notification,
    one_line,
    summary_json,
)
from gateway.notify.outbox import PENDING, Outbox, backoff
from gateway.notify.settings import KINDS, NotificationSettings
from gateway.notify.webhook import WebhookChannel, display_url
from gateway.persistence.store import Database
from gateway.secrets import resolve_secret

log = structlog.get_logger("fixalloc.notify")

DELIVERIES = Counter("fixalloc_notification_deliveries_total",
                     "Notification delivery attempts by channel and outcome "
                     "(delivered, retry, failed)", ["channel", "outcome"],
                     registry=METRICS.registry)

WEBHOOK, EMAIL = "webhook", "email"
_BACKLOG_LIMIT = 10_000
_MIN_WAIT = 0.005


def route_targets(settings: NotificationSettings, kind: str,
                  book: str | None) -> list[tuple[int, str, str]]:
    """(route index, channel, recipient) for a notification, each recipient once.

    A recipient named by several matching routes gets the notification once, under the
    first of them.
    """
    seen: set[tuple[str, str]] = set()
    targets: list[tuple[int, str, str]] = []
    for index, route in enumerate(settings.routes):
        if not route.matches(kind, book):
            continue
        wanted = [(WEBHOOK, route.webhook_url)] if route.webhook_url else []
        wanted += [(EMAIL, address) for address in route.email_to]
        for channel, target in wanted:
            if (channel, target) not in seen:
                seen.add((channel, target))
                targets.append((index, channel, target))
    return targets


def display_target(channel: str, target: str) -> str:
    return display_url(target) if channel == WEBHOOK else target


def default_channels(settings: NotificationSettings, *, secrets_file: Path | None = None,
                     resolve: Callable[[Path], Path] = lambda p: p) -> dict[str, Channel]:
    """The real channels, their secrets resolved now (a missing one raises at start-up)."""
    channels: dict[str, Channel] = {}
    hooks = [r for r in settings.routes if r.webhook_url]
    if hooks:
        default = (resolve_secret("notifications", settings.webhook_secret_env, secrets_file)
                   .encode() if settings.webhook_secret_env else None)
        own = {r.webhook_url: resolve_secret("notifications", r.webhook_secret_env,
                                             secrets_file).encode()
               for r in hooks if r.webhook_url and r.webhook_secret_env}
        ca = resolve(settings.webhook_ca_file) if settings.webhook_ca_file else None
        channels[WEBHOOK] = WebhookChannel(own, default,
                                           timeout=settings.webhook_timeout_seconds,
                                           ca_file=ca)
    smtp = settings.smtp
    if smtp is not None:
        password = (resolve_secret("notifications.smtp", smtp.password_env, secrets_file)
                    if smtp.password_env else None)
        channels[EMAIL] = MailChannel(smtp, password,
                                      ca_file=resolve(smtp.ca_file) if smtp.ca_file else None)
    return channels


def check_settings(settings: NotificationSettings, *, secrets_file: Path | None = None,
                   resolve: Callable[[Path], Path] = lambda p: p) -> None:
    """What start-up needs, for `fixalloc config check`: every secret the section names is
    set and every CA file loads. Raises SecretMissingError, or ValueError with the reason."""
    if not settings.enabled:
        return
    try:
        default_channels(settings, secrets_file=secrets_file, resolve=resolve)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"notifications: a CA file does not load: {exc}") from exc


class Notifier:
    def __init__(self, settings: NotificationSettings, db: Database,
                 clock: Clock | None = None, *, alerts: Alerts | None = None,
                 secrets_file: Path | None = None,
                 resolve: Callable[[Path], Path] = lambda p: p,
                 channels: Mapping[str, Channel] | None = None) -> None:
        """`resolve` makes configured paths absolute (`Config.resolve`); `channels`
        replaces the real webhook/e-mail channels (tests)."""
        self.settings = settings
        self.outbox = Outbox(db)
        self._clock = clock or SystemClock()
        self._alerts = alerts
        self._channels = dict(channels) if channels is not None else (
            default_channels(settings, secrets_file=secrets_file, resolve=resolve)
            if settings.enabled else {})
        self._backlog: deque[list[dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- the caller's side ----------------------------------------------------------------

    def notify(self, notification: Notification) -> str | None:
        """Record the notification for delivery; its id, or None when nothing was routed.

        Never raises and never blocks on a network: one INSERT in this thread.
        """
        try:
            return self._record(notification)
        except Exception:
            # Nothing may reach the caller: it is allocating trades.
            log.exception("notify.refused", kind=getattr(notification, "kind", None),
                          book=getattr(notification, "book", None))
            return None

    def _record(self, n: Notification) -> str | None:
        if not self.settings.enabled:
            return None
        if n.kind not in KINDS:
            log.error("notify.unknown_kind", kind=n.kind, book=n.book, known=list(KINDS))
            return None
        targets = route_targets(self.settings, n.kind, n.book)
        if not targets:
            log.debug("notify.unrouted", kind=n.kind, book=n.book)
            return None
        now = self._clock.now()
        notification_id = str(uuid.uuid4())
        common = {"notification_id": notification_id, "kind": n.kind, "book": n.book,
                  "subject": one_line(n.subject), "summary_json": summary_json(n.summary),
                  "body": n.text, "link": n.link, "state": PENDING, "attempts": 0,
                  "next_attempt_at": now, "created_at": now, "updated_at": now}
        rows = [{**common, "route": index, "channel": channel, "target": target}
                for index, channel, target in targets]
        try:
            self.outbox.add(rows)
        except Exception as exc:
            # The database refused or is gone: keep the rows until the worker can write them.
            with self._lock:
                kept = len(self._backlog) < _BACKLOG_LIMIT
                if kept:
                    self._backlog.append(rows)
            log.error("notify.outbox_write_failed", notification_id=notification_id,
                      kind=n.kind, book=n.book, error=f"{type(exc).__name__}: {exc}",
                      kept_in_memory=kept)
            if not kept:
                self._alert("notification_lost", notification_id=notification_id,
                            kind=n.kind, book=n.book, reason="outbox unwritable, backlog full")
                return None
        log.info("notify.queued", notification_id=notification_id, kind=n.kind, book=n.book,
                 recipients=[display_target(c, t) for _, c, t in targets])
        self._wake.set()
        return notification_id

    # -- the worker -----------------------------------------------------------------------

    def start(self) -> None:
        """Start delivering, rows left pending by an earlier process included."""
        if self._thread is not None or not self.settings.enabled:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(max_workers=self.settings.parallel_deliveries,
                                        thread_name_prefix="notify-delivery")
        self._thread = threading.Thread(target=self._run, name="notify-worker", daemon=True)
        self._thread.start()
        try:
            log.info("notify.started", outbox=self.outbox.counts(),
                     channels=sorted(self._channels))
        except Exception:
            log.exception("notify.outbox_unreadable")

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking rows, let the attempts in flight finish (each bounded by its
        channel's timeout) and record them. Rows not attempted stay pending."""
        thread, pool = self._thread, self._pool
        if thread is None or pool is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        pool.shutdown(wait=True, cancel_futures=True)
        self._thread = self._pool = None
        try:
            self._flush_backlog()
        except Exception as exc:
            with self._lock:
                lost = len(self._backlog)
            log.error("notify.lost_at_stop", notifications=lost,
                      error=f"{type(exc).__name__}: {exc}")
        log.info("notify.stopped")

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._flush_backlog()
                wait = self._dispatch()
            except Exception:
                log.exception("notify.worker_error")
                wait = self.settings.poll_seconds
            self._wake.wait(max(wait, _MIN_WAIT))

    def _flush_backlog(self) -> None:
        while True:
            with self._lock:
                if not self._backlog:
                    return
                rows = self._backlog[0]
            self.outbox.add_retrying(rows)
            with self._lock:
                self._backlog.popleft()
            log.info("notify.outbox_written_late", notification_id=rows[0]["notification_id"])

    def _dispatch(self) -> float:
        """Hand due rows to the pool; seconds until the next one is due (or the poll)."""
        pool = self._pool
        assert pool is not None
        now = self._clock.now()
        for row_id, attempts in self.outbox.due(now):
            with self._lock:
                if row_id in self._in_flight:
                    continue
                self._in_flight.add(row_id)
            pool.submit(self._attempt_in_pool, row_id, attempts)
        nxt = self.outbox.next_due_at()
        wait = self.settings.poll_seconds
        if nxt is not None:
            wait = min(wait, (nxt - self._clock.now()).total_seconds())
        with self._lock:
            busy = bool(self._in_flight)
        if wait <= 0 and busy:
            # What is due is already queued for the pool; each finished attempt wakes us.
            wait = self.settings.poll_seconds
        return wait

    def _attempt_in_pool(self, row_id: int, attempts: int) -> None:
        try:
            self.attempt(row_id, attempts)
        except Exception:
            log.exception("notify.attempt_error", row=row_id)
        finally:
            with self._lock:
                self._in_flight.discard(row_id)
            self._wake.set()

    def run_due(self) -> int:
        """Attempt every due row now, in this thread; how many were attempted (tests)."""
        done = 0
        for row_id, attempts in self.outbox.due(self._clock.now()):
            done += self.attempt(row_id, attempts)
        return done

    # -- one attempt ----------------------------------------------------------------------

    def attempt(self, row_id: int, seen_attempts: int) -> bool:
        """Claim the row and make one attempt; False if it was not ours to attempt."""
        max_attempts = self.settings.retry.max_attempts
        now = self._clock.now()
        delivery = self.outbox.claim(row_id, seen_attempts, now, self.settings.claim_seconds)
        if delivery is None:
            return False
        if delivery.attempts > max_attempts:
            # The last allowed attempt was interrupted (its process died mid-delivery).
            self._give_up(delivery, "no attempt left: the last one was interrupted")
            return True
        channel = self._channels.get(delivery.channel)
        error: DeliveryError
        try:
            if channel is None:
                raise DeliveryError(f"the {delivery.channel} channel is not configured")
            channel.deliver(delivery)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            # A channel bug counts as a transient failure, never as a lost row.
            error = DeliveryError(f"{type(exc).__name__}: {exc}")
        else:
            self._delivered(delivery)
            return True
        if error.permanent or delivery.attempts >= max_attempts:
            self._give_up(delivery, str(error), permanent=error.permanent)
            return True
        delay = backoff(delivery.attempts, self.settings.retry)
        if error.retry_after is not None:
            delay = min(max(delay, error.retry_after), self.settings.retry.max_backoff_seconds)
        now = self._clock.now()
        at = now + timedelta(seconds=delay)
        if self.outbox.reschedule(delivery, now, at, str(error)):
            DELIVERIES.labels(channel=delivery.channel, outcome="retry").inc()
            log.warning("notify.retry", **self._fields(delivery), error=str(error),
                        next_attempt_at=at.isoformat(), in_seconds=round(delay, 3))
        else:
            self._lost_claim(delivery)
        return True

    def _delivered(self, delivery: Delivery) -> None:
        now = self._clock.now()
        if self.outbox.delivered(delivery, now):
            DELIVERIES.labels(channel=delivery.channel, outcome="delivered").inc()
            log.info("notify.delivered", **self._fields(delivery),
                     latency_seconds=round(_seconds(delivery.created_at, now), 3))
        else:
            self._lost_claim(delivery)

    def _give_up(self, delivery: Delivery, error: str, *, permanent: bool = False) -> None:
        if not self.outbox.failed(delivery, self._clock.now(), error):
            self._lost_claim(delivery)
            return
        DELIVERIES.labels(channel=delivery.channel, outcome="failed").inc()
        fields = self._fields(delivery)
        log.error("notify.failed", **fields, error=error, permanent=permanent)
        self._alert("notification_failed", **fields, error=error, permanent=permanent)

    def _lost_claim(self, delivery: Delivery) -> None:
        log.warning("notify.claim_expired", **self._fields(delivery),
                    claim_seconds=self.settings.claim_seconds)

    def _alert(self, alert: str, /, **detail: Any) -> None:
        if self._alerts is None:
            return
        try:
            # Throttled: an endpoint down for hours fails every row; the rows keep each
            # error, the alert says it once per window and counts the rest.
            self._alerts.raise_(alert, detail=detail, throttle=True)
        except Exception:
            log.exception("notify.alert_failed", alert=alert)

    @staticmethod
    def _fields(d: Delivery) -> dict[str, Any]:
        return {"row": d.id, "notification_id": d.notification_id, "kind": d.kind,
                "book": d.book, "channel": d.channel,
                "target": display_target(d.channel, d.target), "attempts": d.attempts}


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
