"""CLI commands backed by the engine: allocate, rules check/show, bench engine.

Each command is registered with ``set_defaults(func=...)``; the function takes the parsed
namespace and returns the process exit code (0 ok, 2 bad input).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import engine
from gateway import dry_run, refdata
from gateway.config import Config, load_config
from gateway.engine_bench import run_bench
from gateway.errors import ConfigError
from gateway.pool import ProcessPoolExecutorAdapter

EXIT_OK = 0
EXIT_BAD_INPUT = 2
InputError = dry_run.InputError
__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "InputError", "add_commands", "build_request", "main",
           "run_bench"]


def add_commands(subparsers: Any, bench_subparsers: Any) -> None:
    """Register `allocate`, `rules ...` and `bench engine` on the given argparse groups."""
    p = subparsers.add_parser("allocate", help="allocate a block from files; print the decision")
    p.add_argument("--config", type=Path,
                   help="directory with securities.csv, accounts.csv, positions.csv, rules/ "
                        "(default with --gateway-config: the files its [refdata] names)")
    p.add_argument("--gateway-config", type=Path, metavar="FILE",
                   help="the gateway's TOML: validate the order against its [[books]] entry")
    p.add_argument("--order", required=True, type=Path, help="ORDER.json")
    p.add_argument("--fills", type=Path, help="FILLS.json: list of {exec_id, qty, px} "
                                              "(absent: the whole qty at limit_px)")
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
    from gateway.audit import whatif_cli  # its own module: it reads the gateway's record

    whatif_cli.add_command(rsub)

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


def build_request(config: Path | dry_run.RefDataFiles, order: Any, fills: Any | None,
                  decided_at: dt.datetime, *, gateway_config: Config | None = None,
                  order_file: str = "ORDER.json", fills_file: str = "FILLS.json"
                  ) -> tuple[engine.AllocationRequest, engine.Rulebook]:
    """Decoded ORDER.json (+ FILLS.json; None when there is none) -> the engine request.

    The checks are gateway.dry_run's; `config` is the reference-data directory.
    """
    files = config if isinstance(config, dry_run.RefDataFiles) else dry_run.RefDataFiles.in_dir(
        config)
    parsed = None if fills is None else dry_run.parse_fills(fills_file, fills)
    return dry_run.build_request(files, order, parsed, decided_at, gateway_config=gateway_config,
                                 order_file=order_file, fills_file=fills_file)


def _executor(workers: int, force: bool = False) -> Any:
    if workers <= 0:
        return engine.InProcessExecutor()
    return ProcessPoolExecutorAdapter(workers, min_accounts=0 if force else None)


def _decided_at(raw: str | None) -> dt.datetime:
    if not raw:
        return dt.datetime.now(dt.UTC)
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InputError("--decided-at", None, None,
                         f"not an ISO 8601 timestamp: {raw!r}") from None
    return at


def cmd_allocate(args: argparse.Namespace) -> int:
    try:
        decided_at = _decided_at(args.decided_at)
        gw = load_config(args.gateway_config) if args.gateway_config else None
        if args.config is not None:
            if not args.config.is_dir():
                return _fail(f"{args.config}: --config: not a directory")
            files = dry_run.RefDataFiles.in_dir(args.config)
        elif gw is not None:
            files = dry_run.RefDataFiles.of_config(gw)
        else:
            return _fail("allocate needs --config DIR or --gateway-config FILE")
        order = dry_run.read_json(args.order)
        fills = dry_run.read_fills(args.fills) if args.fills else None
        request, rulebook = dry_run.build_request(
            files, order, fills, decided_at, gateway_config=gw, order_file=str(args.order),
            fills_file=str(args.fills))
        executor = _executor(args.workers)
        try:
            decision = engine.allocate(request, rulebook, executor)
        finally:
            if hasattr(executor, "close"):
                executor.close()
    except (InputError, refdata.RefDataError, ConfigError) as e:
        return _fail(str(e))
    except (engine.AllocationError, ValueError) as e:
        return _fail(f"{args.order}: {str(e).splitlines()[0]}")
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


def cmd_bench_engine(args: argparse.Namespace) -> int:
    if args.accounts < 1 or args.rules < 0 or args.workers < 1 or args.repeats < 1:
        return _fail("accounts, workers and repeats must be positive; rules non-negative")
    res = run_bench(args.accounts, args.rules, args.workers, args.repeats, seed=args.seed,
                    force_pool=args.force_pool)
    if args.json:
        sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
    else:
        for k, v in res.items():
            shown = (", ".join(v) or "none") if isinstance(v, list) else v
            sys.stdout.write(f"{k:>26}: {shown}\n")
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
