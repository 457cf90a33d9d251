"""The executor port: where the per-account work of a decision runs (here, or in workers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from engine import eligibility, partition
from engine.model import Account
from engine.rulebook import Rulebook

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def prepare(self, rulebook: Rulebook) -> None:
        """Make `rulebook` available wherever chunks run (once per version)."""

    def map_chunks(self, fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
        """Apply `fn` to every chunk and return the results in chunk order."""
        ...


class PartitionedExecutor(Executor, Protocol):
    """An executor with a fixed set of partitions that keep state between calls.

    `allocate` and `evaluate_eligibility` use an executor through this interface; one that
    only has `prepare` and `map_chunks` is run in-process instead.
    """

    @property
    def partitions(self) -> int:
        """How many partitions an account book is cut into (one per worker)."""
        ...

    def prepare_accounts(self, version: str, accounts: Sequence[Account]) -> None:
        """Hold `accounts` (a book in account-id order) under `version`.

        Partition i gets a contiguous slice (`account_slices`: equal slices unless the
        executor sizes the first one differently) through `engine.partition.install_accounts`.
        A version already held is not sent again.
        """

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        """Run `fn(args[i])` in partition i, concurrently; results in partition order.

        Module state a call leaves behind in partition i is seen by the next call there.
        """
        ...

    def start_partitions(self, fn: Callable[[T], R], args: Sequence[T]
                         ) -> Callable[[], list[R]]:
        """`call_partitions`, split in two: start now, return a function that waits for the
        results (so the caller can work meanwhile). The caller must call it."""
        ...


def account_slices(version: str, accounts: Sequence[Account], parts: int,
                   first: tuple[int, int] | None = None
                   ) -> list[tuple[str, int, tuple[Account, ...]]]:
    """The `install_accounts` argument for every partition.

    Partitions are equal unless `first` = (num, den): partition 0 then gets num/den of the
    accounts and the others share the rest equally.
    """
    n = len(accounts)
    if first is None or parts < 2:
        bounds = [k * n // parts for k in range(parts + 1)]
    else:
        head = n * first[0] // first[1]
        bounds = [0] + [head + k * (n - head) // (parts - 1) for k in range(parts)]
    return [(version, bounds[k], tuple(accounts[bounds[k]:bounds[k + 1]]))
            for k in range(parts)]


class InProcessExecutor:
    """Runs everything serially in the calling process (one partition); the reference."""

    partitions = 1

    def prepare(self, rulebook: Rulebook) -> None:
        eligibility.install(rulebook)

    def prepare_accounts(self, version: str, accounts: Sequence[Account]) -> None:
        if version not in partition.installed_books():
            partition.install_accounts((version, 0, tuple(accounts)))

    def map_chunks(self, fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
        return [fn(c) for c in chunks]

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        return [fn(a) for a in args]

    def start_partitions(self, fn: Callable[[T], R], args: Sequence[T]
                         ) -> Callable[[], list[R]]:
        results = [fn(a) for a in args]
        return lambda: results
