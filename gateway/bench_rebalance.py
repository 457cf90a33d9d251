"""`fixalloc bench rebalance`: trade lists for N accounts against an S-security model.

Synthetic inputs (`engine.rebalance_synthetic`: restrictions, drift bands, tax lots). The
figures:

* ``build_s``: generating the inputs (not part of a rebalance);
* ``in_process_s``: `engine.rebalance.rebalance` in this process (1 worker), when
  ``--workers 1`` or ``--compare``;
* ``pool_prepare_s``: starting the pool and installing rulebook and accounts in its
  partitions (what the daemon does once per reference-data version);
* ``pool_s``: the trade lists with the accounts already installed, W partitions;
* ``blocks_s``: aggregating the trades into blocks;
* checks: the pool's trade list equals the in-process one (with ``--compare``), no account
  ends short, no cash below zero, every row has a reason.
"""

from __future__ import annotations

import argparse
import gc
import time
from decimal import Decimal
from typing import Any

from engine import rebalance_synthetic
from engine.rebalance import RebalanceResult, rebalance
from engine.rebalance_blocks import blocks
from gateway.bench_output import emit

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


def run_bench(accounts: int, securities: int, workers: int, *, seed: int = 7,
              compare: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter_ns()
    syn = rebalance_synthetic.build(accounts, securities, seed)
    build_ns = time.perf_counter_ns() - t0
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {"accounts": accounts, "securities": securities, "workers": workers,
                           "seed": seed, "restrictions": len(syn.rulebook.restrictions),
                           "build_s": _s(build_ns)}
    base = None
    if workers <= 1 or compare:
        t0 = time.perf_counter_ns()
        base = rebalance(syn.request, syn.rulebook)
        out["in_process_s"] = _s(time.perf_counter_ns() - t0)
    res = base
    if workers > 1:
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
    main_s = Decimal(out.get("pool_s") or out["in_process_s"])
    out["target_s"] = str(TARGET_S)
    checks = _checks(res)
    if base is not None and res is not base:
        differ = [p.account_id for p, q in zip(base.accounts, res.accounts, strict=True)
                  if p != q]
        out["accounts_differing_pool_vs_in_process"] = len(differ)
        out["first_differing_accounts"] = differ[:5]
        checks["pool_identical_to_in_process"] = not differ and base == res
    checks["within_target"] = main_s <= TARGET_S
    out["checks"] = checks
    out["ok"] = all(v for k, v in checks.items() if k != "within_target")
    return out


def _cmd(args: argparse.Namespace) -> int:
    if args.accounts < 1 or args.securities < 1 or args.workers < 1:
        raise SystemExit("accounts, securities and workers must be positive")
    out = run_bench(args.accounts, args.securities, args.workers, seed=args.seed,
                    compare=args.compare)
    return emit(out, as_json=args.json)


def add_command(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser(
        "rebalance", help="trade lists for N accounts against an S-security model")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--securities", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--compare", action="store_true",
                   help="also run in-process and check the pool's result is identical")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
