"""`fixalloc rules whatif`: what a proposed rulebook would have changed in past blocks.

Registered under `rules` (gateway/engine_cli.py) and, like every gateway/audit/*_cli.py,
under `audit`. Reads the record named by --state-dir or --config and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from gateway import refdata
from gateway.audit.source import add_source_arguments, resolve
from gateway.errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, ConfigError


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw!r}") from None


def add_command(sub: Any) -> None:
    cmd = sub.add_parser("whatif", help="re-decide past blocks under a proposed rulebook and "
                                        "show what would have changed (writes nothing)")
    cmd.add_argument("--rules", type=Path, required=True, metavar="DIR",
                     help="the proposed rulebook (a directory of rule files, or one file)")
    which = cmd.add_mutually_exclusive_group(required=True)
    which.add_argument("--alloc", metavar="ID", help="one allocation (AllocID)")
    which.add_argument("--date", type=_date, metavar="D", help="every block traded on D")
    which.add_argument("--from", dest="date_from", type=_date, metavar="D",
                       help="first trade date (with --to)")
    cmd.add_argument("--to", dest="date_to", type=_date, metavar="D", help="last trade date")
    add_source_arguments(cmd)
    cmd.add_argument("--json", action="store_true", help="the report as JSON")
    cmd.set_defaults(func=run)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def run(args: argparse.Namespace) -> int:
    # Imported here: the engine and the allocation path are not needed by `--help` or by
    # the other `rules` commands that load this module.
    from gateway.audit.whatif import ReadOnlyDatabase, WhatIfError, select_blocks, what_if

    if (args.date_from is None) != (args.date_to is None):
        return _fail("--from and --to go together", EXIT_USAGE)
    try:
        proposed = refdata.load_rulebook(args.rules)
    except refdata.RefDataError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        source = resolve(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    if source.config is None:
        return _fail(f"{source.where}: no gateway configuration beside it (demo.toml); pass "
                     "--config", EXIT_CONFIG)
    first = args.date or args.date_from
    last = args.date or args.date_to
    selection = ({"alloc_id": args.alloc} if args.alloc
                 else {"from": first.isoformat(), "to": last.isoformat()})
    try:
        db = ReadOnlyDatabase(source.database_url)
        try:
            blocks = select_blocks(db, alloc_id=args.alloc, date_from=first, date_to=last)
            report = what_if(db, source.config, proposed, blocks, selection).to_json()
        finally:
            db.dispose()
    except WhatIfError as exc:
        return _fail(str(exc), EXIT_USAGE)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else render(report))
    return EXIT_OK


def render(report: dict[str, Any]) -> str:
    """The report for a person: changed blocks and accounts, then the totals."""
    out = [f"proposed rulebook {report['proposed_rulebook_version'][:12]} against "
           + ", ".join(f"{k} {v}" for k, v in report["selection"].items())]
    for block in report["blocks"]:
        out.append(f"\n{block['alloc_id']}  {block['side']} {block['quantity']} "
                   f"{block['symbol']} ({block['trade_date']}, was decided under "
                   f"{block['stored_rulebook_version'][:12]})")
        if block["outcome"] == "exception":
            detail = block["exception"]
            out.append(f"  would become an exception ({detail['kind']}): "
                       f"{detail.get('reason') or detail.get('error') or ''}".rstrip())
        for line in block["accounts"]:
            why = f"  [{line['rule_id']}] {line['reason']}" if line["rule_id"] else ""
            out.append(f"  {line['account_id']:<12} {line['qty_before']:>10} -> "
                       f"{line['qty_after']:<10} {line['change']}{why}")
    for block in report["not_comparable"]:
        out.append(f"\n{block['alloc_id']}: not compared: {block['reason']}")
    totals = report["totals"]
    out.append(f"\nblocks compared {totals['blocks_compared']}, changed "
               f"{totals['blocks_changed']}, unchanged {totals['blocks_unchanged']}, not "
               f"comparable {totals['blocks_not_comparable']}; accounts changed "
               f"{totals['accounts_changed']}; shares moved out {totals['shares_moved_out']}, "
               f"in {totals['shares_moved_in']}")
    return "\n".join(out) + "\n"
