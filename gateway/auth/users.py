"""Local users and their API tokens: add, change, disable, list; tokens issued and checked.

Every change is written with its `user_action` event in one transaction (events.py), with
the actor who made it (`cli:<login>` from the CLI) and the reason given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from gateway.auth import events
from gateway.auth.passwords import (
    hash_password,
    new_id,
    new_secret,
    new_totp_secret,
    secret_hash,
    secret_matches,
)
from gateway.auth.roles import check_roles
from gateway.persistence import auth_tables as at
from gateway.persistence.store import Database

_USERNAME = re.compile(r"^[a-z][a-z0-9._-]{0,47}$")
TOKEN_PREFIX = "fxt_"  # noqa: S105 - marks a string as a token id, is none


class UserError(ValueError):
    """A refused change, with the reason a person can act on."""


@dataclass(frozen=True)
class User:
    username: str
    roles: tuple[str, ...]
    enabled: bool
    totp: bool
    created_at: datetime
    password_changed_at: datetime
    password_hash: str = ""
    totp_secret: str | None = None
    totp_last_step: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(username=row.username, roles=tuple(row.roles.split(",")),
                   enabled=bool(row.enabled), totp=row.totp_secret is not None,
                   created_at=row.created_at, password_changed_at=row.password_changed_at,
                   password_hash=row.password_hash, totp_secret=row.totp_secret,
                   totp_last_step=row.totp_last_step)

    def public(self) -> dict[str, Any]:
        """For listings and answers: no hash, no secret."""
        return {"username": self.username, "roles": list(self.roles),
                "enabled": self.enabled, "totp": self.totp,
                "created_at": self.created_at.isoformat(),
                "password_changed_at": self.password_changed_at.isoformat()}


def check_username(name: str) -> str:
    name = name.strip().lower()
    if not _USERNAME.match(name):
        raise UserError(f"{name!r} is not a username: a letter, then up to 47 letters, "
                        "digits, '.', '_' or '-'")
    return name


class UserStore:
    """The users' tables of one database; `now` is wall-clock time (never a simulated one:
    a rehearsal's fast clock would expire sessions in seconds)."""

    def __init__(self, db: Database, now: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.now = now or (lambda: datetime.now(UTC))

    # -- reading --------------------------------------------------------------------------

    def any_user(self) -> bool:
        with self.db.engine.connect() as conn:
            return conn.execute(select(at.users.c.username).limit(1)).first() is not None

    def get(self, username: str) -> User | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(at.users).where(
                at.users.c.username == username.strip().lower())).first()
        return User.from_row(row) if row is not None else None

    def all_users(self) -> list[tuple[User, int]]:
        """Every user with its count of live API tokens, by name."""
        live = (select(at.api_tokens.c.username, func.count().label("n"))
                .where(at.api_tokens.c.revoked_at.is_(None))
                .group_by(at.api_tokens.c.username).subquery())
        query = (select(at.users, func.coalesce(live.c.n, 0).label("tokens"))
                 .outerjoin(live, live.c.username == at.users.c.username)
                 .order_by(at.users.c.username))
        with self.db.engine.connect() as conn:
            return [(User.from_row(r), int(r.tokens)) for r in conn.execute(query)]

    def tokens(self, username: str) -> list[dict[str, Any]]:
        query = (select(at.api_tokens.c.token_id, at.api_tokens.c.label,
                        at.api_tokens.c.created_at, at.api_tokens.c.revoked_at)
                 .where(at.api_tokens.c.username == username)
                 .order_by(at.api_tokens.c.created_at))
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def user_for_token(self, token: str) -> tuple[User, str] | None:
        """The user a bearer token belongs to and the token's id; None for a token that is
        unknown, revoked or does not match (the user may be disabled: the caller says so)."""
        token_id, _, secret = token.partition(".")
        if not token_id.startswith(TOKEN_PREFIX) or not secret:
            return None
        query = (select(at.api_tokens.c.secret_hash, at.users)
                 .join(at.users, at.users.c.username == at.api_tokens.c.username)
                 .where(at.api_tokens.c.token_id == token_id,
                        at.api_tokens.c.revoked_at.is_(None)))
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not secret_matches(secret, row.secret_hash):
            return None
        return User.from_row(row), token_id

    # -- changing -------------------------------------------------------------------------

    def add(self, username: str, password: str, roles: Iterable[str], *, actor: str,
            reason: str | None = None, totp: bool = False) -> str | None:
        """Create a user; returns the TOTP secret when `totp` enrolls one."""
        name = check_username(username)
        wanted = self._roles(roles)
        hashed = self._hash(password)
        secret = new_totp_secret() if totp else None
        now = self.now()
        with self.db.engine.begin() as conn:
            if conn.execute(select(at.users.c.username)
                            .where(at.users.c.username == name)).first() is not None:
                raise UserError(f"user {name} exists already")
            conn.execute(insert(at.users).values(
                username=name, password_hash=hashed, roles=",".join(wanted), enabled=True,
                totp_secret=secret, created_at=now, password_changed_at=now))
            self._record(conn, actor, "user.add", name, reason,
                         roles=list(wanted), totp=totp)
        return secret

    def set_password(self, username: str, password: str, *, actor: str,
                     reason: str | None = None) -> None:
        """A new password; the user's login sessions end (its API tokens stay)."""
        hashed = self._hash(password)
        with self.db.engine.begin() as conn:
            name = self._existing(conn, username)
            now = self.now()
            conn.execute(update(at.users).where(at.users.c.username == name)
                         .values(password_hash=hashed, password_changed_at=now))
            ended = self._end_sessions(conn, name, now)
            self._record(conn, actor, "user.passwd", name, reason, sessions_ended=ended)

    def rehash(self, username: str, hashed: str) -> None:
        """Store a stronger hash of the same password (at login; no person acted)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(at.users).where(at.users.c.username == username)
                         .values(password_hash=hashed))

    def set_totp(self, username: str, enroll: bool, *, actor: str,
                 reason: str | None = None) -> str | None:
        """Enroll a new TOTP secret (returned) or remove the second factor."""
        secret = new_totp_secret() if enroll else None
        with self.db.engine.begin() as conn:
            name = self._existing(conn, username)
            conn.execute(update(at.users).where(at.users.c.username == name)
                         .values(totp_secret=secret, totp_last_step=None))
            self._record(conn, actor, "user.totp_enroll" if enroll else "user.totp_remove",
                         name, reason)
        return secret

    def set_enabled(self, username: str, enabled: bool, *, actor: str,
                    reason: str | None = None) -> None:
        """Disable (ending the user's sessions) or enable again. A disabled user's API
        tokens are refused while it stays disabled."""
        with self.db.engine.begin() as conn:
            name = self._existing(conn, username)
            conn.execute(update(at.users).where(at.users.c.username == name)
                         .values(enabled=enabled))
            ended = 0 if enabled else self._end_sessions(conn, name, self.now())
            self._record(conn, actor, "user.enable" if enabled else "user.disable", name,
                         reason, sessions_ended=ended)

    def set_roles(self, username: str, roles: Iterable[str], *, actor: str,
                  reason: str | None = None) -> tuple[str, ...]:
        wanted = self._roles(roles)
        with self.db.engine.begin() as conn:
            name = self._existing(conn, username)
            before = conn.execute(select(at.users.c.roles)
                                  .where(at.users.c.username == name)).scalar_one()
            conn.execute(update(at.users).where(at.users.c.username == name)
                         .values(roles=",".join(wanted)))
            self._record(conn, actor, "user.roles", name, reason,
                         roles_before=before.split(","), roles=list(wanted))
        return wanted

    def note_totp_step(self, username: str, step: int) -> bool:
        """Spend a TOTP code: False when this step (or a later one) was used already, so
        a code seen over a shoulder or in a proxy log cannot log in a second time."""
        with self.db.engine.begin() as conn:
            done = conn.execute(
                update(at.users).where(
                    at.users.c.username == username,
                    (at.users.c.totp_last_step.is_(None))
                    | (at.users.c.totp_last_step < step))
                .values(totp_last_step=step))
            return bool(done.rowcount)

    def create_token(self, username: str, label: str, *, actor: str,
                     reason: str | None = None) -> str:
        """A new API token for the user, returned once: only its hash is kept."""
        token_id, secret = new_id(TOKEN_PREFIX), new_secret()
        label = label.strip() or "api"
        if len(label) > 128:
            raise UserError("a token label has at most 128 characters")
        with self.db.engine.begin() as conn:
            name = self._existing(conn, username)
            conn.execute(insert(at.api_tokens).values(
                token_id=token_id, username=name, secret_hash=secret_hash(secret),
                label=label, created_at=self.now()))
            self._record(conn, actor, "token.create", name, reason, token_id=token_id,
                         label=label)
        return f"{token_id}.{secret}"

    def revoke_token(self, username: str, token_id: str, *, actor: str,
                     reason: str | None = None) -> None:
        with self.db.engine.begin() as conn:
            name = self._existing(conn, username)
            done = conn.execute(update(at.api_tokens).where(
                at.api_tokens.c.token_id == token_id.partition(".")[0],
                at.api_tokens.c.username == name, at.api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.now()))
            if not done.rowcount:
                raise UserError(f"user {name} has no live token {token_id}")
            self._record(conn, actor, "token.revoke", name, reason, token_id=token_id)

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _roles(roles: Iterable[str]) -> tuple[str, ...]:
        try:
            return check_roles(roles)
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    @staticmethod
    def _hash(password: str) -> str:
        try:
            return hash_password(password)
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    @staticmethod
    def _existing(conn: Connection, username: str) -> str:
        name = username.strip().lower()
        if conn.execute(select(at.users.c.username)
                        .where(at.users.c.username == name)).first() is None:
            raise UserError(f"no user {name}")
        return name

    @staticmethod
    def _end_sessions(conn: Connection, username: str, now: datetime) -> int:
        done = conn.execute(update(at.auth_sessions).where(
            at.auth_sessions.c.username == username, at.auth_sessions.c.revoked_at.is_(None),
            at.auth_sessions.c.expires_at > now).values(revoked_at=now))
        return int(done.rowcount or 0)

    def _record(self, conn: Connection, actor: str, operation: str, username: str,
                reason: str | None, **extra: Any) -> None:
        events.write(conn, events.USER_ACTION, self.now(), events.action_detail(
            actor=actor, action="manage_users", operation=operation, target=f"user:{username}",
            reason=reason, via=actor.split(":", 1)[0] if ":" in actor else "direct",
            **extra))
