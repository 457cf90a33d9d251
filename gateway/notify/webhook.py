"""Webhook delivery: a signed JSON POST.

The body is compact JSON with sorted keys, UTF-8::

    {"book": "SMA-CORE", "created_at": "2026-11-20T15:04:05.123456+00:00",
     "id": "<notification uuid>", "kind": "allocation_sent", "link": null,
     "subject": "...", "summary": {...}, "text": "..."}

`id` is the notification's id: the same on every retry and for every receiver of that
notification, so a receiver de-duplicates on it (delivery is at least once).

Signature. Each attempt sends

* ``X-Fixalloc-Timestamp``: the attempt's time, whole seconds since the Unix epoch;
* ``X-Fixalloc-Signature``: ``sha256=`` + the lowercase hex HMAC-SHA256, keyed with the
  shared secret (the UTF-8 bytes of the variable `webhook_secret_env` names), of the ASCII
  timestamp, one ``.``, then the raw body bytes exactly as received;

plus ``X-Fixalloc-Id`` (the notification id), ``X-Fixalloc-Delivery`` (the outbox row id)
and ``X-Fixalloc-Attempt``. A receiver recomputes the HMAC over the bytes it received
(never over re-serialised JSON), compares in constant time, and refuses a timestamp more
than a few minutes off its clock, which stops a captured request being replayed later::

    import hashlib, hmac, time
    def verify(secret: bytes, headers, body: bytes, tolerance: int = 300) -> bool:
        ts = headers["X-Fixalloc-Timestamp"]
        mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(ts)) <= tolerance
        return fresh and hmac.compare_digest("sha256=" + mac, headers["X-Fixalloc-Signature"])

Outcomes: any 2xx is delivered. 408 (timeout), 429 (rate limited), every 5xx and every
connection, TLS or timeout error are retried with backoff (a `Retry-After` in seconds on
429/503 is honoured, up to the backoff cap). Any other 4xx is a permanent failure: the
receiver has said the request itself is wrong (bad signature, unknown path), and sending
the same bytes again cannot change its answer. A 3xx is permanent too: redirects are not
followed, since the signed body would then go to a URL nobody configured. Fix the
receiver or the route; failed rows stay in the outbox with their last error.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gateway.notify.message import Delivery, DeliveryError, webhook_body

TIMESTAMP_HEADER = "X-Fixalloc-Timestamp"
SIGNATURE_HEADER = "X-Fixalloc-Signature"
_RETRIED = {408, 429}
_ERROR_TEXT = 200


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Fixalloc-Signature value for this body sent at this timestamp."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def display_url(url: str) -> str:
    """scheme://host[:port]/… : webhook paths often carry tokens, logs never show them."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


class WebhookChannel:
    def __init__(self, secrets: Mapping[str, bytes], default_secret: bytes | None, *,
                 timeout: float, ca_file: Path | None = None,
                 now: Callable[[], float] | None = None) -> None:
        """`secrets` maps a route's URL to its own key; other URLs use `default_secret`."""
        self._secrets = dict(secrets)
        self._default = default_secret
        self._timeout = timeout
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._now = now or time.time

    def headers(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        secret = self._secrets.get(delivery.target, self._default)
        if secret is None:
            raise DeliveryError("no webhook secret for this URL in the current configuration")
        timestamp = str(int(self._now()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "fixalloc-notify/1",
            "X-Fixalloc-Id": delivery.notification_id,
            "X-Fixalloc-Delivery": str(delivery.id),
            "X-Fixalloc-Attempt": str(delivery.attempts),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }

    def deliver(self, delivery: Delivery) -> None:
        body = webhook_body(delivery)
        headers = self.headers(delivery, body)
        try:
            # A client per delivery: deliveries run on several threads, and a notification
            # rate does not need a shared connection pool. HTTPS_PROXY/NO_PROXY apply.
            with httpx.Client(timeout=self._timeout, verify=self._tls,
                              follow_redirects=False) as client:
                response = client.post(delivery.target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(self._scrub(f"{type(exc).__name__}: {exc}",
                                            delivery.target)) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = " ".join(response.text[:_ERROR_TEXT].split())
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status in _RETRIED or status >= 500:
            raise DeliveryError(message, retry_after=_retry_after(response))
        raise DeliveryError(message, permanent=True)

    @staticmethod
    def _scrub(text: str, url: str) -> str:
        return text.replace(url, display_url(url))
