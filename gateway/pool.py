"""Process-pool executor for the engine (the only gateway module that knows about processes).

Workers come from a forkserver (never a fork of the threaded daemon) and get the rulebook
once per version through the pool initializer, which also compiles its custom rules. A
new rulebook version therefore gets a fresh pool; the registry calls `prepare` as soon as
the version is loaded, so that cost is paid before the next block needs it.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

import engine
from engine import eligibility

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(rulebook: engine.Rulebook | None) -> None:
    # The parent owns shutdown; a Ctrl-C in the terminal must not kill workers mid-chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if rulebook is not None:
        eligibility.install(rulebook)


def _warm_up() -> int:
    return 0


class ProcessPoolExecutorAdapter:
    """engine.Executor backed by a process pool; create it before any FIX thread starts."""

    def __init__(self, workers: int, mp_context: str = "forkserver",
                 min_accounts: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"invalid `workers` less than 1, was {workers}")
        self.workers = workers
        # Below this many accounts allocate() evaluates in-process (see docs/engine.md).
        self.min_accounts = engine.PARALLEL_MIN_ACCOUNTS if min_accounts is None else min_accounts
        self._ctx = multiprocessing.get_context(mp_context)
        if mp_context == "forkserver":
            self._ctx.set_forkserver_preload(["engine"])
        self._lock = threading.Lock()
        self._version: str | None = None
        self._pool = self._start(None)

    def _start(self, rulebook: engine.Rulebook | None) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(rulebook,))
        # Start the workers now rather than on the first real block.
        futures: list[Future[int]] = [pool.submit(_warm_up) for _ in range(self.workers)]
        for f in futures:
            f.result()
        return pool

    @property
    def rulebook_version(self) -> str | None:
        return self._version

    def prepare(self, rulebook: engine.Rulebook) -> None:
        """Ensure every worker holds `rulebook`; replaces the pool when the version changes."""
        with self._lock:
            if rulebook.version == self._version:
                return
            old = self._pool
            self._pool = self._start(rulebook)
            self._version = rulebook.version
        old.shutdown(wait=False, cancel_futures=False)

    def map_chunks(self, fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
        with self._lock:
            pool = self._pool
        return list(pool.map(fn, chunks))

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessPoolExecutorAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
