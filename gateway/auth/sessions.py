"""Logins: the password (and TOTP code) checked, failures limited, sessions kept in the
database so they survive a restart and end at their expiry, at logout, or when the user
is disabled or changes password.

A session cookie is `<session_id>.<secret>`; the row keeps the SHA-256 of the secret and
the session's CSRF token. Failed logins are counted from the `login_failed` events
themselves (per username, since its last good login, within the window), so the limit
holds across restarts and across gateways sharing one database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from gateway.auth import events
from gateway.auth.passwords import (
    hash_password,
    needs_rehash,
    new_id,
    new_secret,
    secret_hash,
    secret_matches,
    totp_step,
    verify_password,
)
from gateway.auth.settings import AuthSettings
from gateway.auth.users import User, UserStore
from gateway.persistence import auth_tables as at
from gateway.persistence import tables as t
from gateway.persistence.store import Database

SESSION_PREFIX = "fxs_"
# Failures that do not count towards the limit: an attempt refused by the limit itself
# (counting it would keep a user locked out for as long as someone keeps trying), and a
# right password sent without the TOTP code a client did not know it needed.
_NOT_COUNTED = frozenset({"rate_limited", "totp_missing"})


class LoginRefused(Exception):
    """A refused login: the HTTP status, the reason shown, and the seconds to wait (429)."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after
        self.extra = extra or {}


@dataclass(frozen=True)
class Session:
    session_id: str
    username: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


class Sessions:
    def __init__(self, db: Database, users: UserStore, settings: AuthSettings,
                 now: Callable[[], datetime] | None = None) -> None:
        self.db, self.users, self.settings = db, users, settings
        self.now = now or (lambda: datetime.now(UTC))

    # -- logging in ---------------------------------------------------------------------

    def login(self, username: str, password: str, totp_code: str | None,
              remote: str | None) -> tuple[str, Session, User]:
        """(cookie value, session, user), or LoginRefused: 401 wrong credentials, 403 a
        disabled user, 429 too many failures (with the seconds to wait)."""
        name = username.strip().lower()[:64]
        now = self.now()
        wait = self.retry_after(name, now)
        if wait is not None:
            self._failed(name, remote, "rate_limited", now)
            raise LoginRefused(429, f"too many failed logins for {name}: try again in "
                                    f"{wait} s", retry_after=wait)
        user = self.users.get(name) if name else None
        if not verify_password(user.password_hash if user else None, password):
            self._failed(name, remote, "unknown_user" if user is None else "bad_password", now)
            raise LoginRefused(401, "wrong username or password")
        assert user is not None
        if not user.enabled:
            self._failed(name, remote, "disabled", now)
            raise LoginRefused(403, f"user {name} is disabled")
        if user.totp_secret is not None:
            self._second_factor(user, totp_code, remote, now)
        if needs_rehash(user.password_hash):
            self.users.rehash(name, hash_password(password))
        return self._open(user, remote, now)

    def _second_factor(self, user: User, code: str | None, remote: str | None,
                       now: datetime) -> None:
        assert user.totp_secret is not None
        if not code:
            self._failed(user.username, remote, "totp_missing", now)
            raise LoginRefused(401, f"user {user.username} needs a TOTP code (field 'totp')",
                               extra={"totp_required": True})
        step = totp_step(user.totp_secret, code, now)
        if step is None:
            self._failed(user.username, remote, "bad_totp", now)
            raise LoginRefused(401, "wrong TOTP code", extra={"totp_required": True})
        if not self.users.note_totp_step(user.username, step):
            self._failed(user.username, remote, "totp_reused", now)
            raise LoginRefused(401, "this TOTP code was used already: wait for the next one",
                               extra={"totp_required": True})

    def _open(self, user: User, remote: str | None,
              now: datetime) -> tuple[str, Session, User]:
        session = Session(session_id=new_id(SESSION_PREFIX), username=user.username,
                          csrf_token=new_secret(), created_at=now,
                          expires_at=now + timedelta(minutes=self.settings.session_minutes))
        secret = new_secret()
        with self.db.engine.begin() as conn:
            conn.execute(insert(at.auth_sessions).values(
                session_id=session.session_id, username=user.username,
                secret_hash=secret_hash(secret), csrf_token=session.csrf_token,
                created_at=now, expires_at=session.expires_at,
                remote_addr=(remote or "")[:64] or None))
            events.write(conn, events.LOGIN, now, {
                "username": user.username, "remote": remote,
                "session_id": session.session_id})
        return f"{session.session_id}.{secret}", session, user

    def _failed(self, username: str, remote: str | None, reason: str, now: datetime) -> None:
        with self.db.engine.begin() as conn:
            events.write(conn, events.LOGIN_FAILED, now,
                         {"username": username, "remote": remote, "reason": reason},
                         severity="warning")

    def retry_after(self, username: str, now: datetime) -> int | None:
        """Seconds until `username` may try again, None while under the limit."""
        window = timedelta(minutes=self.settings.failed_login_window_minutes)
        query = (select(t.audit_events.c.kind, t.audit_events.c.recorded_at,
                        t.audit_events.c.detail_json)
                 .where(t.audit_events.c.kind.in_((events.LOGIN, events.LOGIN_FAILED)),
                        t.audit_events.c.recorded_at >= now - window)
                 .order_by(t.audit_events.c.id))
        failures: list[datetime] = []
        with self.db.engine.connect() as conn:
            for kind, recorded_at, detail_json in conn.execute(query):
                detail = json.loads(detail_json)
                if detail.get("username") != username:
                    continue
                if kind == events.LOGIN:
                    failures.clear()  # a good login starts the count again
                elif detail.get("reason") not in _NOT_COUNTED:
                    failures.append(recorded_at)
        limit = self.settings.max_failed_logins
        if len(failures) < limit:
            return None
        # Under the limit again once all but limit-1 of the failures have left the window.
        frees_at = failures[len(failures) - limit] + window
        return max(1, math.ceil((frees_at - now).total_seconds()))

    # -- sessions -----------------------------------------------------------------------

    def lookup(self, cookie: str) -> tuple[Session, User] | None:
        """The live session a cookie names and its user; None when the cookie is unknown,
        forged, expired or logged out (the user may be disabled: the caller says so)."""
        session_id, _, secret = cookie.partition(".")
        if not session_id.startswith(SESSION_PREFIX) or not secret:
            return None
        s = at.auth_sessions.c
        query = (select(s.secret_hash, s.csrf_token, s.created_at.label("opened_at"),
                        s.expires_at, s.revoked_at, at.users)
                 .join(at.users, at.users.c.username == at.auth_sessions.c.username)
                 .where(at.auth_sessions.c.session_id == session_id[:64]))
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.revoked_at is not None or row.expires_at <= self.now():
            return None
        if not secret_matches(secret, row.secret_hash):
            return None
        user = User.from_row(row)
        return Session(session_id=session_id, username=user.username,
                       csrf_token=row.csrf_token, created_at=row.opened_at,
                       expires_at=row.expires_at), user

    def logout(self, session: Session) -> None:
        now = self.now()
        with self.db.engine.begin() as conn:
            conn.execute(update(at.auth_sessions)
                         .where(at.auth_sessions.c.session_id == session.session_id,
                                at.auth_sessions.c.revoked_at.is_(None))
                         .values(revoked_at=now))
            events.write(conn, events.LOGOUT, now, {"username": session.username,
                                                   "session_id": session.session_id})
