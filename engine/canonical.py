"""Canonical JSON: the byte-exact form decisions and rulebooks are hashed and stored in."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        # Normalising would turn 100 into 1E+2; a fixed-point string keeps it readable
        # while staying exact and stable for the same value and exponent.
        return format(obj, "f")
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, frozenset | set):
        return sorted(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot canonicalise {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Serialise with sorted keys, no whitespace, Decimals as strings."""
    return json.dumps(
        obj,
        default=_default,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
