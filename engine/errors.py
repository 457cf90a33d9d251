"""Errors raised by the allocation engine."""

from __future__ import annotations


class AllocationError(ValueError):
    """The request cannot be allocated as given (bad input, not a bug)."""


class RulebookError(ValueError):
    """A rulebook mapping is invalid; `path` names the offending element."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class InvariantViolation(AssertionError):
    """A decision broke a hard contract; it must never leave the gateway."""
