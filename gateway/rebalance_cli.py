"""`fixalloc rebalance`: trade lists and block orders from a model (docs/rebalance.md).

    fixalloc rebalance --config DIR --model MODEL [--accounts ID ...] --out DIR
                       [--trade-date YYYY-MM-DD] [--workers N]
                       [--prices FILE [--as-of ISO-TIME]]
                       [--send URL [--token-env NAME] [--reason TEXT]]

DIR holds securities.csv, accounts.csv, positions.csv and rules/ (as for `fixalloc
allocate`); MODEL is a YAML file, or a name looked up as DIR/models/MODEL.yaml. The out
folder receives trades.csv, trades.json, blocks.csv, blocks.json and run.json (the run
record: the versions of every input and the hash of every output). A bad file is refused
with file:line: reason and exit code 78, an unknown or unassigned account with exit 2.
With `--prices` (symbol,last,bid,ask,as_of) and a `crossing:` policy in the rulebook, a
security with both a buy and a sell block is crossed between the accounts at the policy's
price (docs/crossing.md): crossing.json and crosses.csv record each cross and refusal, and
blocks.* hold only the net that is routed. `--send` then hands the blocks to the gateway
at URL (gateway/rebalance_send.py) and writes its answers to sent.json; exit 1 when the
gateway rejected any of them.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import hashlib
import io
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import engine
from engine import canonical
from engine.crossing import CrossingResult, cross_blocks, crossable_symbols, crosses_csv
from engine.rebalance import RebalanceError, RebalanceRequest, assigned_accounts, rebalance
from engine.rebalance_blocks import blocks, blocks_json, run_record, trades_json
from engine.rebalance_model import Model, ModelError
from gateway import refdata
from gateway.errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE

TRADE_COLUMNS = ("account_id", "symbol", "status", "side", "qty", "price", "notional",
                 "current_qty", "current_pct", "model_pct", "target_pct", "reason_code",
                 "rule_id", "rule_version", "reason", "lots", "realized_gain")
BLOCK_COLUMNS = ("block_id", "symbol", "side", "qty", "account_id", "account_qty",
                 "preallocation_reason")


def add_command(subparsers: Any, bench_subparsers: Any | None = None) -> None:
    """Register `rebalance` (and `bench rebalance` when the bench group is given)."""
    p = subparsers.add_parser("rebalance", help="trade lists and blocks from a model")
    p.add_argument("--config", required=True, type=Path,
                   help="directory with securities.csv, accounts.csv, positions.csv, rules/")
    p.add_argument("--model", required=True,
                   help="model YAML file, or a name looked up as DIR/models/NAME.yaml")
    p.add_argument("--accounts", nargs="+", metavar="ID",
                   help="only these accounts (each must be assigned to the model); commas "
                        "also separate ids")
    p.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    p.add_argument("--trade-date", help="YYYY-MM-DD for tax-lot and wash-sale dates "
                                        "(default: today, UTC)")
    p.add_argument("--workers", type=int, default=0, help="process-pool workers (0: in-process)")
    p.add_argument("--prices", type=Path, metavar="FILE",
                   help="reference prices (CSV: symbol,last,bid,ask,as_of) for crossing "
                        "opposite interest between accounts under the rulebook's policy")
    p.add_argument("--as-of", metavar="ISO-TIME",
                   help="the time prices are judged stale against (default: now, UTC); "
                        "recorded in run.json so the run can be repeated")
    p.add_argument("--send", metavar="URL",
                   help="hand the blocks to the gateway at URL (its HTTP API, e.g. "
                        "http://127.0.0.1:8080) as orders with their pre-allocations")
    p.add_argument("--token-env", default="FIXALLOC_API_TOKEN", metavar="NAME",
                   help="environment variable holding the API token for --send "
                        "(a user with the submit_orders action: trader, pm)")
    p.add_argument("--reason", default="", help="--send: recorded with the request")
    p.set_defaults(func=cmd_rebalance)
    if bench_subparsers is not None:
        from gateway import bench_rebalance

        bench_rebalance.add_command(bench_subparsers)


def _model_path(config: Path, model: str) -> Path:
    p = Path(model)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return config / "models" / f"{model}.yaml"


def load_model(path: Path) -> Model:
    """Read and validate a model file; errors are RefDataError with the file and line."""
    data, node = refdata._compose(path)
    if not isinstance(data, dict) or node is None:
        raise refdata.RefDataError(path, 1, "a model file must be a mapping at the top level")
    where: dict[str, tuple[Path, int]] = {}
    refdata._index(node, "", path, where)
    try:
        return Model.from_mapping(data, str(path))
    except ModelError as e:
        probe = e.path
        while probe and probe not in where:
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        line = where.get(probe, (path, 1))[1]
        raise refdata.RefDataError(path, line, f"{e.path}: {e.reason}" if e.path
                                   else e.reason) from None


def refdata_version(files: Sequence[Path]) -> str:
    """The reference-data version, computed as `gateway.reference.ReferenceData` does: by
    file name and text, so the same files give the version the daemon records."""
    digest = hashlib.sha256()
    texts = {str(p): refdata.read_text(p) for p in files}
    for name in sorted(texts, key=lambda n: (Path(n).name, n)):
        digest.update(Path(name).name.encode() + b"\0" + texts[name].encode() + b"\0")
    return digest.hexdigest()


def _trade_date(raw: str | None) -> dt.date:
    if not raw:
        return dt.datetime.now(dt.UTC).date()
    return dt.date.fromisoformat(raw)


def _fmt(v: Any) -> str:
    return "" if v is None else format(v, "f") if isinstance(v, Decimal) else str(v)


def trades_csv(result: engine.rebalance.RebalanceResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRADE_COLUMNS)
    for plan in result.accounts:
        for r in plan.rows:
            j = r.to_json()
            lots = ";".join(f"{lot.lot_id}:{lot.quantity}@{lot.cost_per_share}"
                            for lot in r.lots)
            w.writerow([r.account_id, r.symbol, j["status"], r.side, _fmt(r.qty),
                        _fmt(r.price), _fmt(j["notional"]), _fmt(r.current_qty),
                        _fmt(r.current_pct), _fmt(r.model_pct), _fmt(r.target_pct),
                        r.reason.code, r.reason.rule_id, r.reason.rule_version, r.reason.text,
                        lots, _fmt(j["realized_gain"])])
    return buf.getvalue()


def blocks_csv(blocks_: Sequence[engine.rebalance_blocks.Block]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BLOCK_COLUMNS)
    for b in blocks_:
        for aid, q in b.preallocations:
            w.writerow([b.block_id, b.symbol, b.side, _fmt(b.qty), aid, _fmt(q),
                        b.preallocation_reason])
    return buf.getvalue()


def _fail(code: int, msg: str) -> int:
    sys.stderr.write(f"{msg}\n")
    return code


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a run: it makes rows, which hold no cycles,
    and the collector walking millions of them cost about 0.8 ms per account."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cmd_rebalance(args: argparse.Namespace) -> int:
    config: Path = args.config
    if not config.is_dir():
        return _fail(EXIT_CONFIG, f"{config}: --config: not a directory")
    try:
        trade_date = _trade_date(args.trade_date)
    except ValueError:
        return _fail(EXIT_USAGE, f"--trade-date: not a YYYY-MM-DD date: {args.trade_date!r}")
    model_path = _model_path(config, args.model)
    positions = config / "positions.csv"
    files = [config / "securities.csv", config / "accounts.csv"]
    if positions.exists():
        files.append(positions)
    try:
        model = load_model(model_path)
        securities = refdata.load_securities(files[0])
        accounts = refdata.load_accounts(files[1], positions if positions.exists() else None)
        rulebook = refdata.load_rulebook(config / "rules")
        ref_version = refdata_version(files)
    except refdata.RefDataError as e:
        return _fail(EXIT_CONFIG, str(e))
    only = None
    if args.accounts:
        only = [a.strip() for raw in args.accounts for a in raw.split(",") if a.strip()]
    executor: Any = None
    try:
        chosen = assigned_accounts(model, accounts, only)
        if not chosen:
            return _fail(EXIT_USAGE, f"model '{model.name}' is assigned to no account")
        if args.workers > 0:
            from gateway.pool import ProcessPoolExecutorAdapter

            executor = ProcessPoolExecutorAdapter(args.workers, min_accounts=0)
        with collector_paused():
            result = rebalance(RebalanceRequest(model, chosen, securities, trade_date),
                               rulebook, executor)
    except RebalanceError as e:
        msg = str(e)
        if "security master" in msg or "reference price" in msg:
            return _fail(EXIT_CONFIG, f"{model_path}: {msg}")
        return _fail(EXIT_USAGE, f"error: {msg}")
    finally:
        if executor is not None:
            executor.close()
    blks = blocks(result)
    crossing, prices_version = None, None
    if args.prices is not None or rulebook.crossing is not None:
        try:
            crossing, prices_version = _cross(
                args, blks, rulebook, chosen, result.inputs_hash,
                {s: sec.lot_size for s, sec in securities.items()})
        except ValueError as e:  # a bad price file (file:line: reason) or --as-of
            return _fail(EXIT_CONFIG if isinstance(e, refdata.RefDataError) else EXIT_USAGE,
                         str(e))
        blks = tuple(crossing.net_blocks)
    trades_text = canonical.dumps(trades_json(result))
    blocks_text = canonical.dumps(blocks_json(blks))
    extra: dict[str, Any] = {
        "refdata_version": ref_version,
        "model_file": model_path.name,
        "accounts_filter": sorted(only) if only is not None else None,
    }
    crossing_text = None
    if crossing is not None:
        crossing_text = canonical.dumps(crossing.to_json())
        extra.update(crossing_hash=hashlib.sha256(crossing_text.encode()).hexdigest(),
                     crossed_qty=str(sum((c.qty for c in crossing.crosses), Decimal(0))),
                     crosses=len(crossing.crosses), cross_refusals=len(crossing.refusals),
                     prices_version=prices_version)
    record = run_record(result, blks, trades_text=trades_text, blocks_text=blocks_text,
                        extra=extra)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "trades.json").write_text(trades_text + "\n", encoding="utf-8")
    (out / "blocks.json").write_text(blocks_text + "\n", encoding="utf-8")
    (out / "trades.csv").write_text(trades_csv(result), encoding="utf-8")
    (out / "blocks.csv").write_text(blocks_csv(blks), encoding="utf-8")
    (out / "run.json").write_text(canonical.dumps(record) + "\n", encoding="utf-8")
    if crossing is not None and crossing_text is not None:
        (out / "crossing.json").write_text(crossing_text + "\n", encoding="utf-8")
        (out / "crosses.csv").write_text(crosses_csv(crossing), encoding="utf-8")
        for c in crossing.crosses:
            sys.stdout.write(f"crossed {c.qty} {c.symbol} at {c.price} ({c.price_rule}, "
                             f"{c.price_source}): {len(c.buys)} buyers, {len(c.sells)} "
                             "sellers; only the net is routed\n")
        for r in crossing.refusals:
            sys.stdout.write(f"not crossed {r.symbol}: {r.code}: {r.text}\n")
    sys.stdout.write(
        f"model {model.name} {model.version[:12]}: {record['accounts']} accounts, "
        f"{record['accounts_traded']} traded, {record['trades']} trades in "
        f"{record['blocks']} blocks; output {record['output_hash'][:12]} in {out}\n")
    if args.send:
        return _send(args, blks, {a.account_id: a.book for a in chosen}, record, out)
    return EXIT_OK


def _cross(args: argparse.Namespace, blks: Sequence[Any], rulebook: Any,
           accounts: Sequence[Any], inputs_hash: str, lot_sizes: dict[str, int]
           ) -> tuple[CrossingResult, dict[str, Any]]:
    """The crossing, and what the run records of its prices (file, hash, --as-of)."""
    from gateway.reference_prices import MemoryPrices, load_price_file, quotes_for

    as_of = dt.datetime.now(dt.UTC)
    if args.as_of:
        try:
            as_of = dt.datetime.fromisoformat(args.as_of)
        except ValueError:
            raise ValueError(f"--as-of: not an ISO time: {args.as_of!r}") from None
        if as_of.tzinfo is None:
            raise ValueError(f"--as-of: needs a UTC offset: {args.as_of!r}")
    prices = load_price_file(args.prices) if args.prices is not None else MemoryPrices()
    quotes = quotes_for(prices, crossable_symbols(blks))
    version = {"file": args.prices.name if args.prices else None,
               "sha256": prices.version or None, "as_of": as_of.isoformat()}
    return cross_blocks(blks, rulebook.crossing, accounts, quotes, now=as_of,
                        inputs_hash=inputs_hash, lot_sizes=lot_sizes), version


def _send(args: argparse.Namespace, blks: Sequence[Any], book_of: dict[str, str],
          record: dict[str, Any], out: Path) -> int:
    import json
    import os

    import httpx

    from gateway.rebalance_send import SendError, orders_for, send

    orders = orders_for(blks, book_of)
    reason = args.reason or (f"rebalance to model {record['model']} "
                             f"{record['model_version'][:12]}, output {record['output_hash'][:12]}")
    try:
        answers = send(args.send, os.environ.get(args.token_env), orders, reason=reason,
                       run=record)
    except SendError as e:
        return _fail(1, f"--send: {e}")
    except httpx.HTTPError as e:  # the gateway could not be reached (after retries)
        return _fail(1, f"--send: {args.send}: {type(e).__name__}: {e}")
    (out / "sent.json").write_text(json.dumps({"url": args.send, "orders": answers},
                                              indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    rejected = [a for a in answers if a.get("status") == "rejected"]
    sys.stdout.write(f"sent {len(answers)} orders to {args.send}: "
                     f"{len(answers) - len(rejected)} accepted, {len(rejected)} rejected\n")
    for a in rejected:
        sys.stderr.write(f"rejected {a['cl_ord_id']}: {a.get('reason')}\n")
    return 1 if rejected else EXIT_OK
