"""The web pages for operations and compliance, served by the daemon under /ui/.

    /ui/login                 log in (username, password, TOTP code when enrolled)
    /ui/                      today's blotter; refreshes itself from /ui/blotter
    /ui/allocations/{id}      one allocation: header, why it is held, votes, every account
    /ui/rulebook              the rulebook's versions; /ui/rulebook/{id}/diff against the one before
    /ui/users                 users and roles (manage_users)

Pages need `view` (users: `manage_users`) and are answered by the same guard as the API
(gateway/web/access.py). They only read; votes go to the API's own POST
/approvals/{id}/approve|reject from the page's script with the session's CSRF token, so
the page and a script are checked and recorded the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from gateway.auth.principals import AuthFailure, Principal
from gateway.auth.roles import ACTIONS, ROLE_ACTIONS
from gateway.auth.sessions import LoginRefused
from gateway.http_auth import SESSION_COOKIE, Guard
from gateway.persistence.store import Database
from gateway.web import desk_views
from gateway.web.access import HOME, LOGIN, Me, PageRefused, Pages, safe_next
from gateway.web.allocation_view import COLUMNS, AllocationPages

STATIC = Path(__file__).parent / "static"
_MAX_FORM = 8192
BLOTTER_REFRESH_MS = 3000


def _json_for_script(value: Any) -> str:
    """JSON to embed in <script type="application/json">: nothing can close the tag."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def add_web_pages(app: FastAPI, db: Database, guard: Guard, *,
                  status: Callable[..., dict[str, Any]]) -> None:
    """Mount the pages and their static files on `app` (the daemon's API app)."""
    pages = Pages(guard)
    allocations = AllocationPages(db)
    settings = guard.auth.settings
    view = Depends(pages.needs("view"))
    manage = Depends(pages.needs("manage_users"))
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.exception_handler(PageRefused)
    def page_refused(_request: Request, exc: PageRefused) -> Response:
        return exc.response

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse(HOME, status_code=308)

    # -- logging in and out -------------------------------------------------------------

    @app.get(LOGIN, include_in_schema=False)
    async def login_form(request: Request, next: str | None = None) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            try:
                if await run_in_threadpool(guard.identify, None, cookie) is not None:
                    return RedirectResponse(safe_next(next), status_code=303)
            except AuthFailure:
                pass  # expired or ended: log in again
        return pages.render("login.html.j2", next=safe_next(next), error=None, username="")

    @app.post(LOGIN, include_in_schema=False)
    async def login(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            # A form on another site must not log the browser into someone's account.
            return pages.refused(403, "A login form on another site was refused.")
        body = await request.body()
        form = {k: v[0] for k, v in parse_qs(body[:_MAX_FORM].decode("utf-8", "replace"))
                .items()}
        target = safe_next(form.get("next"))
        username, password = form.get("username", "").strip(), form.get("password", "")
        if not username or not password:
            return pages.render("login.html.j2", status_code=422, next=target,
                                error="Enter your username and password.", username=username)
        remote = request.client.host if request.client else None
        try:
            cookie, _session, _user = await run_in_threadpool(
                guard.auth.sessions.login, username, password,
                form.get("totp", "").strip() or None, remote)
        except LoginRefused as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return pages.render("login.html.j2", status_code=exc.status, headers=headers,
                                next=target, error=exc.detail, username=username)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=settings.session_minutes * 60,
                            path="/", secure=settings.cookie_secure, httponly=True,
                            samesite="strict")
        return response

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(who: Principal = view) -> Response:
        # `view` checked the form's CSRF token: another site cannot log a user out.
        if who.session is not None:
            await run_in_threadpool(guard.auth.sessions.logout, who.session)
        response = RedirectResponse(LOGIN, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=settings.cookie_secure,
                               httponly=True, samesite="strict")
        return response

    # -- the blotter ----------------------------------------------------------------------

    @app.get(HOME, include_in_schema=False)
    def blotter_page(who: Principal = view) -> HTMLResponse:
        return pages.render("blotter.html.j2", me=Me.of(who),
                            refresh_ms=BLOTTER_REFRESH_MS, **desk_views.blotter(db, status))

    @app.get("/ui/blotter", include_in_schema=False)
    def blotter_fragment(who: Principal = view) -> HTMLResponse:
        return pages.render("blotter_body.html.j2", me=Me.of(who),
                            **desk_views.blotter(db, status))

    # -- one allocation -------------------------------------------------------------------

    @app.get("/ui/allocations/{alloc_id}", include_in_schema=False)
    def allocation_page(alloc_id: str, who: Principal = view) -> HTMLResponse:
        me = Me.of(who)
        data = allocations.page(alloc_id)
        if data is None:
            return pages.refused(404, f"There is no allocation {alloc_id}.", me)
        return pages.render("allocation.html.j2", me=me, columns=COLUMNS,
                            rows_json=_json_for_script(data.pop("rows")), **data)

    @app.get("/ui/allocations/{alloc_id}/state", include_in_schema=False)
    def allocation_state(alloc_id: str, _who: Principal = view) -> JSONResponse:
        state = allocations.state(alloc_id)
        if state is None:
            return JSONResponse({"detail": f"no allocation {alloc_id!r}"}, status_code=404)
        return JSONResponse(state, headers={"Cache-Control": "no-store"})

    # -- the rulebook ---------------------------------------------------------------------

    @app.get("/ui/rulebook", include_in_schema=False)
    def rulebook_page(who: Principal = view) -> HTMLResponse:
        return pages.render("rulebook.html.j2", me=Me.of(who),
                            versions=desk_views.rulebook_versions(db))

    @app.get("/ui/rulebook/{row_id}/diff", include_in_schema=False)
    def rulebook_diff(row_id: int, who: Principal = view) -> HTMLResponse:
        me = Me.of(who)
        diff = desk_views.rulebook_diff(db, row_id)
        if diff is None:
            return pages.refused(404, f"There is no rulebook activation #{row_id}.", me)
        return pages.render("rulebook_diff.html.j2", me=me, **diff)

    # -- users ----------------------------------------------------------------------------

    @app.get("/ui/users", include_in_schema=False)
    def users_page(who: Principal = manage) -> HTMLResponse:
        users = [{**u.public(), "api_tokens": n} for u, n in guard.auth.users.all_users()]
        return pages.render("users.html.j2", me=Me.of(who), users=users, actions=ACTIONS,
                            matrix=ROLE_ACTIONS)
