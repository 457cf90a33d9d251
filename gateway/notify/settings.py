"""`[notifications]`: who hears about what, over which channel, and how hard we try.

```toml
[notifications]
webhook_secret_env = "FIXALLOC_WEBHOOK_SECRET"   # the NAME of the variable, never the secret

[notifications.smtp]
host = "smtp.example.com"
port = 587
from_address = "fixalloc@example.com"
username = "fixalloc"
password_env = "FIXALLOC_SMTP_PASSWORD"

[notifications.retry]
max_attempts = 8
first_backoff_seconds = 30
max_backoff_seconds = 3600

[[notifications.routes]]                          # compliance hears about every exception
kinds = ["exception_opened", "sweep_report"]
email_to = ["compliance@example.com"]

[[notifications.routes]]                          # the PM's system, for one book
kinds = "*"
books = ["SMA-CORE"]
webhook_url = "https://pm.example.com/hooks/fixalloc"
```

A notification goes to every route whose `kinds` contain its kind (or are `"*"`) and whose
`books` contain its book (an empty list means every book). A notification about no book
in particular (a firm-wide sweep report) goes only to routes without a `books` list.
Secrets (the webhook key, the SMTP password) are named by environment variable and
resolved like the sessions' passwords: the environment first, then `gateway.secrets_file`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Kind = Literal["allocation_sent", "exception_opened", "sweep_report", "approval_pending"]
KINDS: tuple[str, ...] = get_args(Kind)

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ADDRESS = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SmtpSettings(_Frozen):
    """The mail relay e-mail notifications are handed to."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    from_address: str
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """Environment variable holding the SMTP password (needed with `username`)."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS before anything else is sent; a server that
    does not offer it is an error, never a silent fall-back to plain text."""
    ca_file: Path | None = None
    """PEM CAs to verify the server's certificate with (a private CA); default: the
    system's trust store. The host name is always checked."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError(f"not an e-mail address: {value!r}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSettings:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        if self.username is not None and not self.starttls:
            raise ValueError("username without starttls would send the password in clear")
        return self


class RetrySettings(_Frozen):
    """Exponential backoff, kept in the outbox row so it survives a restart.

    After the n-th failed attempt the next one is due
    `min(max_backoff_seconds, first_backoff_seconds * 2**(n-1))` later; after
    `max_attempts` attempts the delivery is `failed` (logged and alerted).
    """

    max_attempts: int = Field(default=8, ge=1, le=100)
    first_backoff_seconds: float = Field(default=30.0, gt=0, le=86_400)
    max_backoff_seconds: float = Field(default=3600.0, gt=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.max_backoff_seconds < self.first_backoff_seconds:
            raise ValueError("max_backoff_seconds is below first_backoff_seconds")
        return self


class Route(_Frozen):
    """Which kinds, for which books, go to which webhook and which mailboxes."""

    kinds: Literal["*"] | tuple[Kind, ...] = "*"
    books: tuple[str, ...] = ()
    """Books this route hears about; empty: every book, and notifications about none."""
    webhook_url: str | None = None
    webhook_secret_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """This receiver's own key (default: `notifications.webhook_secret_env`)."""
    email_to: tuple[str, ...] = ()

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook_url must be an http(s) URL with a host, not {value!r}")
        return value

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not _ADDRESS.match(v)]
        if bad:
            raise ValueError(f"not an e-mail address: {bad[0]!r}")
        return values

    @model_validator(mode="after")
    def _somewhere(self) -> Route:
        if self.webhook_url is None and not self.email_to:
            raise ValueError("a route needs a webhook_url, email_to, or both")
        if isinstance(self.kinds, tuple) and not self.kinds:
            raise ValueError('kinds is empty: list the kinds, or "*" for all')
        if self.webhook_secret_env is not None and self.webhook_url is None:
            raise ValueError("webhook_secret_env without webhook_url")
        return self

    def matches(self, kind: str, book: str | None) -> bool:
        if self.kinds != "*" and kind not in self.kinds:
            return False
        if not self.books:
            return True
        return book is not None and book in self.books


class NotificationSettings(_Frozen):
    enabled: bool = True
    """False: notify() records nothing and no worker runs."""
    webhook_secret_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """Environment variable holding the HMAC key webhook bodies are signed with."""
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_ca_file: Path | None = None
    """PEM CAs for https webhooks behind a private CA; default: the system's trust store."""
    smtp: SmtpSettings | None = None
    retry: RetrySettings = RetrySettings()
    routes: tuple[Route, ...] = ()
    parallel_deliveries: int = Field(default=4, ge=1, le=64)
    """Deliveries in flight at once, so one slow endpoint does not hold up the others."""
    poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    """How often the worker looks for rows it was not told about (another instance's,
    or a row whose claim by a dead process expired)."""
    claim_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """A row being delivered is reserved this long; if the process dies mid-delivery,
    the row is retried once the reservation expires (so the receiver may see it twice)."""

    @model_validator(mode="after")
    def _channels_configured(self) -> NotificationSettings:
        for number, route in enumerate(self.routes, start=1):
            if route.webhook_url and not (route.webhook_secret_env or self.webhook_secret_env):
                raise ValueError(f"route {number} has a webhook_url but no secret: set "
                                 "notifications.webhook_secret_env (or the route's own)")
            if route.email_to and self.smtp is None:
                raise ValueError(f"route {number} sends e-mail but [notifications.smtp] "
                                 "is not set")
        slowest = max(self.webhook_timeout_seconds,
                      self.smtp.timeout_seconds if self.smtp else 0.0)
        if self.claim_seconds < 3 * slowest:
            raise ValueError(f"claim_seconds ({self.claim_seconds:g}) must be at least three "
                             f"times the slowest channel timeout ({slowest:g})")
        return self
