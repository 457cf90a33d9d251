"""Notifications end to end on 127.0.0.1: a real HTTP receiver, a real SMTP server.

The webhook receiver is `http.server` in a thread: it checks every request's signature by
its own computation and can fail the first N requests, fail them all, or hold one open.
The mail server is aiosmtpd with STARTTLS required, a certificate from a throwaway CA and
AUTH allowed only over TLS. The outbox runs on SQLite and on the test PostgreSQL server,
migrated by Alembic to head (0005 included).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gateway.alerts import Alerts
from gateway.clock import SystemClock
from gateway.notify.message import Notification
from gateway.notify.notifier import Notifier
from gateway.notify.outbox import Outbox
from gateway.notify.settings import NotificationSettings
from gateway.persistence.store import Database
from gateway.ports import free_port
from tests.support.certs import Pki, make_pki
from tests.support.eventually import eventually

SECRET_ENV, SECRET = "FIXALLOC_TEST_HOOK_SECRET", "wh-s3cret"
PASSWORD_ENV, PASSWORD = "FIXALLOC_TEST_SMTP_PASSWORD", "mail-pa55"
FAST = {"max_attempts": 4, "first_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}


# -- the webhook receiver ---------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class HookServer:
    secret: bytes
    fail_first: int = 0
    status: int = 204
    """The answer once the first `fail_first` requests have had 503."""
    hold: threading.Event | None = None
    """When set to an unset Event, each request waits for it before answering."""
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/core"

    def answer(self, received: Received) -> int:
        self.requests.append(received)
        if self.hold is not None:
            self.hold.wait(10)
        if not received.signature_ok:
            return 401
        return 503 if len(self.requests) <= self.fail_first else self.status


def _verify(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's own check, written from the documented scheme."""
    timestamp = headers.get("X-Fixalloc-Timestamp", "")
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 300
    return fresh and hmac.compare_digest("sha256=" + expected,
                                         headers.get("X-Fixalloc-Signature", ""))


@pytest.fixture
def hook() -> Iterator[HookServer]:
    state = HookServer(secret=SECRET.encode())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            code = state.answer(Received(self.path, headers, body,
                                         _verify(state.secret, headers, body)))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        state.server.shutdown()
        state.server.server_close()
        thread.join(5)


# -- the mail server --------------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    over_tls: bool
    authenticated: bool


class MailHandler:
    def __init__(self) -> None:
        self.received: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                                  message_from_bytes(envelope.original_content),
                                  session.ssl is not None, bool(session.authenticated)))
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"fixalloc"
          and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextmanager
def smtp_server(cert: Path, key: Path) -> Iterator[tuple[Controller, MailHandler]]:
    """aiosmtpd on 127.0.0.1: STARTTLS required before anything else, AUTH only over TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    handler = MailHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            tls_context=context, require_starttls=True,
                            authenticator=_authenticate, auth_require_tls=True)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


# -- the notifier -----------------------------------------------------------------------


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def settings(*, webhook: str | None = None, smtp: dict[str, Any] | None = None,
             **retry: Any) -> NotificationSettings:
    routes: list[dict[str, Any]] = []
    if webhook:
        routes.append({"kinds": "*", "books": ["SMA-CORE"], "webhook_url": webhook})
    if smtp:
        routes.append({"kinds": ["allocation_sent", "exception_opened"],
                       "email_to": ["pm@example.com", "compliance@example.com"]})
    return NotificationSettings.model_validate({
        "webhook_secret_env": SECRET_ENV, "webhook_timeout_seconds": 5,
        "smtp": smtp, "retry": {**FAST, **retry}, "poll_seconds": 1, "routes": routes})


@contextmanager
def running(notifier: Notifier) -> Iterator[Notifier]:
    notifier.start()
    try:
        yield notifier
    finally:
        notifier.stop()


def allocation_sent(book: str = "SMA-CORE") -> Notification:
    return Notification(
        kind="allocation_sent", book=book, subject="FA20261121A20A61E67B allocated",
        summary={"alloc_id": "FA20261121A20A61E67B-J1", "filled": "500000",
                 "accounts_allocated": 195, "accounts": 200,
                 "exceptions": [{"account": "SMA0042", "code": "ISSUER_CAP",
                                 "text": "caps any single issuer at 3% of NAV"},
                                {"account": "SMA0034", "code": "SECTOR_EXCLUDED",
                                 "text": "holds no information technology stocks"}]},
        text="The J went to BRKA; 2 accounts were capped or excluded.")


def state_of(db: Database, nid: str) -> list[tuple[str, str, int]]:
    return [(r["target"], r["state"], r["attempts"]) for r in Outbox(db).rows(nid)]


def all_in(db: Database, nid: str, state: str) -> list[dict[str, Any]] | None:
    """The notification's rows once every one of them is in `state`, else None."""
    rows = Outbox(db).rows(nid)
    return rows if rows and all(r["state"] == state for r in rows) else None


def delivered(db: Database, nid: str) -> bool:
    return all_in(db, nid, "delivered") is not None


# -- the tests --------------------------------------------------------------------------


def test_webhook_failing_first_is_retried_then_delivered_signed(db: Database,
                                                                hook: HookServer) -> None:
    hook.fail_first = 2
    with running(Notifier(settings(webhook=hook.url), db)) as notifier:
        nid = notifier.notify(allocation_sent())
        assert nid is not None
        eventually(lambda: delivered(db, nid), timeout=15,
                   description="the webhook delivered after two 503s")
    (row,) = Outbox(db).rows(nid)
    assert row["attempts"] == 3 and row["last_error"] is None
    assert row["delivered_at"] is not None and row["delivered_at"] >= row["created_at"]
    assert len(hook.requests) == 3
    assert all(r.signature_ok for r in hook.requests), "every attempt is signed"
    assert [r.headers["X-Fixalloc-Attempt"] for r in hook.requests] == ["1", "2", "3"]
    assert {r.body for r in hook.requests} == {hook.requests[0].body}, "the same bytes"
    assert hook.requests[0].path == "/hooks/core"
    payload = json.loads(hook.requests[-1].body)
    assert payload["id"] == nid and payload["kind"] == "allocation_sent"
    assert payload["book"] == "SMA-CORE" and payload["subject"].endswith("allocated")
    assert payload["summary"]["exceptions"][0]["account"] == "SMA0042"
    assert payload["text"].startswith("The J went to BRKA")
    assert payload["created_at"] == row["created_at"].isoformat()


def test_email_over_starttls_to_each_recipient(db: Database, pki: Pki) -> None:
    with smtp_server(pki.server_cert, pki.server_key) as (controller, mailbox):
        smtp = {"host": "127.0.0.1", "port": controller.port,
                "from_address": "fixalloc@example.com", "username": "fixalloc",
                "password_env": PASSWORD_ENV, "ca_file": str(pki.ca), "timeout_seconds": 5}
        with running(Notifier(settings(smtp=smtp), db)) as notifier:
            nid = notifier.notify(allocation_sent("SMA-GROWTH"))
            assert nid is not None
            eventually(lambda: delivered(db, nid), timeout=15,
                       description="both e-mails delivered")
    assert sorted(m.rcpt_tos[0] for m in mailbox.received) == [
        "compliance@example.com", "pm@example.com"]
    for mail in mailbox.received:
        assert mail.over_tls and mail.authenticated, "STARTTLS, then AUTH, then the message"
        assert mail.mail_from == "fixalloc@example.com"
        message = mail.message
        assert message["Subject"] == "[allocation_sent] FA20261121A20A61E67B allocated"
        assert message["To"] == mail.rcpt_tos[0]
        assert message["X-Fixalloc-Id"] == nid
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        body = payload.decode()
        assert body.startswith("The J went to BRKA; 2 accounts were capped or excluded.")
        assert "accounts_allocated  195" in body
        assert "Flagged exceptions (2)" in body
        assert "  - account: SMA0042; code: ISSUER_CAP; text: caps any single issuer" in body


def test_email_to_a_server_we_cannot_verify_is_never_sent(db: Database, pki: Pki) -> None:
    """A certificate from another CA fails verification: no message, the row records why."""
    with smtp_server(pki.stranger_cert, pki.stranger_key) as (controller, mailbox):
        smtp = {"host": "127.0.0.1", "port": controller.port,
                "from_address": "fixalloc@example.com", "username": "fixalloc",
                "password_env": PASSWORD_ENV, "ca_file": str(pki.ca), "timeout_seconds": 5}
        with running(Notifier(settings(smtp=smtp, max_attempts=2), db)) as notifier:
            nid = notifier.notify(allocation_sent())
            assert nid is not None
            rows = eventually(lambda: all_in(db, nid, "failed"), timeout=15,
                              description="both e-mails failed")
    assert rows is not None
    assert mailbox.received == []
    for row in rows:
        assert row["attempts"] == 2
        assert "CERTIFICATE_VERIFY_FAILED" in row["last_error"]


def test_a_new_notifier_delivers_what_the_last_process_left(database_url: str,
                                                            db: Database,
                                                            hook: HookServer) -> None:
    hook.status = 503  # down while the first process runs
    first = Notifier(settings(webhook=hook.url, max_attempts=10), db)
    with running(first):
        tried = first.notify(allocation_sent())
        assert tried is not None
        eventually(lambda: state_of(db, tried)[0][2] >= 1, timeout=15,
                   description="the first process tried once")
    untried = first.notify(allocation_sent())  # written after its worker stopped
    assert untried is not None
    db.dispose()
    assert [s for _, s, _ in state_of(db, tried) + state_of(db, untried)] == ["pending"] * 2

    hook.status = 204  # the receiver is back; a new process on the same database
    again = Database(database_url)
    try:
        with running(Notifier(settings(webhook=hook.url, max_attempts=10), again)):
            eventually(lambda: delivered(again, tried) and delivered(again, untried),
                       timeout=15, description="the new process delivered both")
        answered = [json.loads(r.body)["id"] for r in hook.requests]
        assert answered[-2:] in ([tried, untried], [untried, tried])
        assert state_of(again, untried)[0][2] == 1, "delivered at its first attempt"
        assert state_of(again, tried)[0][2] >= 2, "its attempts carried over"
    finally:
        again.dispose()


def test_an_endpoint_failing_forever_ends_failed_without_blocking_notify(
        db: Database, hook: HookServer) -> None:
    hook.status = 500
    hook.hold = threading.Event()  # the first request hangs until we let it go
    alerts = Alerts(db, SystemClock())
    with running(Notifier(settings(webhook=hook.url, max_attempts=3), db,
                          alerts=alerts)) as notifier:
        started = time.monotonic()
        nid = notifier.notify(allocation_sent())
        returned_after = time.monotonic() - started
        assert nid is not None
        eventually(lambda: hook.requests, timeout=10,
                   description="the receiver is holding the first attempt")
        assert state_of(db, nid) == [(hook.url, "pending", 1)], \
            "notify() returned while its delivery was still in flight"
        hook.hold.set()
        eventually(lambda: state_of(db, nid)[0][1] == "failed", timeout=15,
                   description="failed after max attempts")
    assert returned_after < 1.0
    (row,) = Outbox(db).rows(nid)
    assert row["attempts"] == 3 and row["last_error"] == "HTTP 500"
    assert row["delivered_at"] is None
    assert len(hook.requests) == 3
    (event,) = db.events("alert.notification_failed")
    detail = json.loads(event["detail_json"])
    assert detail["notification_id"] == nid and detail["attempts"] == 3
    assert "/hooks/core" not in event["detail_json"], "the webhook path is not logged"


def test_a_4xx_is_not_retried_and_a_dead_port_is(db: Database, hook: HookServer) -> None:
    hook.status = 404
    dead = f"http://127.0.0.1:{free_port()}/hooks/core"
    s = NotificationSettings.model_validate({
        "webhook_secret_env": SECRET_ENV, "webhook_timeout_seconds": 2,
        "retry": {**FAST, "max_attempts": 3},
        "routes": [{"kinds": ["sweep_report"], "webhook_url": hook.url},
                   {"kinds": ["sweep_report"], "webhook_url": dead}]})
    with running(Notifier(s, db)) as notifier:
        nid = notifier.notify(Notification(kind="sweep_report", book=None,
                                           subject="End of day", summary={"exceptions": []}))
        assert nid is not None
        rows = eventually(lambda: all_in(db, nid, "failed"), timeout=15,
                          description="both deliveries failed")
    assert rows is not None
    by_target = {r["target"]: r for r in rows}
    assert by_target[hook.url]["attempts"] == 1 and by_target[hook.url]["last_error"] == "HTTP 404"
    assert by_target[dead]["attempts"] == 3
    assert by_target[dead]["last_error"].startswith("ConnectError")
