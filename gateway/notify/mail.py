"""E-mail delivery: one plain-text message per recipient, over SMTP with STARTTLS.

The connection is upgraded with STARTTLS before anything else (credentials included) is
sent, with an SSL context that verifies the server's certificate chain and host name
(the system trust store, or `smtp.ca_file` for a private CA). A server that does not
offer STARTTLS is an error, never a fall-back to plain text; only `starttls = false`
(a relay on the same host) skips it, and then `username` is refused by the settings.

Outcomes: the message accepted is delivered. A 5xx answer (recipient unknown, message
refused, authentication refused) is permanent; a 4xx answer and every connection, TLS
or timeout error are retried with backoff. The subject is the kind in brackets and the
notification's subject; the Message-ID is derived from the outbox row, so a retry that
did reach the server once is recognisable as the same message.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from gateway.notify.message import Delivery, DeliveryError, mail_text, one_line
from gateway.notify.settings import SmtpSettings


def render(delivery: Delivery, from_address: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = one_line(f"[{delivery.kind}] {delivery.subject}")
    message["From"] = from_address
    message["To"] = delivery.target
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = from_address.rsplit("@", 1)[-1]
    message["Message-ID"] = f"<fixalloc.{delivery.notification_id}.{delivery.id}@{domain}>"
    message["X-Fixalloc-Id"] = delivery.notification_id
    message["X-Fixalloc-Kind"] = delivery.kind
    if delivery.book:
        message["X-Fixalloc-Book"] = one_line(delivery.book)
    message.set_content(mail_text(delivery))
    return message


def _permanent(code: int) -> bool:
    return 500 <= code < 600


class MailChannel:
    def __init__(self, settings: SmtpSettings, password: str | None, *,
                 ca_file: Path | None = None) -> None:
        """`ca_file` is settings.ca_file resolved against the config's folder."""
        self._settings = settings
        self._password = password
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def deliver(self, delivery: Delivery) -> None:
        s = self._settings
        message = render(delivery, s.from_address)
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds) as smtp:
                smtp.ehlo()
                if s.starttls:
                    # Raises SMTPNotSupportedError when the server does not offer it.
                    smtp.starttls(context=self._tls)
                    smtp.ehlo()
                if s.username is not None and self._password is not None:
                    smtp.login(s.username, self._password)
                smtp.send_message(message, from_addr=s.from_address,
                                  to_addrs=[delivery.target])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise DeliveryError(f"SMTP {code}: recipient refused: {_text(text)}",
                                permanent=_permanent(code)) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}",
                                permanent=_permanent(exc.smtp_code)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # OSError covers refused connections, timeouts and certificate failures.
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


def _text(value: bytes | str) -> str:
    raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(raw.split())[:200]
