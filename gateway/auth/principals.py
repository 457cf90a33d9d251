"""Who is calling, and may they: credentials to a Principal, a Principal and an action to
yes or a precise refusal. No HTTP here (gateway/http_auth.py is the FastAPI side).

A caller is one of:
  a user, by a per-user API token (`Authorization: Bearer fxt_....`) or a login session;
  the shared machine token (`http.api_token_env`), which acts as `[auth]
  machine_token_role` (operations by default): the scripts' and the CLI's credential;
  nobody. While no user exists, nobody may read (today's behaviour), and may do anything
  when no machine token is configured either (an open gateway, as before users existed).
  Once a user exists, nobody may do nothing but the probes (/healthz, /readyz, /metrics).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.auth.roles import ACTIONS, READ_ACTIONS, actions_of
from gateway.auth.sessions import Session, Sessions
from gateway.auth.settings import AuthSettings
from gateway.auth.users import User, UserStore
from gateway.persistence.store import Database

NEEDS_BEARER = "a valid bearer token is required"
NEEDS_LOGIN = f"{NEEDS_BEARER}, or a session from POST /login"


@dataclass(frozen=True)
class Principal:
    name: str
    via: str  # token | session | machine | open | anonymous
    roles: tuple[str, ...]
    actions: frozenset[str]
    session: Session | None = None
    token_id: str | None = None

    @property
    def is_user(self) -> bool:
        return self.via in ("token", "session")

    def actor(self, claimed: str | None = None) -> str:
        """The name recorded for what this caller does. A user is its own name, whatever
        the request claims; the shared token and an open gateway cannot tell who is
        behind them, so the name the request gives (a script's `cli:<login>`) is kept."""
        if self.is_user:
            return self.name
        return claimed or self.name

    def describe(self) -> str:
        label = "role" if len(self.roles) == 1 else "roles"
        return f"{label} {', '.join(self.roles) or 'none'}"


class AuthFailure(Exception):
    """A refusal with its HTTP status: 401 not authenticated, 403 not allowed."""

    def __init__(self, status: int, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


class Authenticator:
    def __init__(self, db: Database, settings: AuthSettings, machine_token: str | None,
                 now: Callable[[], datetime] | None = None) -> None:
        self.db, self.settings = db, settings
        self.machine_token = machine_token or None
        self.users = UserStore(db, now)
        self.sessions = Sessions(db, self.users, settings, now)
        self._users_exist = False

    def users_exist(self) -> bool:
        # Users are disabled, never deleted: once one exists the answer stays yes, so only
        # a gateway without users asks the database again (one indexed row at most).
        if not self._users_exist:
            self._users_exist = self.users.any_user()
        return self._users_exist

    def from_bearer(self, token: str) -> Principal:
        if self.machine_token is not None and hmac.compare_digest(
                token.encode(), self.machine_token.encode()):
            role = self.settings.machine_token_role
            return Principal("machine", "machine", (role,), actions_of((role,)))
        found = self.users.user_for_token(token)
        if found is None:
            raise AuthFailure(401, f"{NEEDS_BEARER}: this one is unknown, revoked or mistyped")
        user, token_id = found
        return self.principal_of(user, "token", token_id=token_id)

    def from_cookie(self, cookie: str) -> Principal:
        found = self.sessions.lookup(cookie)
        if found is None:
            raise AuthFailure(401, "the session has expired or was ended: log in again "
                                   "(POST /login)")
        session, user = found
        return self.principal_of(user, "session", session=session)

    def anonymous(self) -> Principal | None:
        """Whoever sends no credentials: None once a user exists (401)."""
        if self.users_exist():
            return None
        if self.machine_token is None:
            return Principal("anonymous", "open", (), frozenset(ACTIONS))
        return Principal("anonymous", "anonymous", (), READ_ACTIONS)

    def unauthenticated(self) -> AuthFailure:
        # Without users the token is the only way in: say just that (scripts match it).
        return AuthFailure(401, NEEDS_LOGIN if self.users_exist() else NEEDS_BEARER)

    def authorize(self, principal: Principal | None, action: str) -> Principal:
        """The principal when it may take `action`; AuthFailure otherwise."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")  # a programming error, not a 4xx
        if principal is None:
            raise self.unauthenticated()
        if action in principal.actions:
            return principal
        if not principal.is_user and principal.via != "machine":
            raise self.unauthenticated()  # nobody may read only: a credential is missing
        raise AuthFailure(403, f"{principal.describe()} may not do action {action}",
                          action=action, user=principal.name, roles=list(principal.roles))

    @staticmethod
    def principal_of(user: User, via: str, *, session: Session | None = None,
              token_id: str | None = None) -> Principal:
        if not user.enabled:
            raise AuthFailure(403, f"user {user.username} is disabled", user=user.username)
        return Principal(user.username, via, user.roles, actions_of(user.roles),
                         session=session, token_id=token_id)
