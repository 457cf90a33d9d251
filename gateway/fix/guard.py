"""Guard quickfix callbacks: FIX protocol exceptions pass, nothing else escapes.

Any other exception escaping a callback makes the binding call Py_Exit(1) on an engine
thread. The one failure we *want* to die on is a failed audit write: we exit with a named
code before the sequence number advances, and the counterparty resends after restart.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import quickfix as fix
import structlog

from gateway.errors import EXIT_AUDIT, AuditWriteError
from gateway.fix.codec import DecodeError

log = structlog.get_logger("fixalloc.fix")

PROTOCOL_EXCEPTIONS: tuple[type[BaseException], ...] = (
    fix.DoNotSend,
    fix.FieldNotFound,
    fix.IncorrectDataFormat,
    fix.IncorrectTagValue,
    fix.UnsupportedMessageType,
    fix.RejectLogon,
)

F = TypeVar("F", bound=Callable[..., Any])


def protocol_error(exc: DecodeError) -> BaseException:
    """Map a decode problem onto the exception quickfix turns into the right Reject(35=3)."""
    error: BaseException
    if exc.reason == "required tag missing":
        error = fix.FieldNotFound(exc.tag)
    elif exc.reason.startswith("not a"):
        error = fix.IncorrectDataFormat(exc.tag)
    else:
        error = fix.IncorrectTagValue(exc.tag)
    return error


def fix_callback(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except PROTOCOL_EXCEPTIONS:
            raise
        except DecodeError as exc:
            log.warning("fix.decode_error", callback=fn.__name__, tag=exc.tag, reason=exc.reason)
            raise protocol_error(exc) from None
        except AuditWriteError:
            log.critical("audit.write_failed", callback=fn.__name__, exit_code=EXIT_AUDIT)
            os._exit(EXIT_AUDIT)
        except Exception:
            # Escaping would make the binding call Py_Exit(1): log with context, return.
            log.exception("fix.callback_failed", callback=fn.__name__)
            return None

    return wrapper  # type: ignore[return-value]
