"""Mask secrets in raw FIX: Password(554) and NewPassword(925) never reach a log or a table."""

from __future__ import annotations

import re

SECRET_TAGS = (554, 925)
_SECRET = re.compile(r"(^|\x01|\|)(" + "|".join(str(t) for t in SECRET_TAGS) + r")=[^\x01|]*")
_SECRET_BYTES = re.compile(rb"(^|\x01)(" + b"|".join(str(t).encode() for t in SECRET_TAGS)
                           + rb")=[^\x01]*")


def redact(raw: str) -> str:
    return _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", raw)


def redact_bytes(raw: bytes) -> bytes:
    """The same masking on the wire bytes; every other byte is kept exactly."""
    return _SECRET_BYTES.sub(lambda m: m.group(1) + m.group(2) + b"=***", raw)
