"""`fixalloc audit verify | checkpoint | grants`: the tamper-evident record from the shell.

    fixalloc audit verify (--state-dir DIR | --config FILE) [--from DATE]
                          [--checkpoints FILE [--key FILE]] [--json]
    fixalloc audit checkpoint (--state-dir DIR | --config FILE) [--export FILE] [--key FILE]
    fixalloc audit grants --role NAME

verify exits 0 when the record is intact, 1 when anything breaks (the first break is
named: its entry, table and row), 78 for a missing database or config.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from gateway.audit.source import add_source_arguments, resolve
from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError


def _fail(code: int, message: str) -> int:
    print(f"fixalloc audit: {message}", file=sys.stderr)  # noqa: T201
    return code


def _key(args: argparse.Namespace, config: Any) -> bytes | None:
    from gateway.audit.chain_checkpoints import read_key

    path = args.key
    if path is None and config is not None and config.audit.checkpoint_key_file is not None:
        path = config.resolve(config.audit.checkpoint_key_file)
    return read_key(Path(path)) if path is not None else None


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit.chain_checkpoints import check_exported
    from gateway.audit.chain_verify import verify
    from gateway.persistence.store import Database

    since = None
    if args.since:
        try:
            since = datetime.combine(datetime.strptime(args.since, "%Y-%m-%d").date(), time(),
                                     tzinfo=UTC)
        except ValueError:
            return _fail(EXIT_USAGE, f"invalid --from {args.since!r}: expected YYYY-MM-DD")
    try:
        source = resolve(args)
        key = _key(args, source.config)
    except (ConfigError, OSError, ValueError) as exc:
        return _fail(EXIT_CONFIG, str(exc))
    db = Database(source.database_url)
    try:
        result = verify(db, since=since)
        exported = check_exported(db, args.checkpoints, key) if args.checkpoints else []
    except OSError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    finally:
        db.dispose()
    ok = result.ok and not exported
    if args.json:
        print(json.dumps(result.to_json() | {"database": source.where,  # noqa: T201
                                             "checkpoint_file_problems": exported,
                                             "ok": ok}, indent=2))
    else:
        print(f"{source.where}: {result.summary()}")  # noqa: T201
        for problem in result.problems[1:20]:
            print(f"  also: {problem.describe()}")  # noqa: T201
        if result.breaks > 20:
            print(f"  ... and {result.breaks - 20} more")  # noqa: T201
        if result.checkpoint:
            cp = result.checkpoint
            print(f"latest checkpoint: #{cp['seq']} {cp['head_hash'][:16]} at "  # noqa: T201
                  f"{cp['written_at']}")
        if args.checkpoints:
            print(f"{args.checkpoints}: " + ("every checkpoint holds" if not exported  # noqa: T201
                                             else "; ".join(exported)))
    return EXIT_OK if ok else EXIT_FAILURE


def _checkpoint(args: argparse.Namespace) -> int:
    from gateway.audit.chain_checkpoints import write_checkpoint
    from gateway.persistence.store import Database

    try:
        source = resolve(args)
        key = _key(args, source.config)
    except (ConfigError, OSError, ValueError) as exc:
        return _fail(EXIT_CONFIG, str(exc))
    export = args.export
    if export is None and source.config is not None and source.config.audit.checkpoint_file:
        export = source.config.resolve(source.config.audit.checkpoint_file)
    db = Database(source.database_url)
    try:
        entry = write_checkpoint(db, export=export, key=key, where=source.where)
    finally:
        db.dispose()
    if entry is None:
        return _fail(EXIT_FAILURE, f"{source.where}: the audit chain is empty")
    print(f"checkpoint #{entry['seq']} {entry['head_hash']} at {entry['written_at']}"  # noqa: T201
          + (f" appended to {export}" + (" (signed)" if key else "") if export else ""))
    return EXIT_OK


def _grants(args: argparse.Namespace) -> int:
    from gateway.audit.pg_role import grants_sql

    try:
        print("\n".join(grants_sql(args.role)))  # noqa: T201
    except ValueError as exc:
        return _fail(EXIT_USAGE, str(exc))
    return EXIT_OK


def add_command(audit_sub: Any) -> None:
    verify = audit_sub.add_parser("verify", help="check the tamper-evident record: exit 0 "
                                                 "intact, 1 broken (the first break named)")
    add_source_arguments(verify)
    verify.add_argument("--from", dest="since", metavar="DATE",
                        help="only the entries recorded from this date (UTC) on")
    verify.add_argument("--checkpoints", type=Path, metavar="FILE",
                        help="also check the chain against checkpoints exported to FILE")
    verify.add_argument("--key", type=Path, help="the checkpoint signing key file")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=_verify)

    checkpoint = audit_sub.add_parser("checkpoint", help="record the chain head now; with "
                                                         "--export, append it to a file")
    add_source_arguments(checkpoint)
    checkpoint.add_argument("--export", type=Path, metavar="FILE")
    checkpoint.add_argument("--key", type=Path, help="sign with HMAC-SHA256 under this key")
    checkpoint.set_defaults(func=_checkpoint)

    grants = audit_sub.add_parser("grants", help="print the PostgreSQL grants for the "
                                                 "daemon's role (append-only audit tables)")
    grants.add_argument("--role", required=True)
    grants.set_defaults(func=_grants)
