"""Dask distributed executor for the engine (the only gateway module that imports dask).

The engine's partitions run on the workers of a Dask cluster instead of local processes:
partition k is pinned to one worker (`workers=[addr]`, `allow_other_workers=False`), and
every call for it runs there, so the module state a call leaves (engine.partition's
installed account slices, a decision's open state, the compiled rulebook) is seen by the
next call there, exactly as in `gateway.pool`. Like the pool, the rulebook is sent once per
version (`prepare`) and each account book once per reference-data version
(`prepare_accounts`, each slice scattered straight to its worker), so a decision's rounds
only carry block-level numbers.

Workers must run one thread each (`dask worker ADDR --nthreads 1`): partition state is
module-global in the worker process, and the engine's work is pure Python that holds the
GIL, so more threads add no speed, only calls of other clients interleaving with ours over
that state (and its bounded caches). A worker with more threads is refused.

A worker that leaves (killed, lost, restarted by its nanny) takes its partition's state
with it. A call waiting on it then fails with `gateway.pool.WorkerError`, never hangs: a
task pinned to a worker that is gone would wait forever in the scheduler, so the wait
polls the scheduler for the pinned workers, and a task checks on arrival that it runs in
the very worker process (Dask id) it was pinned to, not a restarted one at the same
address. The executor then re-pins to the workers present at its next call and sends
rulebook and accounts again (as the pool restarts its workers); the failed decision
becomes an exception for operations, as any engine error does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import itertools
import pickle
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import distributed
from distributed import CancelledError, KilledWorker, get_worker

import engine
from engine import eligibility, partition
from engine.executor import account_slices
from gateway.pool import WorkerError

T = TypeVar("T")
R = TypeVar("R")

# distributed's Client and LocalCluster are only partly annotated (mypy would flag every
# call of theirs as untyped): they are reached through this.
_dd: Any = distributed

# How often a call waiting on its partitions asks the scheduler whether their workers are
# still there (a lost worker is found within this, plus the scheduler's own detection).
POLL_SECONDS = 1.0

_executors = itertools.count(1)


# -- what runs in a worker ------------------------------------------------------------------

def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(blob: bytes) -> Any:
    # Only bytes this executor's client and its workers made (never from outside).
    return pickle.loads(blob)  # noqa: S301


def _run(worker_id: str, space: str, fn: Callable[[Any], Any], blob: bytes,
         freeze: bool) -> bytes:
    """`fn(arg)` in partition `space` of this worker.

    Argument and result cross as pickled bytes, as through gateway.pool's pipes: Dask's
    own serialization of a plain list is far slower (a call whose 2 partitions each
    returned 20,000 ints took 1.3-3.8 s through it, 25-30 ms as bytes; docs/rebalance.md).
    """
    if worker_id and get_worker().id != worker_id:
        # A new worker process at the pinned address: whatever this partition held is gone.
        raise WorkerError(f"engine partition {space}: dask worker {get_worker().address} "
                          "was restarted; its partition state is lost")
    out = partition.run_in_space(space, fn, _loads(blob))
    if freeze:
        # Reference data stays for the life of the worker: keep it out of the cyclic
        # garbage collector's scans (as gateway.pool's workers do).
        gc.freeze()
    return _dumps(out)


def _worker_id(_arg: None) -> str:
    """This worker process's Dask id (a new one when its nanny restarts it)."""
    return str(get_worker().id)


# -- the executor ---------------------------------------------------------------------------

class DaskExecutor:
    """engine.Executor whose partitions live on the workers of a Dask cluster.

    `address`: the scheduler (`tcp://host:8786`). `partitions`: how many (each on its own
    worker; the first `partitions` workers in address order are used, waiting up to
    `timeout` seconds for them); None: one per worker present when the partitions are
    pinned (at least one). `min_accounts`: below this many accounts `allocate` stays
    in-process (default `engine.PARALLEL_MIN_ACCOUNTS`). `direct`: move scattered accounts
    and results straight between this process and the workers rather than through the
    scheduler (needs the workers' addresses to be reachable from here).
    """

    def __init__(self, address: str, *, partitions: int | None = None,
                 min_accounts: int | None = None, timeout: float = 30.0,
                 direct: bool = True) -> None:
        if partitions is not None and partitions < 1:
            raise ValueError(f"invalid `partitions` less than 1, was {partitions}")
        self.address = address
        self.min_accounts = engine.PARALLEL_MIN_ACCOUNTS if min_accounts is None else min_accounts
        self.timeout = timeout
        self._want = partitions
        self._direct = direct
        self._name = f"dask{next(_executors)}-{uuid.uuid4().hex[:8]}"
        self._generation = itertools.count()
        self._lock = threading.Lock()
        self._version: str | None = None
        self._books: OrderedDict[str, None] = OrderedDict()
        # Per partition: (worker address, the worker's Dask id, the partition's space there).
        self._slots: list[tuple[str, str, str]] = []
        self._waiter = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="fixalloc-dask-collect")
        try:
            # Not the process's default Dask client: nothing else here is to run on it.
            self._client = _dd.Client(address, timeout=timeout, set_as_default=False,
                                      direct_to_workers=direct)
        except (OSError, TimeoutError) as e:
            self._waiter.shutdown()
            raise WorkerError(f"cannot reach the dask scheduler at {address}: {e}") from e
        try:
            with self._lock:
                self._pin()
        except BaseException:
            self._client.close()
            self._waiter.shutdown()
            raise

    # -- pinning partitions to workers ----------------------------------------------------

    def _workers(self) -> dict[str, dict[str, Any]]:
        try:
            # Every worker (distributed 2025.4 to 2026.1 list only 5 by default).
            info = self._client.scheduler_info(n_workers=-1)
            workers: dict[str, dict[str, Any]] = info["workers"]
        except (OSError, TimeoutError) as e:
            raise WorkerError(f"dask scheduler {self.address} unreachable: {e}") from e
        return workers

    def _pin(self) -> None:
        """Choose the partitions' workers and check each runs our code (called locked)."""
        old = self._slots
        self._slots = []
        self._version = None
        self._books.clear()
        try:
            self._client.wait_for_workers(self._want or 1, timeout=self.timeout)
        except (OSError, TimeoutError) as e:
            raise WorkerError(f"dask scheduler {self.address}: fewer than {self._want or 1} "
                              f"workers after {self.timeout:g} s") from e
        workers = self._workers()
        chosen = sorted(workers)[:self._want] if self._want else sorted(workers)
        threaded = [a for a in chosen if workers[a].get("nthreads") != 1]
        if threaded:
            raise WorkerError(f"dask workers {', '.join(threaded)} run more than one thread: "
                              "engine partitions need workers started with --nthreads 1")
        gen = next(self._generation)
        self._drop(old, workers)
        # First unchecked (no id yet): the ping also learns each worker process's id.
        self._slots = [(a, "", f"{self._name}-{gen}-{k}") for k, a in enumerate(chosen)]
        try:
            ids = self._call(_worker_id, [None] * len(chosen))
        except WorkerError:
            raise
        except Exception as e:  # e.g. fixalloc not importable in a worker
            self._slots = []
            raise WorkerError(f"dask workers at {self.address} cannot run engine partitions "
                              f"(is fixalloc installed there?): {type(e).__name__}: {e}"
                              ) from e
        self._slots = [(a, wid, space) for (a, _, space), wid in zip(self._slots, ids,
                                                                      strict=True)]

    def _drop(self, slots: Sequence[tuple[str, str, str]],
              workers: dict[str, dict[str, Any]]) -> None:
        """Best effort: free what old partitions hold on workers that are still there."""
        alive = [s for s in slots if s[0] in workers]
        futures = [self._client.submit(_run, wid, space, partition.drop_space, _dumps(space),
                                       False, workers=[addr], allow_other_workers=False,
                                       pure=False)
                   for addr, wid, space in alive]
        for f in futures:
            # Freeing memory only: whatever fails here, nothing else needs it.
            with contextlib.suppress(Exception):
                f.exception(timeout=self.timeout)
        if futures:
            self._client.cancel(futures)

    def _check(self) -> None:
        """Raise WorkerError if a pinned worker has left (one restarted at the same address
        fails the task itself, in `_run`)."""
        workers = self._workers()
        for k, (addr, _wid, _space) in enumerate(self._slots):
            w = workers.get(addr)
            if w is None:
                raise WorkerError(f"engine partition {k}: dask worker {addr} is gone "
                                  "(its partition state is lost)")
            if w.get("status") == "paused":
                # Paused workers start no task; partition state is not Dask-managed data,
                # so the pause would last (start workers with --memory-limit 0).
                raise WorkerError(f"engine partition {k}: dask worker {addr} is paused "
                                  "(memory limit reached)")

    # -- calls ----------------------------------------------------------------------------

    def _submit(self, fn: Callable[[Any], Any], args: Sequence[Any], *,
                scattered: bool = False, freeze: bool = False) -> list[Any]:
        """Start args[k] in partition k. Each distinct argument is pickled once; with
        `scattered`, args are futures of pickled arguments already on their workers."""
        if len(args) != len(self._slots):
            raise ValueError(f"expected one argument per partition ({len(self._slots)}), "
                             f"got {len(args)}")
        blobs: dict[int, Any] = {}
        futures = []
        for (addr, wid, space), a in zip(self._slots, args, strict=True):
            blob = a if scattered else blobs.get(id(a))
            if blob is None:
                blob = blobs[id(a)] = _dumps(a)
            futures.append(self._client.submit(
                _run, wid, space, fn, blob, freeze,
                key=f"fixalloc-{getattr(fn, '__name__', 'call')}-{space}-{uuid.uuid4().hex}",
                workers=[addr], allow_other_workers=False, pure=False))
        return futures

    def _results(self, futures: list[Any]) -> list[Any]:
        # All of them, even after one failed: the next call must not queue behind this
        # one's stragglers on a worker. (`exception()` waits without raising the task's.)
        for f in futures:
            f.exception()
        return [_loads(b) for b in self._client.gather(futures, direct=self._direct)]

    def _collect(self, futures: list[Any]) -> list[Any]:
        """Every partition's result in order; WorkerError (and a re-pin next time) when a
        worker is lost, the engine's own error when a partition raised one.

        The waiting and fetching run on a helper thread while this one polls the scheduler:
        a task pinned to a lost worker, or a result lost with it before it was fetched,
        would otherwise be waited for forever.
        """
        try:
            pending = self._waiter.submit(self._results, futures)
            while not concurrent.futures.wait([pending], timeout=POLL_SECONDS)[0]:
                self._check()
            return pending.result()
        except (KilledWorker, CancelledError, OSError, WorkerError) as e:
            self._client.cancel(futures)
            self._slots = []    # re-pinned (and everything re-sent) on the next call
            if isinstance(e, WorkerError):
                raise
            raise WorkerError(f"engine worker failed: {type(e).__name__}: {e}") from e

    def _call(self, fn: Callable[[Any], Any], args: Sequence[Any], **kw: Any) -> list[Any]:
        return self._collect(self._submit(fn, args, **kw))

    def _ready(self) -> None:
        if not self._slots:
            self._pin()

    @property
    def rulebook_version(self) -> str | None:
        return self._version

    @property
    def partitions(self) -> int:
        if not self._slots:
            # Not while a started call holds the lock: its partitions are pinned.
            with self._lock:
                self._ready()
        return len(self._slots)

    @property
    def workers(self) -> list[str]:
        """The worker address of each partition."""
        return [addr for addr, _wid, _space in self._slots]

    def prepare(self, rulebook: engine.Rulebook) -> None:
        """Ensure every partition's worker holds `rulebook` (compiled once per version)."""
        with self._lock:
            self._ready()
            if rulebook.version == self._version:
                return
            self._call(eligibility.install, [rulebook] * len(self._slots), freeze=True)
            self._version = rulebook.version

    def prepare_accounts(self, version: str, accounts: Sequence[engine.Account]) -> None:
        """Send each partition its slice of an account book, once per book version.

        The slices go straight to their workers (`scatter`), not inside a task through the
        scheduler. Workers keep the last `engine.partition.MAX_BOOKS` books, as this does.
        """
        with self._lock:
            self._ready()
            if version in self._books:
                return
            slices = account_slices(version, accounts, len(self._slots))
            try:
                # Pickled here (see `_run`), one item each: a list is scattered item by item.
                data = [self._client.scatter([_dumps(s)], workers=[addr], hash=False,
                                             direct=self._direct)[0]
                        for s, (addr, _wid, _space) in zip(slices, self._slots, strict=True)]
            except (OSError, TimeoutError) as e:
                self._slots = []
                raise WorkerError(f"engine worker failed: {type(e).__name__}: {e}") from e
            try:
                self._call(partition.install_accounts, data, scattered=True, freeze=True)
            finally:
                # Installed (unpickled into engine.partition): the bytes can go.
                self._client.cancel(data)
            self._books[version] = None
            while len(self._books) > partition.MAX_BOOKS:
                self._books.popitem(last=False)

    def call_partitions(self, fn: Callable[[T], R], args: Sequence[T]) -> list[R]:
        with self._lock:
            self._ready()
            return self._call(fn, args)

    def start_partitions(self, fn: Callable[[T], R], args: Sequence[T]
                         ) -> Callable[[], list[R]]:
        """Submit the call now; the returned function waits for the results.

        Other calls wait until the results are collected, so the caller must collect.
        """
        self._lock.acquire()
        try:
            self._ready()
            futures = self._submit(fn, args)
        except BaseException:
            self._lock.release()
            raise

        def collect() -> list[R]:
            try:
                return self._collect(futures)
            finally:
                self._lock.release()

        return collect

    def close(self) -> None:
        """Free the partitions' state on the workers and disconnect (the cluster stays)."""
        with self._lock:
            try:
                if self._slots:
                    self._drop(self._slots, self._workers())
            except Exception:  # noqa: S110 - a cluster already gone holds nothing to free
                pass
            self._slots = []
            self._client.close()
            self._waiter.shutdown()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """A Dask cluster of `workers` worker processes on 127.0.0.1 for as long as the block
    runs (benchmarks and tests); yields its scheduler's address.

    One thread per worker, as engine partitions need; no memory limit, since partition state
    is not Dask-managed data (a worker near its limit would pause, not spill: see `_check`).
    No dashboard; the scheduler's small HTTP server (health, metrics) takes any free port on
    loopback rather than 8787, which another cluster on the machine may hold.
    """
    if workers < 1:
        raise ValueError(f"invalid `workers` less than 1, was {workers}")
    cluster = _dd.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None, memory_limit=0,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()
