"""Retry policy for transient database errors (a dropped connection, a busy SQLite file)."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

transient = retry(
    retry=retry_if_exception_type((OperationalError, InterfaceError)),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.05, max=1.0),
    reraise=True,
)
