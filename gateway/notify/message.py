"""What a notification is, and the forms it takes on each channel.

A `Notification` is what the caller hands to `Notifier.notify`; a `Delivery` is one outbox
row as a channel sees it (the notification plus one recipient). Channels raise
`DeliveryError` to say whether a failure is worth retrying.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

EXCEPTIONS_KEY = "exceptions"
"""The summary key whose list the e-mail body shows as the flagged exceptions."""


@dataclass(frozen=True)
class Notification:
    kind: str
    """allocation_sent, exception_opened, sweep_report or approval_pending."""
    book: str | None
    subject: str
    summary: Mapping[str, Any] = field(default_factory=dict)
    """JSON-able (Decimals, dates and other scalars become strings); put the flagged
    exceptions under "exceptions" as a list."""
    text: str = ""
    """A short plain-text body: what happened and what to do."""
    link: str | None = None
    """A web page to act on (an approval), shown in the e-mail and sent in the webhook."""


@dataclass(frozen=True)
class Delivery:
    """One outbox row: one notification for one recipient on one channel."""

    id: int
    notification_id: str
    kind: str
    book: str | None
    subject: str
    summary: dict[str, Any]
    text: str
    link: str | None
    created_at: datetime
    channel: str
    target: str
    attempts: int
    """Attempts so far, this one included."""


class DeliveryError(Exception):
    """A delivery attempt failed; `permanent` failures are not retried."""

    def __init__(self, message: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Channel(Protocol):
    def deliver(self, delivery: Delivery) -> None:
        """Deliver or raise DeliveryError (any other exception counts as transient)."""


def summary_json(summary: Mapping[str, Any]) -> str:
    """The stored form of a summary: sorted keys, anything not JSON as its str()."""
    return json.dumps(dict(summary), sort_keys=True, default=str, ensure_ascii=False)


def one_line(value: str) -> str:
    """Header-safe text: no CR/LF (a subject must not be able to add headers)."""
    return " ".join(value.split())


def webhook_body(delivery: Delivery) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, keys sorted, UTF-8.

    The same bytes on every attempt, so a receiver may de-duplicate on `id`.
    """
    payload = {
        "id": delivery.notification_id,
        "kind": delivery.kind,
        "book": delivery.book,
        "subject": delivery.subject,
        "summary": delivery.summary,
        "text": delivery.text,
        "link": delivery.link,
        "created_at": delivery.created_at.isoformat(),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _exception_line(item: Any) -> str:
    if isinstance(item, Mapping):
        return "; ".join(f"{k}: {_scalar(v)}" for k, v in item.items())
    return _scalar(item)


def mail_text(delivery: Delivery) -> str:
    """The plain-text e-mail body: the text, the link, the summary, the flagged exceptions."""
    lines: list[str] = []
    if delivery.text:
        lines += [delivery.text.rstrip(), ""]
    if delivery.link:
        lines += [f"Open: {delivery.link}", ""]
    facts = {k: v for k, v in delivery.summary.items() if k != EXCEPTIONS_KEY}
    if facts:
        lines.append("Summary")
        width = max(len(k) for k in facts)
        lines += [f"  {k.ljust(width)}  {_scalar(v)}" for k, v in facts.items()]
        lines.append("")
    exceptions = delivery.summary.get(EXCEPTIONS_KEY)
    if exceptions is not None and not isinstance(exceptions, list):
        exceptions = [exceptions]
    if exceptions:
        lines.append(f"Flagged exceptions ({len(exceptions)})")
        lines += [f"  - {_exception_line(item)}" for item in exceptions]
        lines.append("")
    elif exceptions is not None:
        lines += ["Flagged exceptions: none", ""]
    lines += ["-- ", f"fixalloc notification {delivery.notification_id} ({delivery.kind}"
              f"{', book ' + delivery.book if delivery.book else ''}, "
              f"{delivery.created_at.isoformat()})"]
    return "\n".join(lines) + "\n"
