"""The executor port: how chunks of accounts are evaluated (here, or in pool workers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from engine import eligibility
from engine.rulebook import Rulebook

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def prepare(self, rulebook: Rulebook) -> None:
        """Make `rulebook` available wherever chunks run (once per version)."""

    def map_chunks(self, fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
        """Apply `fn` to every chunk and return the results in chunk order."""
        ...


class InProcessExecutor:
    """Runs chunks serially in the calling process; the default and the reference."""

    def prepare(self, rulebook: Rulebook) -> None:
        eligibility.install(rulebook)

    def map_chunks(self, fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
        return [fn(c) for c in chunks]
