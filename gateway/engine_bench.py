"""`fixalloc bench engine`: what one decision costs, in-process and through the process pool.

Each figure is named for what it measures:

* ``*_prepare_ms``: what the daemon does when reference data loads, before any block
  (`engine.prepare_accounts`, and for the pool `prepare(rulebook)` too); one run.
* ``*_cold_ms``: the first decision after that (nothing decided on this book yet in that
  executor: per-book and per-rulebook caches empty); one run.
* ``*_warm_median_ms``: the median of `repeats` further decisions of the same block, every
  cache warm: the steady state of a gateway deciding block after block on one book.
* ``pool_used`` is observed, not inferred: the number of partition rounds that went through
  the pool executor (`pool_rounds_per_decision`); `allocate` keeps a book below the
  executor's `min_accounts` in-process, and then no round reaches it.
* ``parent_peak_rss_mib``: this process's peak RSS (it builds the book, runs the
  in-process decisions and hosts the pool's partition 0); ``worker_peak_rss_mib``: each
  worker process's own peak, asked from inside the worker.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import engine
from engine import synthetic
from gateway.pool import ProcessPoolExecutorAdapter

_MS = Decimal("0.01")


def _peak_rss(_arg: object) -> tuple[int, int]:
    """(pid, peak RSS in KiB) of the process this runs in; sent to every partition."""
    return os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _mib(kib: int) -> str:
    return str((Decimal(kib) / 1024).quantize(Decimal("0.1")))


class ObservedExecutor:
    """Delegates to a partitioned executor and counts the rounds that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.rounds = 0

    def __getattr__(self, name: str) -> Any:  # min_accounts, partitions, prepare, ...
        return getattr(self.inner, name)

    def call_partitions(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> list[Any]:
        self.rounds += 1
        result: list[Any] = self.inner.call_partitions(fn, args)
        return result

    def start_partitions(self, fn: Callable[[Any], Any], args: Sequence[Any]
                         ) -> Callable[[], list[Any]]:
        self.rounds += 1
        collect: Callable[[], list[Any]] = self.inner.start_partitions(fn, args)
        return collect


def _once(fn: Callable[[], object]) -> tuple[Decimal, object]:
    t0 = time.perf_counter_ns()
    result = fn()
    return (Decimal(time.perf_counter_ns() - t0) / 1_000_000).quantize(_MS), result


def _median(fn: Callable[[], object], repeats: int) -> tuple[Decimal, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        result = fn()
        times.append(time.perf_counter_ns() - t0)
    return (Decimal(int(statistics.median(times))) / 1_000_000).quantize(_MS), result


def run_bench(accounts: int, rules: int, workers: int, repeats: int, *, seed: int = 7,
              force_pool: bool = False) -> dict[str, Any]:
    """Time decisions of one synthetic block in-process, then with `workers` pool workers
    (when `workers` > 1 or `force_pool`); see the module docstring for each figure."""
    book = synthetic.build(accounts, rules, seed)
    req, rb = book.request, book.rulebook
    # Reference data lives as long as the process: keep it out of the cyclic collector's
    # scans, as the gateway does after loading it (docs/engine.md).
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {
        "accounts": accounts, "rules_per_account": str(book.rules_per_account.quantize(
            Decimal("0.1"))), "restrictions_in_rulebook": len(rb.restrictions),
        "workers": workers, "repeats": repeats, "seed": seed,
    }
    out["in_process_prepare_ms"] = str(_once(lambda: engine.prepare_accounts(req.accounts))[0])
    cold_ms, _ = _once(lambda: engine.allocate(req, rb))
    warm_ms, base = _median(lambda: engine.allocate(req, rb), repeats)
    out["in_process_cold_ms"], out["in_process_warm_median_ms"] = str(cold_ms), str(warm_ms)
    workers_kib: list[int] = []
    if workers > 1 or force_pool:
        start_ms, pool = _once(lambda: ProcessPoolExecutorAdapter(
            workers, min_accounts=0 if force_pool else None))
        assert isinstance(pool, ProcessPoolExecutorAdapter)
        ex = ObservedExecutor(pool)
        try:
            def prepare() -> None:
                ex.prepare(rb)
                engine.prepare_accounts(req.accounts, ex)

            prepare_ms, _ = _once(prepare)
            pool_cold_ms, _ = _once(lambda: engine.allocate(req, rb, ex))
            before = ex.rounds
            pool_ms, dec = _median(lambda: engine.allocate(req, rb, ex), repeats)
            rounds = ex.rounds - before
            me = os.getpid()
            workers_kib = [kib for pid, kib in pool.call_partitions(
                _peak_rss, [None] * pool.partitions) if pid != me]
        finally:
            pool.close()
        assert isinstance(dec, engine.AllocationDecision)
        assert isinstance(base, engine.AllocationDecision)
        out.update({
            "pool_start_ms": str(start_ms), "pool_prepare_ms": str(prepare_ms),
            "pool_cold_ms": str(pool_cold_ms), "pool_warm_median_ms": str(pool_ms),
            "pool_used": rounds > 0,
            "pool_rounds_per_decision": str((Decimal(rounds) / repeats).quantize(
                Decimal("0.1"))),
            "speedup_pool_vs_in_process": str((warm_ms / pool_ms).quantize(_MS)),
            "identical_decision": dec.to_canonical_json() == base.to_canonical_json(),
        })
    out["parent_peak_rss_mib"] = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    out["worker_peak_rss_mib"] = [_mib(k) for k in workers_kib]
    return out
