"""The outbox's states and backoff schedule on a fake clock, with scripted channels."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.notify.message import Delivery, DeliveryError, Notification
from gateway.notify.notifier import Notifier
from gateway.notify.outbox import Outbox, backoff
from gateway.notify.settings import NotificationSettings, RetrySettings
from gateway.persistence.store import Database
from tests.support.clock import FakeClock

T0 = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)


class Script:
    """A channel that fails with the queued errors, then delivers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.seen: list[Delivery] = []

    def deliver(self, delivery: Delivery) -> None:
        self.seen.append(delivery)
        if self.errors:
            raise self.errors.pop(0)


class FailForever:
    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, delivery: Delivery) -> None:
        self.calls += 1
        raise DeliveryError("HTTP 503: down")


class FakeAlerts:
    def __init__(self) -> None:
        self.raised: list[tuple[str, dict[str, Any]]] = []

    def raise_(self, kind: str, **kw: Any) -> bool:
        self.raised.append((kind, kw))
        return True


def settings(**retry: Any) -> NotificationSettings:
    return NotificationSettings.model_validate({
        "webhook_secret_env": "UNUSED",
        "smtp": {"host": "smtp.invalid", "from_address": "fixalloc@example.com"},
        "retry": {"max_attempts": 4, "first_backoff_seconds": 0.1,
                  "max_backoff_seconds": 0.4, **retry},
        "routes": [{"kinds": "*", "webhook_url": "https://pm.example.com/h"},
                   {"kinds": ["exception_opened"], "email_to": ["ops@example.com"]}]})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'n.db'}")
    database.migrate()  # the whole schema: every outbox write is also chained
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def sent(kind: str = "allocation_sent") -> Notification:
    return Notification(kind=kind, book="SMA-CORE", subject="FA1 allocated",
                        summary={"alloc_id": "FA1-J1", "exceptions": []}, text="J sent.")


def only_row(db: Database) -> dict[str, Any]:
    rows = Outbox(db).rows()
    assert len(rows) == 1
    return rows[0]


def test_backoff_doubles_from_the_first_wait_up_to_the_cap() -> None:
    retry = RetrySettings(max_attempts=10, first_backoff_seconds=30, max_backoff_seconds=3600)
    assert [backoff(n, retry) for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff(1000, retry) == 3600  # no overflow however many attempts


def test_notify_writes_one_pending_row_per_recipient(db: Database, clock: FakeClock) -> None:
    notifier = Notifier(settings(), db, clock, channels={})
    nid = notifier.notify(sent("exception_opened"))
    assert nid is not None
    rows = Outbox(db).rows(nid)
    assert [(r["channel"], r["target"], r["route"]) for r in rows] == [
        ("webhook", "https://pm.example.com/h", 0), ("email", "ops@example.com", 1)]
    for row in rows:
        assert row["state"] == "pending" and row["attempts"] == 0
        assert row["next_attempt_at"] == T0 and row["created_at"] == T0
        assert row["kind"] == "exception_opened" and row["book"] == "SMA-CORE"
        assert row["delivered_at"] is None and row["last_error"] is None


def test_retried_on_the_backoff_schedule_then_delivered(db: Database,
                                                        clock: FakeClock) -> None:
    hook = Script(DeliveryError("HTTP 503"), DeliveryError("HTTP 502"), OSError("refused"))
    notifier = Notifier(settings(), db, clock, channels={"webhook": hook})
    notifier.notify(sent())
    waits = []
    for _ in range(3):
        assert notifier.run_due() == 1
        row = only_row(db)
        assert row["state"] == "pending"
        wait = (row["next_attempt_at"] - clock.now()).total_seconds()
        waits.append(round(wait, 6))
        clock.advance(timedelta(seconds=wait) - timedelta(microseconds=1))
        assert notifier.run_due() == 0, "not due a microsecond early"
        clock.advance(timedelta(microseconds=1))
    assert waits == [0.1, 0.2, 0.4]
    assert only_row(db)["last_error"] == "OSError: refused"  # a channel bug is transient
    assert notifier.run_due() == 1
    row = only_row(db)
    assert row["state"] == "delivered" and row["attempts"] == 4
    assert row["delivered_at"] == clock.now() and row["last_error"] is None
    assert [d.attempts for d in hook.seen] == [1, 2, 3, 4]
    assert notifier.run_due() == 0


def test_failed_after_max_attempts_with_an_alert(db: Database, clock: FakeClock) -> None:
    hook, alerts = FailForever(), FakeAlerts()
    notifier = Notifier(settings(), db, clock, channels={"webhook": hook},
                        alerts=alerts)  # type: ignore[arg-type]
    notifier.notify(sent())
    for _ in range(10):
        notifier.run_due()
        clock.advance(timedelta(seconds=1))
    row = only_row(db)
    assert row["state"] == "failed" and row["attempts"] == 4 and hook.calls == 4
    assert row["last_error"] == "HTTP 503: down" and row["delivered_at"] is None
    assert len(alerts.raised) == 1
    kind, kw = alerts.raised[0]
    assert kind == "notification_failed"
    assert kw["detail"]["attempts"] == 4 and kw["detail"]["target"] == "https://pm.example.com/…"
    assert kw["detail"]["error"] == "HTTP 503: down"


def test_a_permanent_error_fails_at_once(db: Database, clock: FakeClock) -> None:
    alerts = FakeAlerts()
    notifier = Notifier(settings(), db, clock, alerts=alerts,  # type: ignore[arg-type]
                        channels={"webhook": Script(DeliveryError("HTTP 404", permanent=True))})
    notifier.notify(sent())
    assert notifier.run_due() == 1
    row = only_row(db)
    assert row["state"] == "failed" and row["attempts"] == 1 and row["last_error"] == "HTTP 404"
    assert alerts.raised[0][1]["detail"]["permanent"] is True


def test_retry_after_is_honoured_up_to_the_cap(db: Database, clock: FakeClock) -> None:
    hook = Script(DeliveryError("HTTP 429", retry_after=0.3),
                  DeliveryError("HTTP 503", retry_after=60))
    notifier = Notifier(settings(), db, clock, channels={"webhook": hook})
    notifier.notify(sent())
    notifier.run_due()
    assert only_row(db)["next_attempt_at"] == T0 + timedelta(seconds=0.3)
    clock.advance(timedelta(seconds=0.3))
    notifier.run_due()
    assert only_row(db)["next_attempt_at"] == clock.now() + timedelta(seconds=0.4)


def test_a_missing_channel_is_retried_not_dropped(db: Database, clock: FakeClock) -> None:
    notifier = Notifier(settings(), db, clock, channels={})
    notifier.notify(sent())
    notifier.run_due()
    row = only_row(db)
    assert row["state"] == "pending" and "webhook channel is not configured" in row["last_error"]


def test_a_claim_reserves_the_row_and_expires(db: Database, clock: FakeClock) -> None:
    """A worker that dies mid-delivery leaves the row claimed; it is retried after the claim."""
    s = settings()
    hook = Script()
    notifier = Notifier(s, db, clock, channels={"webhook": hook})
    notifier.notify(sent())
    outbox = Outbox(db)
    (row_id, seen), = outbox.due(clock.now())
    assert outbox.claim(row_id, seen, clock.now(), s.claim_seconds) is not None  # then "dies"
    assert outbox.claim(row_id, seen, clock.now(), s.claim_seconds) is None  # taken once only
    clock.advance(timedelta(seconds=s.claim_seconds - 1))
    assert notifier.run_due() == 0
    clock.advance(timedelta(seconds=1))
    assert notifier.run_due() == 1
    row = only_row(db)
    assert row["state"] == "delivered" and row["attempts"] == 2 and len(hook.seen) == 1


def test_an_interrupted_last_attempt_ends_failed(db: Database, clock: FakeClock) -> None:
    s = settings(max_attempts=1)
    alerts = FakeAlerts()
    notifier = Notifier(s, db, clock, channels={"webhook": Script()},
                        alerts=alerts)  # type: ignore[arg-type]
    notifier.notify(sent())
    outbox = Outbox(db)
    (row_id, seen), = outbox.due(clock.now())
    outbox.claim(row_id, seen, clock.now(), s.claim_seconds)
    clock.advance(timedelta(seconds=s.claim_seconds))
    assert notifier.run_due() == 1
    row = only_row(db)
    assert row["state"] == "failed" and "interrupted" in row["last_error"]
    assert alerts.raised and alerts.raised[0][0] == "notification_failed"


def test_a_stale_worker_cannot_overwrite_a_newer_attempt(db: Database, clock: FakeClock) -> None:
    s = settings()
    outbox = Outbox(db)
    Notifier(s, db, clock, channels={}).notify(sent())
    (row_id, seen), = outbox.due(clock.now())
    old = outbox.claim(row_id, seen, clock.now(), s.claim_seconds)
    clock.advance(timedelta(seconds=s.claim_seconds))
    new = outbox.claim(row_id, seen + 1, clock.now(), s.claim_seconds)
    assert old is not None and new is not None
    assert not outbox.delivered(old, clock.now())
    assert outbox.delivered(new, clock.now())
    assert only_row(db)["attempts"] == 2


def test_notify_never_raises(db: Database, clock: FakeClock) -> None:
    notifier = Notifier(settings(), db, clock, channels={})
    circular: dict[str, Any] = {}
    circular["self"] = circular
    bad = Notification(kind="allocation_sent", book="B", subject="s", summary=circular)
    assert notifier.notify(bad) is None
    assert notifier.notify(Notification(kind="no_such_kind", book="B", subject="s")) is None
    assert notifier.notify(None) is None  # type: ignore[arg-type]
    assert Outbox(db).rows() == []
    off = Notifier(NotificationSettings(enabled=False), db, clock, channels={})
    assert off.notify(sent()) is None


def test_outbox_unwritable_keeps_the_rows_until_it_is(db: Database, clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = Notifier(settings(), db, clock, channels={"webhook": Script()})
    original = Outbox.add

    def refuse(self: Outbox, rows: Any) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(Outbox, "add", refuse)
    nid = notifier.notify(sent())
    assert nid is not None and Outbox(db).rows() == []
    monkeypatch.setattr(Outbox, "add", original)
    notifier._flush_backlog()  # what the worker does first on each pass
    assert [r["notification_id"] for r in Outbox(db).rows()] == [nid]
    assert notifier.run_due() == 1 and only_row(db)["state"] == "delivered"


def test_counts_by_state(db: Database, clock: FakeClock) -> None:
    notifier = Notifier(settings(), db, clock, channels={
        "webhook": Script(), "email": Script(DeliveryError("SMTP 550", permanent=True))})
    notifier.notify(sent("exception_opened"))
    notifier.notify(sent("allocation_sent"))
    assert Outbox(db).counts() == {"pending": 3, "delivered": 0, "failed": 0}
    notifier.run_due()
    assert Outbox(db).counts() == {"pending": 0, "delivered": 2, "failed": 1}
