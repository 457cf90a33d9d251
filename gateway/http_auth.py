"""HTTP authentication and roles: POST /login, POST /logout, GET /me, GET /users, and the
dependency every protected endpoint names its action with (`guard.needs("run_sweep")`).

How a request is identified (gateway/auth/principals.py says who may do what):
  1. `Authorization: Bearer <token>`: the shared machine token, or a user's API token;
  2. else the session cookie POST /login set; a state-changing request (not GET/HEAD/
     OPTIONS) must then also carry the session's CSRF token, in the `X-CSRF-Token` header
     or a `csrf_token` form field: a page on another site can make the browser send the
     cookie, never the token;
  3. else nobody (open only while no user exists; see principals.py).
Refusals are JSON: 401 not authenticated, 403 "role X may not do action Y" (recorded as
`access_denied`), 429 too many failed logins, with Retry-After.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway.auth import events
from gateway.auth.principals import Authenticator, AuthFailure, Principal
from gateway.auth.roles import ACTIONS, ordered
from gateway.auth.sessions import LoginRefused
from gateway.auth.settings import AuthSettings
from gateway.persistence.store import Database

SESSION_COOKIE = "fixalloc_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM = "application/x-www-form-urlencoded"
_MAX_LOGIN_BODY = 8192
_LOGIN_FIELDS = {"type": "object", "required": ["username", "password"], "properties": {
    "username": {"type": "string"}, "password": {"type": "string", "format": "password"},
    "totp": {"type": "string", "description": "the current code, when TOTP is enrolled"}}}

Dependency = Callable[[Request], Awaitable[Principal]]


class Guard:
    """Identifies callers and checks their actions; records what they change."""

    def __init__(self, auth: Authenticator, db: Database) -> None:
        self.auth, self.db = auth, db
        self._needs: dict[str, Dependency] = {}

    # -- who is calling -----------------------------------------------------------------

    def identify(self, authorization: str | None, cookie: str | None) -> Principal | None:
        """The caller, None for nobody once users exist; AuthFailure for bad credentials."""
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthFailure(401, "the Authorization header must be 'Bearer <token>'")
            try:
                return self.auth.from_bearer(token.strip())
            except AuthFailure as exc:
                nobody = self.auth.anonymous()
                if exc.status == 401 and nobody is not None and nobody.via == "open":
                    return nobody  # an open gateway ignored tokens before users existed
                raise
        if cookie:
            return self.auth.from_cookie(cookie)
        return self.auth.anonymous()

    def needs(self, action: str) -> Dependency:
        """The FastAPI dependency for an endpoint that takes `action` (roles.ACTIONS)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: the actions are {ACTIONS}")
        if action not in self._needs:

            async def dependency(request: Request) -> Principal:
                principal = await run_in_threadpool(
                    self.identify, request.headers.get("authorization"),
                    request.cookies.get(SESSION_COOKIE))
                if (principal is not None and principal.session is not None
                        and request.method not in _SAFE):
                    await self._check_csrf(request, principal)
                return await run_in_threadpool(self._authorize, principal, action,
                                               request.url.path)

            dependency.__name__ = f"needs_{action}"
            self._needs[action] = dependency
        return self._needs[action]

    def _authorize(self, principal: Principal | None, action: str, path: str) -> Principal:
        try:
            return self.auth.authorize(principal, action)
        except AuthFailure as exc:
            if exc.status == 403 and principal is not None:
                self._write(events.ACCESS_DENIED, {
                    "actor": principal.name, "via": principal.via, "action": action,
                    "target": path, "roles": list(principal.roles)}, severity="warning")
            raise

    async def _check_csrf(self, request: Request, principal: Principal) -> None:
        assert principal.session is not None
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(_FORM):
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            sent = form[CSRF_FIELD][0] if form.get(CSRF_FIELD) else None
        if sent is None or not hmac.compare_digest(sent.encode(),
                                                   principal.session.csrf_token.encode()):
            await run_in_threadpool(self._write, events.ACCESS_DENIED, {
                "actor": principal.name, "via": "session", "action": None,
                "target": request.url.path,
                "reason": "csrf token missing" if sent is None else "csrf token wrong"},
                severity="warning")
            raise AuthFailure(403, f"the CSRF token is {'missing' if sent is None else 'wrong'}"
                                   f": send the {CSRF_HEADER} header (GET /me gives it) with "
                                   "a request made with the session cookie")

    # -- what they changed --------------------------------------------------------------

    @contextmanager
    def recording(self, principal: Principal, action: str, operation: str, target: str, *,
                  reason: str | None = None, claimed: str | None = None,
                  alloc_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Record a state-changing action with its outcome (`user_action`); the block may
        add facts to the dict it is given (a new version, a result)."""
        note: dict[str, Any] = {}
        detail = events.action_detail(actor=principal.actor(claimed), action=action,
                                      operation=operation, target=target, reason=reason,
                                      via=principal.via)
        if principal.actor(claimed) != principal.name:
            detail["authenticated_as"] = principal.name
        try:
            yield note
        except HTTPException as exc:
            detail["outcome"] = f"refused ({exc.status_code}): {exc.detail}"
            self._write(events.USER_ACTION, {**detail, **note}, alloc_id=alloc_id)
            raise
        except Exception as exc:
            detail["outcome"] = f"failed: {type(exc).__name__}: {exc}"
            self._write(events.USER_ACTION, {**detail, **note}, alloc_id=alloc_id)
            raise
        self._write(events.USER_ACTION, {**detail, **note}, alloc_id=alloc_id)

    def _write(self, kind: str, detail: dict[str, Any], *, severity: str = "info",
               alloc_id: str | None = None) -> None:
        with self.db.engine.begin() as conn:
            events.write(conn, kind, datetime.now(UTC), detail, severity=severity,
                         alloc_id=alloc_id)


def _me(principal: Principal) -> dict[str, Any]:
    session = principal.session
    return {"user": principal.name, "via": principal.via, "roles": list(principal.roles),
            "actions": ordered(principal.actions),
            "csrf_token": session.csrf_token if session else None,
            "expires_at": session.expires_at.isoformat() if session else None}


async def _login_fields(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_LOGIN_BODY:
        raise HTTPException(status_code=413, detail="the login request is too large")
    ctype = request.headers.get("content-type", "")
    fields: dict[str, Any]
    if ctype.startswith("application/json"):
        try:
            fields = json.loads(body or b"{}")
        except ValueError as exc:
            raise HTTPException(status_code=422, detail="the body is not JSON") from exc
        if not isinstance(fields, dict):
            raise HTTPException(status_code=422, detail="the body is not a JSON object")
    elif ctype.startswith(_FORM):
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    else:
        raise HTTPException(status_code=415, detail=f"send JSON or {_FORM}")
    for name in ("username", "password"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise HTTPException(status_code=422, detail=f"{name} is required")
    totp = fields.get("totp")
    if totp is not None and not isinstance(totp, str):
        raise HTTPException(status_code=422, detail="totp is a string of digits")
    return {"username": fields["username"], "password": fields["password"],
            "totp": totp or ""}


def install_auth(app: FastAPI, db: Database, *, settings: AuthSettings,
                 machine_token: str | None) -> Guard:
    """Add the auth endpoints and the refusal handler to `app`; returns the Guard the
    other endpoints take their dependencies from (also at `app.state.guard`)."""
    auth = Authenticator(db, settings, machine_token)
    guard = Guard(auth, db)
    app.state.guard = guard

    @app.exception_handler(AuthFailure)
    def refused(_request: Request, exc: AuthFailure) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status,
                            headers=headers)

    @app.post("/login", summary="Log in with username, password and (when enrolled) a TOTP "
                                "code; sets the session cookie",
              responses={401: {"description": "wrong credentials or TOTP code"},
                         403: {"description": "the user is disabled"},
                         429: {"description": "too many failed logins: see Retry-After"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": _LOGIN_FIELDS},
                  _FORM: {"schema": _LOGIN_FIELDS}}}})
    async def login(request: Request) -> JSONResponse:
        fields = await _login_fields(request)
        remote = request.client.host if request.client else None
        try:
            cookie, session, user = await run_in_threadpool(
                auth.sessions.login, fields["username"], fields["password"],
                fields["totp"] or None, remote)
        except LoginRefused as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status,
                                headers=headers)
        principal = auth.principal_of(user, "session", session=session)
        response = JSONResponse(_me(principal))
        response.set_cookie(SESSION_COOKIE, cookie, max_age=settings.session_minutes * 60,
                            path="/", secure=settings.cookie_secure, httponly=True,
                            samesite="strict")
        return response

    @app.post("/logout", summary="End the login session (needs its CSRF token)")
    async def logout(request: Request) -> JSONResponse:
        principal = await run_in_threadpool(
            guard.identify, None, request.cookies.get(SESSION_COOKIE))
        if principal is None or principal.session is None:
            raise AuthFailure(401, "no login session to end")
        await guard._check_csrf(request, principal)
        await run_in_threadpool(auth.sessions.logout, principal.session)
        response = JSONResponse({"logged_out": principal.name})
        response.delete_cookie(SESSION_COOKIE, path="/", secure=settings.cookie_secure,
                               httponly=True, samesite="strict")
        return response

    @app.get("/me", summary="Who is calling: user, roles, allowed actions, CSRF token")
    async def me(request: Request) -> dict[str, Any]:
        principal = await run_in_threadpool(
            guard.identify, request.headers.get("authorization"),
            request.cookies.get(SESSION_COOKIE))
        if principal is None:
            raise auth.unauthenticated()
        return _me(principal)

    @app.get("/users", summary="The users, their roles and live API token counts",
             dependencies=[Depends(guard.needs("manage_users"))])
    def users() -> dict[str, Any]:
        return {"users": [{**u.public(), "api_tokens": n} for u, n in auth.users.all_users()]}

    return guard
