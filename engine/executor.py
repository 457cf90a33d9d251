"""The executor port: where the per-account work of a decision runs (here, or in workers)."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from engine import eligibility, partition
from engine.model import Account
from engine.rulebook import Rulebook

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def prepare(self, rulebook: Rulebook) -> None:
        """Make `rulebook` available wherever partitions run (once per version)."""


class PartitionedExecutor(Executor, Protocol):
    """An executor with a fixed set of partitions that keep state between calls.

    `allocate` and `evaluate_eligibility` use an executor through this interface; one without
    partitions is run in-process instead.
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

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        return [fn(a) for a in args]

    def start_partitions(self, fn: Callable[[T], R], args: Sequence[T]
                         ) -> Callable[[], list[R]]:
        results = [fn(a) for a in args]
        return lambda: results


_spaces = itertools.count(1)


class InProcessPartitions:
    """`parts` partitions in the calling process, run one after the other.

    The partitioned path of a process pool — rounds across partitions, the global lot
    threshold, tie-break ranks that span partitions — without worker processes: each
    partition is installed in its own space (`engine.partition.run_in_space`), as a pool's
    hosted partition is. Its decisions are byte-identical to the in-process executor's.
    """

    def __init__(self, parts: int, min_accounts: int = 0,
                 first: tuple[int, int] | None = None) -> None:
        if parts < 1:
            raise ValueError(f"invalid `parts` less than 1, was {parts}")
        self.parts = parts
        self.min_accounts = min_accounts
        self.first = first
        n = next(_spaces)
        self.spaces = [f"inproc{n}-{k}" for k in range(parts)]
        weakref.finalize(self, _drop_spaces, list(self.spaces))

    @property
    def partitions(self) -> int:
        return self.parts

    def prepare(self, rulebook: Rulebook) -> None:
        eligibility.install(rulebook)

    def prepare_accounts(self, version: str, accounts: Sequence[Account]) -> None:
        slices = account_slices(version, accounts, self.parts, self.first)
        for space, arg in zip(self.spaces, slices, strict=True):
            if version not in partition.run_in_space(space, _installed, None):
                partition.run_in_space(space, partition.install_accounts, arg)

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        if len(args) != self.parts:
            raise ValueError(f"expected one argument per partition ({self.parts}), "
                             f"got {len(args)}")
        return [partition.run_in_space(space, fn, a)
                for space, a in zip(self.spaces, args, strict=True)]

    def start_partitions(self, fn: Callable[[T], R], args: Sequence[T]
                         ) -> Callable[[], list[R]]:
        results = self.call_partitions(fn, args)
        return lambda: results

    def close(self) -> None:
        _drop_spaces(self.spaces)


def _installed(_arg: None) -> list[str]:
    return partition.installed_books()


def _drop_spaces(spaces: Sequence[str]) -> None:
    for space in spaces:
        partition.drop_space(space)
