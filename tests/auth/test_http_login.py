"""Logging in over real HTTP: the cookie, CSRF, logout, restarts, expiry, disabled users,
TOTP, the failed-login limit, the machine token, and a gateway without users."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from sqlalchemy import update

from gateway.auth.sessions import Sessions
from gateway.auth.settings import AuthSettings
from gateway.auth.users import UserStore
from gateway.persistence import auth_tables as at
from gateway.persistence.store import Database
from tests.auth.conftest import PASSWORD, Serve, add_user


def _login(client: httpx.Client, name: str, password: str = PASSWORD,
           **extra: str) -> httpx.Response:
    return client.post("/login", json={"username": name, "password": password, **extra})


def _details(db: Database, kind: str) -> list[dict[str, object]]:
    return [json.loads(e["detail_json"]) for e in db.events(kind)]


def test_login_sets_a_strict_cookie_and_me_says_who_and_what(db: Database,
                                                             serve: Serve) -> None:
    add_user(db, "olga", "operations")
    api = serve(db)
    browser = api.browser()
    resp = browser.post("/login", json={"username": "Olga", "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("fixalloc_session=fxs_")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=28800"):
        assert flag.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # cookie_secure = false in these tests
    body = resp.json()
    assert (body["user"], body["via"], body["roles"]) == ("olga", "session", ["operations"])
    assert body["actions"] == ["view", "whatif", "operate_allocation", "run_sweep",
                               "reload_rules", "reload_refdata", "push_prices"]
    me = browser.get("/me").json()
    assert me["csrf_token"] == body["csrf_token"] and me["user"] == "olga"
    assert browser.get("/status").status_code == 200  # a GET needs no CSRF token
    [login] = _details(db, "login")
    assert login["username"] == "olga" and login["remote"] == "127.0.0.1"
    # Only the hash of the cookie's secret is stored.
    session_id, secret = browser.cookies["fixalloc_session"].split(".")
    with db.engine.connect() as conn:
        row = conn.execute(at.auth_sessions.select()).one()
    assert row.session_id == session_id and secret not in str(tuple(row))

    # A form post logs in too; the default settings mark the cookie Secure.
    secure = serve(db, cookie_secure=True)
    resp = secure.http.post("/login", data={"username": "olga", "password": PASSWORD})
    assert resp.status_code == 200 and "secure" in resp.headers["set-cookie"].lower()
    assert AuthSettings().cookie_secure is True


def test_a_cookie_post_needs_the_sessions_csrf_token(db: Database, serve: Serve) -> None:
    add_user(db, "olga", "operations")
    add_user(db, "pat", "pm")
    api = serve(db)
    browser = api.browser()
    csrf = _login(browser, "olga").json()["csrf_token"]
    resp = browser.post("/rulebook/reload")
    assert resp.status_code == 403
    assert resp.json()["detail"].startswith("the CSRF token is missing")
    resp = browser.post("/rulebook/reload", headers={"X-CSRF-Token": "forged"})
    assert resp.status_code == 403 and resp.json()["detail"].startswith("the CSRF token is wrong")
    assert api.rulebooks.reloads == []
    resp = browser.post("/rulebook/reload", headers={"X-CSRF-Token": csrf},
                        json={"reason": "new rules deployed"})
    assert resp.status_code == 200 and api.rulebooks.reloads == ["http:olga"]
    reasons = [d.get("reason") for d in _details(db, "access_denied")]
    assert reasons == ["csrf token missing", "csrf token wrong"]
    [done] = _details(db, "user_action")[-1:]
    assert (done["actor"], done["action"], done["target"], done["reason"], done["via"]) == (
        "olga", "reload_rules", "rulebook", "new rules deployed", "session")
    # The token may come as a form field instead (a plain HTML form).
    pm = api.browser()
    pm_csrf = _login(pm, "pat").json()["csrf_token"]
    assert pm.post("/probe/approve", data={"csrf_token": "x"}).status_code == 403
    assert pm.post("/probe/approve", data={"csrf_token": pm_csrf}).status_code == 200


def test_logout_ends_the_session_which_survives_a_restart_until_then(
        db: Database, serve: Serve) -> None:
    add_user(db, "vic", "viewer")
    first = serve(db)
    browser = first.browser()
    csrf = _login(browser, "vic").json()["csrf_token"]
    cookie = browser.cookies["fixalloc_session"]
    first.server.stop()

    again = serve(db)  # a restarted daemon: the session is in the database
    other = again.browser()
    other.cookies.set("fixalloc_session", cookie)
    assert other.get("/me").json()["user"] == "vic"
    assert other.post("/logout").status_code == 403  # CSRF applies to logout too
    resp = other.post("/logout", headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 200 and resp.json() == {"logged_out": "vic"}
    assert 'fixalloc_session=""' in resp.headers["set-cookie"]
    other.cookies.set("fixalloc_session", cookie)  # replayed after logout
    resp = other.get("/status")
    assert resp.status_code == 401 and "log in again" in resp.json()["detail"]
    assert [d["username"] for d in _details(db, "logout")] == ["vic"]

    # Expiry: a session past its time is refused the same way.
    fresh = again.browser()
    _login(fresh, "vic")
    with db.engine.begin() as conn:
        conn.execute(update(at.auth_sessions).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert fresh.get("/me").status_code == 401
    # A forged cookie (right id, wrong secret) is refused too.
    session_id = fresh.cookies["fixalloc_session"].split(".")[0]
    fresh.cookies.set("fixalloc_session", f"{session_id}.guess")
    assert fresh.get("/me").status_code == 401


def test_a_disabled_user_is_refused_by_password_token_and_session(
        db: Database, serve: Serve) -> None:
    add_user(db, "dora", "operations")
    users = UserStore(db)
    token = users.create_token("dora", "script", actor="test:setup")
    api = serve(db)
    browser = api.browser()
    _login(browser, "dora")
    assert browser.get("/me").status_code == 200
    users.set_enabled("dora", False, actor="test:admin", reason="left the desk")
    resp = api.call("GET", "/status", token=token)
    assert (resp.status_code, resp.json()["detail"]) == (403, "user dora is disabled")
    assert browser.get("/me").status_code == 401  # disabling ended the session
    resp = _login(api.http, "dora")
    assert (resp.status_code, resp.json()["detail"]) == (403, "user dora is disabled")
    assert _details(db, "login_failed")[-1]["reason"] == "disabled"
    users.set_enabled("dora", True, actor="test:admin")
    assert api.call("GET", "/status", token=token).status_code == 200


def test_totp_is_required_once_enrolled_and_each_code_works_once(
        db: Database, serve: Serve) -> None:
    secret = add_user(db, "tess", "compliance", totp=True)
    assert secret is not None
    api = serve(db)
    resp = _login(api.http, "tess")
    assert resp.status_code == 401 and resp.json()["totp_required"] is True
    now = pyotp.TOTP(secret).now()
    wrong = f"{(int(now) + 1) % 1_000_000:06d}"
    resp = _login(api.http, "tess", totp=wrong)
    assert (resp.status_code, resp.json()["detail"]) == (401, "wrong TOTP code")
    resp = _login(api.http, "tess", password="not the password", totp=now)
    assert resp.status_code == 401 and "totp_required" not in resp.json()
    resp = _login(api.http, "tess", totp=now)
    assert resp.status_code == 200, resp.text
    resp = _login(api.http, "tess", totp=now)  # the same code, replayed
    assert resp.status_code == 401 and "used already" in resp.json()["detail"]
    assert [d["reason"] for d in _details(db, "login_failed")] == [
        "totp_missing", "bad_totp", "bad_password", "totp_reused"]


def test_failed_logins_are_limited_per_user_and_recorded(db: Database, serve: Serve) -> None:
    add_user(db, "fred", "trader")
    add_user(db, "gina", "trader")
    api = serve(db, max_failed_logins=3)
    for n in range(3):
        resp = _login(api.http, "fred", password=f"guess number {n}")
        assert (resp.status_code, resp.json()["detail"]) == (
            401, "wrong username or password")
    resp = _login(api.http, "fred")  # the right password, but too late
    assert resp.status_code == 429
    wait = int(resp.headers["retry-after"])
    assert 0 < wait <= 15 * 60 and f"try again in {wait} s" in resp.json()["detail"]
    assert _login(api.http, "gina").status_code == 200
    failed = _details(db, "login_failed")
    assert [(d["username"], d["reason"], d["remote"]) for d in failed] == [
        ("fred", "bad_password", "127.0.0.1")] * 3 + [("fred", "rate_limited", "127.0.0.1")]
    recorded = json.dumps([e["detail_json"] for e in db.events()])
    assert "guess number" not in recorded and PASSWORD not in recorded
    # An unknown name is limited the same way (it tells nothing about which names exist).
    for _ in range(3):
        assert _login(api.http, "nobody").status_code == 401
    assert _login(api.http, "nobody").status_code == 429

    # Once the window has passed, fred may try again.
    settings = AuthSettings(max_failed_logins=3)
    sessions = Sessions(db, UserStore(db), settings)
    assert sessions.retry_after("fred", datetime.now(UTC)) is not None
    assert sessions.retry_after("fred", datetime.now(UTC) + timedelta(minutes=16)) is None


def test_the_machine_token_acts_as_its_configured_role(db: Database, serve: Serve) -> None:
    api = serve(db, api_token="machine-123")
    resp = api.call("POST", "/allocations/A1/cancel", token="machine-123",
                    json={"reason": "broker busted", "actor": "cli:ops1"})
    assert resp.status_code == 200
    assert api.operated == [("cancel", "A1", "cli:ops1", "broker busted")]
    [done] = _details(db, "user_action")
    assert (done["actor"], done["authenticated_as"], done["via"], done["target"]) == (
        "cli:ops1", "machine", "machine", "allocation:A1")
    resp = api.call("POST", "/probe/approve", token="machine-123")
    assert (resp.status_code, resp.json()["detail"]) == (
        403, "role operations may not do action approve")
    # Without users, reads stay open and changes need the token, as before.
    assert api.call("GET", "/status").status_code == 200
    resp = api.call("POST", "/rulebook/reload")
    assert (resp.status_code, resp.json()) == (401, {"detail": "a valid bearer token is required"})
    assert resp.headers["www-authenticate"] == "Bearer"
    assert api.call("POST", "/rulebook/reload", token="wrong").status_code == 401

    viewer = serve(db, api_token="machine-123", machine_token_role="viewer")
    resp = viewer.call("POST", "/rulebook/reload", token="machine-123")
    assert (resp.status_code, resp.json()["detail"]) == (
        403, "role viewer may not do action reload_rules")


def test_an_open_gateway_stays_open_until_the_first_user(db: Database, serve: Serve) -> None:
    api = serve(db)
    assert api.call("POST", "/rulebook/reload").status_code == 200
    assert api.call("POST", "/rulebook/reload", token="anything").status_code == 200
    assert api.call("GET", "/me").json()["via"] == "open"
    add_user(db, "ann", "admin")
    for method, path in (("GET", "/status"), ("POST", "/rulebook/reload"), ("GET", "/me")):
        resp = api.call(method, path)
        assert (resp.status_code, resp.json()["detail"]) == (
            401, "a valid bearer token is required, or a session from POST /login")
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapes stay open
        assert api.call("GET", path).status_code == 200


def test_bad_requests_get_precise_answers(db: Database, serve: Serve) -> None:
    add_user(db, "ann", "admin")
    api = serve(db)
    resp = api.call("GET", "/status", headers={"Authorization": "Basic YW5uOng="})
    assert (resp.status_code, resp.json()["detail"]) == (
        401, "the Authorization header must be 'Bearer <token>'")
    resp = api.call("GET", "/status", token="fxt_0000.nope")
    assert resp.status_code == 401 and "unknown, revoked or mistyped" in resp.json()["detail"]
    assert api.http.post("/login", json={"username": "ann"}).status_code == 422
    assert api.http.post("/login", content=b"ann", headers={
        "Content-Type": "text/plain"}).status_code == 415
    resp = api.http.post("/logout")
    assert (resp.status_code, resp.json()["detail"]) == (401, "no login session to end")
