"""Mask secrets in raw FIX text: Password(554) and NewPassword(925) never reach a log."""

from __future__ import annotations

import re

SECRET_TAGS = (554, 925)
_SECRET = re.compile(r"(^|\x01|\|)(" + "|".join(str(t) for t in SECRET_TAGS) + r")=[^\x01|]*")


def redact(raw: str) -> str:
    return _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", raw)
