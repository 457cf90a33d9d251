"""`fixalloc bench rebalance`: trade lists for N accounts against an S-security model.

Synthetic inputs (`engine.rebalance_synthetic`: restrictions, drift bands, tax lots). The
figures:

* ``build_s``: generating the inputs (not part of a rebalance);
* ``book_hash_s``: the accounts' part of the inputs hash, kept with the book (what the
  daemon computes once per reference-data version), not part of the timings below;
* ``in_process_s``: `engine.rebalance.rebalance` in this process (1 worker), when
  ``--workers 1`` or ``--compare``;
* ``pool_prepare_s``: starting the pool and installing rulebook and accounts in its
  partitions (what the daemon does once per reference-data version);
* ``pool_s``: the trade lists with the accounts already installed, W partitions;
* ``dask_start_s`` (with ``--scheduler ADDR`` or ``--local-cluster N``): starting the local
  Dask cluster, if any, and connecting `gateway.dask_executor.DaskExecutor` to it;
  ``dask_prepare_s`` and ``dask_s``: as ``pool_prepare_s`` and ``pool_s``, one partition
  per Dask worker (``dask_partitions``);
* ``blocks_s``: aggregating the trades into blocks;
* checks: the pool's (or the cluster's) trade list equals the in-process one (with
  ``--compare``), no account ends short, no cash below zero, every row has a reason.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from engine import rebalance_synthetic
from engine.rebalance import RebalanceResult, rebalance
from engine.rebalance_blocks import blocks
from gateway.bench_output import emit
from gateway.rebalance_cli import collector_paused

TARGET_S = Decimal(5)


def _s(ns: int) -> str:
    return str((Decimal(ns) / 1_000_000_000).quantize(Decimal("0.001")))


def _checks(res: RebalanceResult) -> dict[str, bool]:
    short = cash = explained = True
    for p in res.accounts:
        if p.cash_after < 0:
            cash = False
        for r in p.rows:
            if r.side == "sell" and r.qty > r.current_qty:
                short = False
            if not r.reason.code or not r.reason.text:
                explained = False
    return {"no_account_short": short, "cash_never_negative": cash,
            "every_row_explained": explained}


@contextlib.contextmanager
def _dask(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A DaskExecutor on `scheduler`, or on a local cluster of `workers` worker
    processes (loopback, one thread each) started for the run and stopped after it."""
    from gateway.dask_executor import DaskExecutor, local_cluster

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            scheduler = stack.enter_context(local_cluster(workers))
        yield stack.enter_context(DaskExecutor(scheduler, min_accounts=0))


def run_bench(accounts: int, securities: int, workers: int, *, seed: int = 7,
              compare: bool = False, scheduler: str | None = None,
              local_cluster: int = 0) -> dict[str, Any]:
    """With `scheduler` or `local_cluster` the run is on Dask (`workers` unused: the
    result's ``workers`` is then the number of Dask partitions)."""
    dask = scheduler is not None or local_cluster > 0
    t0 = time.perf_counter_ns()
    syn = rebalance_synthetic.build(accounts, securities, seed)
    build_ns = time.perf_counter_ns() - t0
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {"accounts": accounts, "securities": securities, "workers": workers,
                           "seed": seed, "restrictions": len(syn.rulebook.restrictions),
                           "build_s": _s(build_ns)}
    # The accounts' part of the inputs hash is a property of the book, kept with it: the
    # daemon computes it once per reference-data version, as it installs the book.
    from engine.book import book_for

    t0 = time.perf_counter_ns()
    book_for(syn.request.accounts).hash_bytes()
    out["book_hash_s"] = _s(time.perf_counter_ns() - t0)
    base = None
    if (workers <= 1 and not dask) or compare:  # the reference run
        t0 = time.perf_counter_ns()
        with collector_paused():
            base = rebalance(syn.request, syn.rulebook)
        out["in_process_s"] = _s(time.perf_counter_ns() - t0)
    res = base
    name = "dask" if dask else "pool"
    if dask:
        from engine.book import book_for

        t0 = time.perf_counter_ns()
        with _dask(scheduler, local_cluster) as ex:
            out["dask_start_s"] = _s(time.perf_counter_ns() - t0)
            out["dask_scheduler"] = scheduler or f"local cluster of {local_cluster}"
            out["workers"] = out["dask_partitions"] = ex.partitions
            t0 = time.perf_counter_ns()
            book = book_for(syn.request.accounts)
            ex.prepare(syn.rulebook)
            ex.prepare_accounts(book.version, book.sorted)
            out["dask_prepare_s"] = _s(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            with collector_paused():
                res = rebalance(syn.request, syn.rulebook, ex)
            out["dask_s"] = _s(time.perf_counter_ns() - t0)
    if workers > 1 and not dask:
        from gateway.pool import ProcessPoolExecutorAdapter

        t0 = time.perf_counter_ns()
        pool = ProcessPoolExecutorAdapter(workers, min_accounts=0)
        try:
            from engine.book import book_for

            book = book_for(syn.request.accounts)
            pool.prepare(syn.rulebook)
            pool.prepare_accounts(book.version, book.sorted)
            out["pool_prepare_s"] = _s(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            with collector_paused():
                res = rebalance(syn.request, syn.rulebook, pool)
            out["pool_s"] = _s(time.perf_counter_ns() - t0)
        finally:
            pool.close()
    assert res is not None
    t0 = time.perf_counter_ns()
    blks = blocks(res)
    out["blocks_s"] = _s(time.perf_counter_ns() - t0)
    rows = res.rows()
    out["rows"] = len(rows)
    out["trades"] = sum(1 for r in rows if r.qty > 0)
    out["accounts_traded"] = sum(1 for p in res.accounts if p.traded)
    out["blocks"] = len(blks)
    main_s = Decimal(out.get(f"{name}_s") or out["in_process_s"])
    out["target_s"] = str(TARGET_S)
    checks = _checks(res)
    if base is not None and res is not base:
        differ = [p.account_id for p, q in zip(base.accounts, res.accounts, strict=True)
                  if p != q]
        out[f"accounts_differing_{name}_vs_in_process"] = len(differ)
        out["first_differing_accounts"] = differ[:5]
        checks[f"{name}_identical_to_in_process"] = not differ and base == res
    checks["within_target"] = main_s <= TARGET_S
    out["checks"] = checks
    out["ok"] = all(v for k, v in checks.items() if k != "within_target")
    return out


def _cmd(args: argparse.Namespace) -> int:
    if args.accounts < 1 or args.securities < 1 or args.workers < 1:
        raise SystemExit("accounts, securities and workers must be positive")
    if args.local_cluster < 0:
        raise SystemExit("--local-cluster must not be negative")
    if args.scheduler is not None and args.local_cluster:
        raise SystemExit("--scheduler and --local-cluster exclude each other")
    out = run_bench(args.accounts, args.securities, args.workers, seed=args.seed,
                    compare=args.compare, scheduler=args.scheduler,
                    local_cluster=args.local_cluster)
    return emit(out, as_json=args.json)


def add_command(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser(
        "rebalance", help="trade lists for N accounts against an S-security model")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--securities", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run on the Dask cluster of this scheduler (tcp://HOST:PORT), one "
                        "partition per worker; workers need --nthreads 1")
    p.add_argument("--local-cluster", type=int, default=0, metavar="N",
                   help="run on a Dask cluster of N worker processes started on 127.0.0.1 "
                        "for the run")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--compare", action="store_true",
                   help="also run in-process and check the pool's (or cluster's) result is "
                        "identical")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
