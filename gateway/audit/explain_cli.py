"""`fixalloc audit explain ALLOC_ID`: why these accounts got these quantities.

Reads the record only. Unknown allocation or account: a one-line message and exit 1; a
missing record (--state-dir without a database, a bad --config): exit 78.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.audit.source import add_source_arguments, resolve
from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError


def parse_accounts(value: str | None) -> list[str] | None:
    """`--accounts A,B` as a list (order kept, repeats dropped); None when absent."""
    if value is None:
        return None
    names = list(dict.fromkeys(a.strip() for a in value.split(",") if a.strip()))
    if not names:
        raise argparse.ArgumentTypeError("--accounts names no account")
    return names


def _cmd_explain(args: argparse.Namespace) -> int:
    from gateway.audit.explain import ExplainError, explain_allocation
    from gateway.persistence.store import Database

    try:
        accounts = parse_accounts(args.accounts)
        source = resolve(args)
    except argparse.ArgumentTypeError as exc:
        print(f"fixalloc audit explain: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    except ConfigError as exc:
        print(f"fixalloc audit explain: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    db = Database(source.database_url, pool_size=1)
    try:
        explanation = explain_allocation(db, args.alloc_id, accounts)
    except ExplainError as exc:
        print(f"fixalloc audit explain: {exc} ({source.where})", file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(explanation.to_json(), indent=2, sort_keys=True,  # noqa: T201
                         ensure_ascii=False))
    else:
        sys.stdout.write(explanation.text())
    return EXIT_OK


def add_command(audit_sub: Any) -> None:
    cmd = audit_sub.add_parser(
        "explain", help="why each account of an allocation got its quantity: rules, caps, "
                        "the method's arithmetic, rounding, tax lots")
    cmd.add_argument("alloc_id", metavar="ALLOC_ID", help="the AllocID of the J")
    add_source_arguments(cmd)
    cmd.add_argument("--accounts", metavar="A,B",
                     help="explain these accounts in full and compare them (default: a "
                          "summary of every account)")
    cmd.add_argument("--json", action="store_true", help="the explanation as JSON")
    cmd.set_defaults(func=_cmd_explain)
