"""Every exception class a callback can raise maps to the expected FIX outcome."""

from __future__ import annotations

import pytest
import quickfix as fix

from gateway.fix.codec import DecodeError
from gateway.fix.guard import fix_callback


@fix_callback
def _raise(exc: BaseException) -> str:
    raise exc


@pytest.mark.parametrize("exc", [
    fix.FieldNotFound(1), fix.IncorrectTagValue(54), fix.IncorrectDataFormat(38),
    fix.UnsupportedMessageType(), fix.RejectLogon("no"), fix.DoNotSend(),
])
def test_protocol_exceptions_pass_through(exc: BaseException) -> None:
    """quickfix turns these into Reject / BusinessMessageReject / logout itself."""
    with pytest.raises(type(exc)):
        _raise(exc)


@pytest.mark.parametrize(("decode", "expected"), [
    (DecodeError(1, "required tag missing"), fix.FieldNotFound),
    (DecodeError(38, "not a decimal: 'x'"), fix.IncorrectDataFormat),
    (DecodeError(54, "unsupported side '7'"), fix.IncorrectTagValue),
])
def test_decode_errors_become_session_rejects(decode: DecodeError, expected: type) -> None:
    """A decode problem becomes the exception quickfix answers with Reject(35=3)."""
    with pytest.raises(expected):
        _raise(decode)


def test_any_other_exception_is_contained() -> None:
    """A bug in a callback is logged and swallowed, never escaping to the binding."""
    assert _raise(ZeroDivisionError("boom")) is None
    assert _raise(KeyError("k")) is None
