"""Who may see a page: the API's own guard, answered the way a browser needs it.

A page names the action it needs, like an endpoint (`guard.needs`), and the same guard
decides: no session (or an expired one) sends the browser to /ui/login with the page to
come back to; a role that may not take the action gets a 403 page, recorded like an API
refusal (`access_denied`); a POST made with the session cookie needs its CSRF token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.auth.principals import AuthFailure, Principal
from gateway.http_auth import SESSION_COOKIE, Guard

LOGIN = "/ui/login"
HOME = "/ui/"
TEMPLATES = Path(__file__).parent / "templates"
# Everything the pages load comes from the daemon itself; no inline script or style.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageRefused(Exception):
    """Raised by a page's dependency; the handler answers with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Me:
    """The caller as the templates see it."""

    name: str
    roles: tuple[str, ...]
    actions: frozenset[str]
    csrf: str | None

    @classmethod
    def of(cls, who: Principal) -> Me:
        return cls(who.name, who.roles, who.actions,
                   who.session.csrf_token if who.session else None)

    def may(self, action: str) -> bool:
        return action in self.actions


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["qty"] = qty_text
    env.filters["when"] = when_text
    return env


def qty_text(value: Any) -> str:
    """1234567.5 -> 1,234,567.5 (digits kept exactly as stored)."""
    if value is None or value == "":
        return ""
    text = str(value)
    sign = "-" if text.startswith("-") else ""
    whole, dot, frac = text.lstrip("-").partition(".")
    if not whole.isdigit():
        return text
    return f"{sign}{int(whole):,}{dot}{frac}"


def when_text(value: Any) -> str:
    """A stored time to the second, UTC."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text.replace("T", " ")[:19] + (" UTC" if len(text) >= 19 else "")


class Pages:
    """Renders templates; turns the guard's answers into redirects and 403 pages."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.env = environment()

    def render(self, name: str, *, status_code: int = 200, me: Me | None = None,
               headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(me=me, **context)
        return HTMLResponse(html, status_code=status_code,
                            headers={**SECURITY_HEADERS, **(headers or {})})

    def refused(self, status: int, message: str, me: Me | None = None) -> HTMLResponse:
        return self.render("error.html.j2", status_code=status, me=me, status=status,
                           message=message)

    def needs(self, action: str) -> Callable[[Request], Awaitable[Principal]]:
        """The dependency of a page that takes `action`."""
        check = self.guard.needs(action)

        async def dependency(request: Request) -> Principal:
            try:
                return await check(request)
            except AuthFailure as exc:
                if exc.status == 401:
                    target = request.url.path
                    if request.url.query:
                        target += f"?{request.url.query}"
                    raise PageRefused(RedirectResponse(
                        f"{LOGIN}?next={quote(target, safe='')}", status_code=303)) from exc
                me = None
                if exc.status == 403 and "roles" in exc.extra:
                    me = await run_in_threadpool(self._who, request)
                raise PageRefused(self.refused(exc.status, exc.detail, me)) from exc

        dependency.__name__ = f"page_needs_{action}"
        return dependency

    def _who(self, request: Request) -> Me | None:
        try:
            who = self.guard.identify(request.headers.get("authorization"),
                                      request.cookies.get(SESSION_COOKIE))
        except AuthFailure:
            return None
        return Me.of(who) if who is not None else None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a page of ours, never another site."""
    if not target or not target.startswith("/ui/") or target.startswith("//") \
            or "\\" in target or target.startswith(LOGIN):
        return HOME
    return target
