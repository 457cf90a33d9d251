"""Process-pool executor for the engine (the only gateway module that knows about processes).

Workers come from a forkserver (never a fork of the threaded daemon). With `workers` >= 2
the calling process hosts partition 0 itself and `workers - 1` worker processes own the
others, each reached through its own pipe, so a decision's rounds (engine.partition) always
land where the accounts and the decision's state are. Workers get
the rulebook once per version (`prepare`, which the registry calls as soon as a version is
loaded) and each account book once per reference-data version (`prepare_accounts`), so a
block only sends block-level numbers and receives compact per-account columns.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import signal
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

import engine
from engine import eligibility, partition
from engine.executor import account_slices

T = TypeVar("T")
R = TypeVar("R")


class WorkerError(RuntimeError):
    """A worker process died or could not return its result."""


def _worker(conn: Connection) -> None:
    # The parent owns shutdown; a Ctrl-C in the terminal must not kill workers mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, arg, freeze = msg
        try:
            reply: tuple[bool, Any] = (True, fn(arg))
        except Exception as e:  # every failure goes back to the caller
            reply = (False, e)
        try:
            conn.send(reply)
        except Exception as e:  # e.g. an exception that does not pickle
            conn.send((False, WorkerError(f"{type(e).__name__}: {e}")))
        if freeze:
            # Reference data stays for the life of the worker: keep it out of the cyclic
            # garbage collector's scans.
            gc.freeze()


def _ping(_arg: object) -> int:
    return 0


_spaces = itertools.count(1)
# The hosted partition's size relative to a worker's, in hundredths. Measured at 100,000
# accounts on 2 cores, a worker process takes ~15% longer than the caller on the same number
# of accounts (its replies arrive after the caller's own part is done), so equal partitions
# leave the caller waiting; at 1.17 both finish together (docs/engine.md).
HOSTED_WEIGHT = 117


class ProcessPoolExecutorAdapter:
    """engine.Executor backed by worker processes; create it before any FIX thread starts."""

    def __init__(self, workers: int, mp_context: str = "forkserver",
                 min_accounts: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"invalid `workers` less than 1, was {workers}")
        self.workers = workers
        # Below this many accounts allocate() evaluates in-process (see docs/engine.md).
        self.min_accounts = engine.PARALLEL_MIN_ACCOUNTS if min_accounts is None else min_accounts
        # The caller only waits while the workers compute: with two or more partitions it
        # runs the first one itself, which saves a process and half the pipe traffic (and on
        # two cores keeps both busy instead of three processes sharing them).
        self._host = workers >= 2
        self._space = f"pool{next(_spaces)}"
        self._ctx = multiprocessing.get_context(mp_context)
        if mp_context == "forkserver":
            self._ctx.set_forkserver_preload(["engine"])
        self._lock = threading.Lock()
        self._version: str | None = None
        self._books: OrderedDict[str, None] = OrderedDict()
        self._procs: list[BaseProcess] = []
        self._conns: list[Connection] = []
        # What this process keeps for its partition goes with the pool, closed or not.
        weakref.finalize(self, partition.drop_space, self._space)
        self._start()

    def _start(self) -> None:
        for i in range(self.workers - self._host):
            parent, child = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(  # type: ignore[attr-defined]
                target=_worker, args=(child,), daemon=True, name=f"fixalloc-engine-{i}")
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        # Start the workers now rather than on the first real block.
        self._call(_ping, [None] * self.workers)

    def _stop(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def _call(self, fn: Callable[[Any], Any], args: Sequence[Any], freeze: bool = False
              ) -> list[Any]:
        """Run args[i] in partition i (see `_remote`), then collect every result in order."""
        local, remote = self._remote(args)
        self._send(fn, remote, freeze)
        return self._collect(fn, local, len(remote))

    def _remote(self, args: Sequence[Any]) -> tuple[list[Any], Sequence[Any]]:
        """Split args into this process's (partition 0 when hosted) and the workers'."""
        if self._host and args:
            return [args[0]], args[1:]
        return [], args

    def _collect(self, fn: Callable[[Any], Any], local: list[Any], n: int) -> list[Any]:
        """Run the hosted partition's call here, then wait for the `n` workers' replies."""
        if not local:
            return self._recv(n)
        try:
            mine = partition.run_in_space(self._space, fn, local[0])
        except BaseException:
            # The workers' replies must still be read, or the next call would get them.
            with contextlib.suppress(Exception):
                self._recv(n)
            raise
        return [mine, *self._recv(n)]

    def _send(self, fn: Callable[[Any], Any], args: Sequence[Any], freeze: bool = False
              ) -> None:
        """Send args[k] to worker k."""
        try:
            if len(args) > 1 and all(a is args[0] for a in args):
                # The same message for every worker (a block's numbers): pickle it once.
                buf = ForkingPickler.dumps((fn, args[0], freeze))
                for conn in self._conns[:len(args)]:
                    conn.send_bytes(buf)
                return
            for conn, a in zip(self._conns[:len(args)], args, strict=True):
                conn.send((fn, a, freeze))
        except OSError as e:
            self._restart()
            raise WorkerError(f"engine worker failed: {e}") from e

    def _recv(self, n: int) -> list[Any]:
        try:
            replies = [conn.recv() for conn in self._conns[:n]]
        except (EOFError, OSError) as e:
            self._restart()
            raise WorkerError(f"engine worker failed: {e}") from e
        for ok, value in replies:
            if not ok:
                raise value
        return [value for _ok, value in replies]

    def _restart(self) -> None:
        # A worker died: start afresh (nothing installed) and let the caller retry.
        self._stop()
        self._version = None
        self._books.clear()
        self._start()

    def _hosted_share(self) -> tuple[int, int] | None:
        if not self._host:
            return None
        return HOSTED_WEIGHT, HOSTED_WEIGHT + 100 * (self.workers - 1)

    @property
    def rulebook_version(self) -> str | None:
        return self._version

    @property
    def partitions(self) -> int:
        return self.workers

    def prepare(self, rulebook: engine.Rulebook) -> None:
        """Ensure every worker holds `rulebook` (compiled once per version per worker)."""
        with self._lock:
            if rulebook.version == self._version:
                return
            self._call(eligibility.install, [rulebook] * self.workers, freeze=True)
            self._version = rulebook.version

    def prepare_accounts(self, version: str, accounts: Sequence[engine.Account]) -> None:
        """Send each worker its partition of an account book, once per book version.

        Workers keep the last `engine.partition.MAX_BOOKS` books, as this record does.
        """
        with self._lock:
            if version in self._books:
                return
            self._call(partition.install_accounts,
                       account_slices(version, accounts, self.workers, self._hosted_share()),
                       freeze=True)
            self._books[version] = None
            while len(self._books) > partition.MAX_BOOKS:
                self._books.popitem(last=False)

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        if len(args) != self.workers:
            raise ValueError(f"expected one argument per partition ({self.workers}), "
                             f"got {len(args)}")
        with self._lock:
            return self._call(fn, args)

    def start_partitions(self, fn: Callable[[T], R], args: Sequence[T]
                         ) -> Callable[[], list[R]]:
        """Send the call now; the returned function waits for the results.

        Other calls wait until the results are collected, so the caller must collect.
        """
        if len(args) != self.workers:
            raise ValueError(f"expected one argument per partition ({self.workers}), "
                             f"got {len(args)}")
        self._lock.acquire()
        local, remote = self._remote(args)
        try:
            self._send(fn, remote)
        except BaseException:
            self._lock.release()
            raise

        def collect() -> list[R]:
            # The hosted partition runs here, while the workers compute theirs.
            try:
                return self._collect(fn, local, len(remote))
            finally:
                self._lock.release()

        return collect

    def close(self) -> None:
        with self._lock:
            self._stop()
            partition.drop_space(self._space)

    def __enter__(self) -> ProcessPoolExecutorAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
