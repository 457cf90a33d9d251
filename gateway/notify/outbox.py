"""The durable outbox: one row per (notification, channel, recipient), and its states.

```
pending --attempt ok--> delivered (delivered_at)
pending --attempt failed, attempts < max, not permanent--> pending (next_attempt_at later)
pending --attempt failed, attempts = max or permanent--> failed (last_error)
```

The retry schedule lives in the row (`attempts`, `next_attempt_at`, `last_error`), not in
a process: a restart, or another gateway instance on the same database, carries on where
the last one stopped. That is why delivery does not use tenacity's retry loop (its state
is a stack frame that dies with the process); the database writes here do, through the
project's `transient` policy, which retries a dropped connection or a busy SQLite file.

Claiming a row is one conditional UPDATE (`attempts` is the version): it bumps
`attempts` and pushes `next_attempt_at` out by the claim time, so two workers never send
the same attempt, and a row whose worker died mid-delivery is retried once the claim
expires. Delivery is therefore at least once: receivers de-duplicate on the id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from gateway.notify.message import Delivery
from gateway.notify.settings import RetrySettings
from gateway.persistence.retry import transient
from gateway.persistence.store import Database
from gateway.persistence.tables import UtcDateTime, metadata

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_Id = BigInteger().with_variant(Integer(), "sqlite")

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("notification_id", String(36), nullable=False),  # shared by a notification's rows
    Column("kind", String(32), nullable=False),
    Column("book", String(64), nullable=True),
    Column("route", Integer, nullable=False),  # index in notifications.routes when written
    Column("channel", String(8), nullable=False),  # "webhook" | "email"
    Column("target", String(512), nullable=False),  # the URL or the e-mail address
    Column("subject", Text, nullable=False),
    Column("summary_json", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("link", Text, nullable=True),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime(), nullable=True),
)
Index("ix_notification_outbox_due", notification_outbox.c.state,
      notification_outbox.c.next_attempt_at)
Index("ix_notification_outbox_notification", notification_outbox.c.notification_id)

_c = notification_outbox.c


def backoff(attempts: int, retry: RetrySettings) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1, 2, ...)."""
    exponent = min(max(attempts - 1, 0), 60)
    return float(min(retry.max_backoff_seconds, retry.first_backoff_seconds * 2 ** exponent))


def _delivery(row: Any) -> Delivery:
    return Delivery(id=int(row.id), notification_id=row.notification_id, kind=row.kind,
                    book=row.book, subject=row.subject, summary=json.loads(row.summary_json),
                    text=row.body, link=row.link, created_at=row.created_at,
                    channel=row.channel, target=row.target, attempts=int(row.attempts))


class Outbox:
    """Typed access to notification_outbox; every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert a notification's rows in one transaction (no retry: the caller's thread)."""
        with self.engine.begin() as conn:
            # One statement per row: each gets its own id, which the audit chain needs to
            # record the row (a notification has a handful of rows, one per destination).
            for row in rows:
                conn.execute(insert(notification_outbox).values(**row))

    @transient
    def add_retrying(self, rows: Sequence[dict[str, Any]]) -> None:
        """The same, retried on transient errors (the worker's thread)."""
        self.add(rows)

    @transient
    def due(self, now: datetime, *, limit: int = 100) -> list[tuple[int, int]]:
        """(id, attempts) of pending rows whose next attempt is due, oldest due first."""
        query = (select(_c.id, _c.attempts)
                 .where(_c.state == PENDING, _c.next_attempt_at <= now)
                 .order_by(_c.next_attempt_at, _c.id).limit(limit))
        with self.engine.connect() as conn:
            return [(int(r.id), int(r.attempts)) for r in conn.execute(query)]

    @transient
    def next_due_at(self) -> datetime | None:
        query = select(func.min(_c.next_attempt_at)).where(_c.state == PENDING)
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        if isinstance(value, str):  # min() over SQLite text loses the column type
            value = datetime.fromisoformat(value)
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @transient
    def claim(self, row_id: int, seen_attempts: int, now: datetime,
              claim_seconds: float) -> Delivery | None:
        """Take a due row for one attempt; None when it is not due or someone else took it."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(notification_outbox)
                .where(_c.id == row_id, _c.state == PENDING, _c.attempts == seen_attempts,
                       _c.next_attempt_at <= now)
                .values(attempts=seen_attempts + 1,
                        next_attempt_at=now + timedelta(seconds=claim_seconds),
                        updated_at=now)).rowcount
            if taken != 1:
                return None
            row = conn.execute(select(notification_outbox).where(_c.id == row_id)).one()
        return _delivery(row)

    def _finish(self, delivery: Delivery, **values: Any) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(
                update(notification_outbox)
                .where(_c.id == delivery.id, _c.state == PENDING,
                       _c.attempts == delivery.attempts)
                .values(**values)).rowcount == 1

    @transient
    def delivered(self, delivery: Delivery, now: datetime) -> bool:
        """Record success; False if the claim had expired and another worker took the row."""
        return self._finish(delivery, state=DELIVERED, delivered_at=now, updated_at=now,
                            last_error=None)

    @transient
    def reschedule(self, delivery: Delivery, now: datetime, at: datetime, error: str) -> bool:
        return self._finish(delivery, next_attempt_at=at, last_error=error, updated_at=now)

    @transient
    def failed(self, delivery: Delivery, now: datetime, error: str) -> bool:
        return self._finish(delivery, state=FAILED, last_error=error, updated_at=now)

    # -- reading ------------------------------------------------------------------------

    def rows(self, notification_id: str | None = None) -> list[dict[str, Any]]:
        query = select(notification_outbox).order_by(_c.id)
        if notification_id is not None:
            query = query.where(_c.notification_id == notification_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def counts(self) -> dict[str, int]:
        """Rows per state (for /status)."""
        query = select(_c.state, func.count()).group_by(_c.state)
        with self.engine.connect() as conn:
            found = {state: int(n) for state, n in conn.execute(query)}
        return {state: found.get(state, 0) for state in (PENDING, DELIVERED, FAILED)}
