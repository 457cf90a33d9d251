"""CLI commands backed by the engine: allocate, rules check/show, bench engine.

Each command is registered with ``set_defaults(func=...)``; the function takes the parsed
namespace and returns the process exit code (0 ok, 2 bad input).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import engine
from engine import synthetic
from gateway import refdata
from gateway.ledger import AVG_PX_PLACES
from gateway.pool import ProcessPoolExecutorAdapter

EXIT_OK = 0
EXIT_BAD_INPUT = 2
_SIDES = {"buy": engine.Side.BUY, "sell": engine.Side.SELL, "sell_short": engine.Side.SELL_SHORT,
          "1": engine.Side.BUY, "2": engine.Side.SELL, "5": engine.Side.SELL_SHORT}


class InputError(ValueError):
    pass


def add_commands(subparsers: Any, bench_subparsers: Any) -> None:
    """Register `allocate`, `rules ...` and `bench engine` on the given argparse groups."""
    p = subparsers.add_parser("allocate", help="allocate a block from files; print the decision")
    p.add_argument("--config", required=True, type=Path, help="config directory")
    p.add_argument("--order", required=True, type=Path, help="ORDER.json")
    p.add_argument("--fills", type=Path, help="FILLS.json: list of {exec_id, qty, px}")
    p.add_argument("--workers", type=int, default=0, help="process-pool workers (0: in-process)")
    p.add_argument("--indent", action="store_true", help="indent the JSON for humans")
    p.add_argument("--decided-at", help="ISO timestamp for the decision (default: now, UTC)")
    p.set_defaults(func=cmd_allocate)

    rules = subparsers.add_parser("rules", help="rulebook commands")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    c = rsub.add_parser("check", help="validate a rulebook directory or file")
    c.add_argument("path", type=Path)
    c.set_defaults(func=cmd_rules_check)
    s = rsub.add_parser("show", help="print the normalised rulebook as canonical JSON")
    s.add_argument("path", type=Path)
    s.set_defaults(func=cmd_rules_show)

    b = bench_subparsers.add_parser("engine", help="benchmark allocate() on a synthetic book")
    b.add_argument("--accounts", type=int, required=True)
    b.add_argument("--rules", type=int, required=True, help="rules per account")
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--seed", type=int, default=7)
    b.add_argument("--force-pool", action="store_true",
                   help="use the pool even below the automatic account threshold")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_engine)


def _fail(msg: str) -> int:
    sys.stderr.write(f"error: {msg}\n")
    return EXIT_BAD_INPUT


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def _dec(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise InputError(f"{what} must be a number, was {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise InputError(f"{what} must be a number, was {value!r}") from None
    if not d.is_finite():
        raise InputError(f"{what} must be finite, was {value!r}")
    return d


def build_request(config: Path, order: dict[str, Any], fills: list[Any] | None,
                  decided_at: dt.datetime) -> tuple[engine.AllocationRequest, engine.Rulebook]:
    """Turn ORDER.json (+ FILLS.json) and the config directory into an engine request."""
    if not isinstance(order, dict):
        raise InputError("order must be a JSON object")
    missing = [k for k in ("block_id", "symbol", "side", "qty", "book", "trade_date")
               if k not in order]
    if missing:
        raise InputError(f"order is missing {', '.join(missing)}")
    side = _SIDES.get(str(order["side"]).lower())
    if side is None:
        raise InputError(f"order side must be buy, sell or sell_short, was {order['side']!r}")
    qty = _dec(order["qty"], "order qty")
    limit = _dec(order["limit_px"], "limit_px") if order.get("limit_px") is not None else None
    try:
        trade_date = dt.date.fromisoformat(str(order["trade_date"]))
    except ValueError:
        raise InputError(f"trade_date must be YYYY-MM-DD, was {order['trade_date']!r}") from None
    if fills:
        if not isinstance(fills, list):
            raise InputError("fills must be a JSON list")
        seen: set[str] = set()
        executed, notional = Decimal(0), Decimal(0)
        for i, f in enumerate(fills):
            if not isinstance(f, dict) or "qty" not in f or "px" not in f:
                raise InputError(f"fills[{i}] needs qty and px")
            exec_id = str(f.get("exec_id", i))
            if exec_id in seen:
                continue  # a repeated execution is applied once
            seen.add(exec_id)
            q, px = _dec(f["qty"], f"fills[{i}].qty"), _dec(f["px"], f"fills[{i}].px")
            if q <= 0 or px <= 0:
                raise InputError(f"fills[{i}] qty and px must be positive")
            executed += q
            notional += q * px
        if executed > qty:
            raise InputError(f"fills total {executed} exceeds the order qty {qty}")
        # Round the average price once, to the agreed precision (FIX_ALLOCATION 4.3.1),
        # and use that value everywhere. The default is the daemon's, so a dry run gives
        # the decision the gateway would make on the same fills.
        places = int(order.get("avg_px_precision", AVG_PX_PLACES))
        avg_px = (notional / executed).quantize(Decimal(1).scaleb(-places),
                                                rounding=ROUND_HALF_EVEN)
    else:
        if limit is None:
            raise InputError("without fills the order needs a limit_px to price the whole qty")
        executed, avg_px = qty, limit
    securities = refdata.load_securities(config / "securities.csv")
    positions = config / "positions.csv"
    accounts = refdata.load_accounts(config / "accounts.csv",
                                     positions if positions.exists() else None)
    rulebook = refdata.load_rulebook(config / "rules")
    book = str(order["book"])
    in_book = tuple(a for a in accounts if a.book == book)
    if not in_book:
        raise InputError(f"no accounts in book {book!r}")
    pre = order.get("preallocations")
    prealloc = None
    if pre is not None:
        if not isinstance(pre, dict):
            raise InputError("preallocations must map account id to quantity")
        prealloc = {str(k): _dec(v, f"preallocations[{k}]") for k, v in pre.items()}
    request = engine.AllocationRequest(
        block_id=str(order["block_id"]), symbol=str(order["symbol"]), side=side,
        executed_qty=executed, avg_px=avg_px, trade_date=trade_date, accounts=in_book,
        securities=securities, decided_at=decided_at, method=order.get("method"),
        preallocations=prealloc, preallocation_reason=order.get("preallocation_reason"),
        rotation_offset=int(order.get("rotation_offset", 0)),
    )
    return request, rulebook


def _executor(workers: int, force: bool = False) -> Any:
    if workers <= 0:
        return engine.InProcessExecutor()
    return ProcessPoolExecutorAdapter(workers, min_accounts=0 if force else None)


def cmd_allocate(args: argparse.Namespace) -> int:
    try:
        decided_at = (dt.datetime.fromisoformat(args.decided_at) if args.decided_at
                      else dt.datetime.now(dt.UTC))
        order = _json_file(args.order)
        fills = _json_file(args.fills) if args.fills else None
        request, rulebook = build_request(args.config, order, fills, decided_at)
        executor = _executor(args.workers)
        try:
            decision = engine.allocate(request, rulebook, executor)
        finally:
            if hasattr(executor, "close"):
                executor.close()
    except (InputError, refdata.RefDataError, engine.AllocationError, ValueError) as e:
        return _fail(str(e).splitlines()[0])
    text = decision.to_canonical_json()
    if args.indent:
        text = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    return EXIT_OK


def cmd_rules_check(args: argparse.Namespace) -> int:
    try:
        rb = refdata.load_rulebook(args.path)
    except refdata.RefDataError as e:
        return _fail(str(e))
    counts = ", ".join(f"{k}={v}" for k, v in rb.counts().items())
    sys.stdout.write(f"ok {rb.version}\nschemes={len(rb.schemes)} restrictions="
                     f"{len(rb.restrictions)} ({counts})\n")
    return EXIT_OK


def cmd_rules_show(args: argparse.Namespace) -> int:
    try:
        rb = refdata.load_rulebook(args.path)
    except refdata.RefDataError as e:
        return _fail(str(e))
    sys.stdout.write(json.dumps(json.loads(rb.canonical_json()), indent=2) + "\n")
    return EXIT_OK


def _peak_rss_mib() -> Decimal:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kib += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (Decimal(kib) / 1024).quantize(Decimal("0.1"))


def _time(fn: Callable[[], object], repeats: int) -> tuple[Decimal, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        result = fn()
        times.append(time.perf_counter_ns() - t0)
    return (Decimal(int(statistics.median(times))) / 1_000_000).quantize(Decimal("0.01")), result


def run_bench(accounts: int, rules: int, workers: int, repeats: int, *, seed: int = 7,
              force_pool: bool = False) -> dict[str, Any]:
    """Median ms per decision in-process and with `workers` pool workers."""
    book = synthetic.build(accounts, rules, seed)
    # Reference data lives as long as the process: keep it out of the cyclic collector's
    # scans, as the gateway does after loading it (docs/engine.md).
    gc.collect()
    gc.freeze()
    base_ms, base = _time(lambda: engine.allocate(book.request, book.rulebook), repeats)
    out: dict[str, Any] = {
        "accounts": accounts, "rules_per_account": str(book.rules_per_account.quantize(
            Decimal("0.1"))), "restrictions_in_rulebook": len(book.rulebook.restrictions),
        "workers": workers, "repeats": repeats, "in_process_median_ms": str(base_ms),
    }
    if workers > 1 or force_pool:
        ex = _executor(workers, force_pool)
        try:
            ex.prepare(book.rulebook)
            engine.allocate(book.request, book.rulebook, ex)  # warm the workers
            pool_ms, dec = _time(lambda: engine.allocate(book.request, book.rulebook, ex),
                                 repeats)
        finally:
            ex.close()
        assert isinstance(dec, engine.AllocationDecision)
        assert isinstance(base, engine.AllocationDecision)
        out["pool_median_ms"] = str(pool_ms)
        out["pool_used"] = force_pool or accounts >= engine.PARALLEL_MIN_ACCOUNTS
        out["speedup_vs_one_worker"] = str((base_ms / pool_ms).quantize(Decimal("0.01")))
        out["identical_decision"] = dec.to_canonical_json() == base.to_canonical_json()
        out["median_ms"] = str(pool_ms)
    else:
        out["median_ms"] = str(base_ms)
    out["peak_rss_mib"] = str(_peak_rss_mib())
    return out


def cmd_bench_engine(args: argparse.Namespace) -> int:
    if args.accounts < 1 or args.rules < 0 or args.workers < 1 or args.repeats < 1:
        return _fail("accounts, workers and repeats must be positive; rules non-negative")
    res = run_bench(args.accounts, args.rules, args.workers, args.repeats, seed=args.seed,
                    force_pool=args.force_pool)
    if args.json:
        sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
    else:
        for k, v in res.items():
            sys.stdout.write(f"{k:>26}: {v}\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry for these commands (the daemon's CLI embeds them instead)."""
    parser = argparse.ArgumentParser(prog="fixalloc")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks")
    add_commands(sub, bench.add_subparsers(dest="bench_command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
