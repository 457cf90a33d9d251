"""Webhook signatures (checked by an independent computation) and the rendered forms."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from gateway.notify import webhook
from gateway.notify.mail import render
from gateway.notify.message import Delivery, mail_text, summary_json, webhook_body
from gateway.notify.webhook import WebhookChannel, display_url, sign

CREATED = datetime(2026, 11, 20, 15, 4, 5, 123456, tzinfo=UTC)


def _delivery(**overrides: Any) -> Delivery:
    summary = json.loads(summary_json({
        "alloc_id": "FA1-J1", "accounts_allocated": 195, "avg_px": Decimal("190.4450"),
        "exceptions": [{"account": "SMA0042", "reason": "issuer cap 3% of NAV"},
                       "SMA0034 excluded: no IT stocks"]}))
    values: dict[str, Any] = {
        "id": 7, "notification_id": "0f0e0d0c-0000-4000-8000-000000000001",
        "kind": "allocation_sent", "book": "SMA-CORE", "subject": "FA1 allocated: 500,000 AAPL",
        "summary": summary, "text": "The J went to BRKA.", "link": None, "created_at": CREATED,
        "channel": "webhook", "target": "https://pm.example.com/hooks/T0KEN", "attempts": 1}
    values.update(overrides)
    return Delivery(**values)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    secret, timestamp, body = b"k3y", "1795259733", b'{"a":1}'
    expected = hmac.new(secret, b"1795259733.{\"a\":1}", hashlib.sha256).hexdigest()
    assert sign(secret, timestamp, body) == f"sha256={expected}"
    assert sign(b"other", timestamp, body) != sign(secret, timestamp, body)
    assert sign(secret, "1795259734", body) != sign(secret, timestamp, body)


def test_channel_headers_sign_the_exact_body() -> None:
    channel = WebhookChannel({}, b"shared", timeout=1, now=lambda: 1795259733.9)
    d = _delivery()
    body = webhook_body(d)
    headers = channel.headers(d, body)
    assert headers["X-Fixalloc-Timestamp"] == "1795259733"
    mac = hmac.new(b"shared", b"1795259733." + body, hashlib.sha256).hexdigest()
    assert headers["X-Fixalloc-Signature"] == "sha256=" + mac
    assert headers["X-Fixalloc-Id"] == d.notification_id
    assert headers["X-Fixalloc-Delivery"] == "7" and headers["X-Fixalloc-Attempt"] == "1"
    assert headers["Content-Type"] == "application/json"


def test_a_route_with_its_own_secret_signs_with_it() -> None:
    d = _delivery()
    channel = WebhookChannel({d.target: b"own"}, b"shared", timeout=1, now=lambda: 100.0)
    body = webhook_body(d)
    assert channel.headers(d, body)["X-Fixalloc-Signature"] == sign(b"own", "100", body)
    other = _delivery(target="https://elsewhere.example/h")
    assert channel.headers(other, body)["X-Fixalloc-Signature"] == sign(b"shared", "100", body)


def test_the_documented_verification_snippet_verifies() -> None:
    """The 5-line snippet in webhook.py's docstring accepts our request, refuses a forgery."""
    doc = webhook.__doc__ or ""
    block = re.search(r"::\n\n((?:    .*\n|\n)+)", doc.split("Signature.")[1])
    assert block is not None
    code = "\n".join(line[4:] for line in block.group(1).splitlines())
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    verify = namespace["verify"]
    import time

    d = _delivery()
    body = webhook_body(d)
    headers = WebhookChannel({}, b"shared", timeout=1).headers(d, body)
    assert verify(b"shared", headers, body)
    assert not verify(b"wrong", headers, body)
    assert not verify(b"shared", headers, body.replace(b"500,000", b"600,000"))
    stale = {**headers, "X-Fixalloc-Timestamp": str(int(time.time()) - 3600)}
    stale["X-Fixalloc-Signature"] = sign(b"shared", stale["X-Fixalloc-Timestamp"], body)
    assert not verify(b"shared", stale, body)


def test_body_carries_the_documented_fields_and_is_stable() -> None:
    d = _delivery()
    body = webhook_body(d)
    assert body == webhook_body(_delivery(attempts=5))  # the same bytes on every retry
    payload = json.loads(body)
    assert set(payload) == {"id", "kind", "book", "subject", "summary", "text", "link",
                            "created_at"}
    assert payload["id"] == d.notification_id
    assert payload["created_at"] == "2026-11-20T15:04:05.123456+00:00"
    assert payload["summary"]["avg_px"] == "190.4450"  # Decimal as its exact string
    assert b" " not in body.split(b'"subject"')[0]  # compact separators


def test_logs_never_show_a_webhook_path() -> None:
    assert display_url("https://hooks.example.com:8443/services/T0KEN?x=1") == \
        "https://hooks.example.com:8443/…"
    assert "T0KEN" not in display_url("https://hooks.example.com/T0KEN")


def test_mail_subject_is_prefixed_with_the_kind_and_has_no_line_breaks() -> None:
    d = _delivery(channel="email", target="pm@example.com",
                  subject="FA1 allocated\r\nBcc: attacker@example.com")
    message = render(d, "fixalloc@example.com")
    assert message["Subject"] == "[allocation_sent] FA1 allocated Bcc: attacker@example.com"
    assert message["To"] == "pm@example.com" and message["From"] == "fixalloc@example.com"
    assert message["Message-ID"] == f"<fixalloc.{d.notification_id}.7@example.com>"
    assert message["Bcc"] is None


def test_mail_body_lists_the_summary_and_the_flagged_exceptions() -> None:
    text = mail_text(_delivery(link="https://fixalloc.example/approve/FA1"))
    assert text.startswith("The J went to BRKA.\n\nOpen: https://fixalloc.example/approve/FA1")
    assert "Summary\n" in text
    assert re.search(r"^  avg_px\s+190\.4450$", text, re.M)
    assert "Flagged exceptions (2)\n" in text
    assert "  - account: SMA0042; reason: issuer cap 3% of NAV\n" in text
    assert "  - SMA0034 excluded: no IT stocks\n" in text
    assert "exceptions  [" not in text  # not repeated among the summary facts
    none = mail_text(_delivery(summary={"alloc_id": "X", "exceptions": []}))
    assert "Flagged exceptions: none" in none


@pytest.mark.parametrize(("summary", "shown"), [
    ({}, "fixalloc notification"),
    ({"exceptions": "one odd string"}, "Flagged exceptions (1)\n  - one odd string\n"),
    ({"nested": {"b": 1, "a": [1, 2]}}, 'nested  {"a": [1, 2], "b": 1}'),
])
def test_mail_body_copes_with_odd_summaries(summary: dict[str, Any], shown: str) -> None:
    assert shown in mail_text(_delivery(summary=summary, text=""))
