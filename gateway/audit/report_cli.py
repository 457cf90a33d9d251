"""`fixalloc audit report`: the allocation log for reviewers and auditors.

    fixalloc audit report (--alloc ID | --date D | --from D --to D)
                          (--state-dir DIR | --config FILE)
                          --format html|pdf|csv|json [--out FILE]

Text formats go to stdout unless --out is given; a PDF needs --out. Exit codes: 0 written
(a broken audit chain is reported on the first page and warned about on stderr, not an
error: the report is the evidence of it); 1 nothing in the record matches the scope, or
the record or the output file cannot be read/written; 2 bad arguments; 78 a bad config.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError

PROG = "fixalloc audit report"
# report_render.FORMATS, repeated so that building the CLI's parser (every fixalloc
# command does) does not import fpdf2 and jinja2.
FORMATS = ("html", "pdf", "csv", "json")


class _Usage(Exception):
    pass


def add_command(sub: Any) -> None:
    from gateway.audit.source import add_source_arguments

    cmd = sub.add_parser("report", help="the allocation log for reviewers and auditors: "
                                        "html, pdf, csv or json")
    scope = cmd.add_mutually_exclusive_group(required=True)
    scope.add_argument("--alloc", metavar="ALLOC_ID", help="one allocation (AllocID)")
    scope.add_argument("--date", metavar="DATE", help="every allocation of a trade date")
    scope.add_argument("--from", dest="start", metavar="DATE",
                       help="every allocation from this trade date (with --to)")
    cmd.add_argument("--to", dest="end", metavar="DATE", help="... to this one, inclusive")
    add_source_arguments(cmd)
    cmd.add_argument("--format", required=True, choices=FORMATS)
    cmd.add_argument("--out", type=Path, metavar="FILE",
                     help="write here (default stdout; required for pdf)")
    cmd.set_defaults(func=_cmd_report)


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)  # noqa: T201
    return code


def _date(flag: str, text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _Usage(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    if args.end is not None and args.start is None:
        raise _Usage("--to needs --from")
    if args.start is not None and args.end is None:
        raise _Usage("--from needs --to")
    start, end = _date("--from", args.start), _date("--to", args.end)
    if start and end and start > end:
        raise _Usage(f"--from {start} is after --to {end}")
    if args.format == "pdf" and args.out is None:
        raise _Usage("--format pdf writes a binary file: give --out FILE")
    return {"alloc_id": args.alloc, "day": _date("--date", args.date), "start": start,
            "end": end}


def _db_errors() -> tuple[type[BaseException], ...]:
    """What reading the record can raise: SQLAlchemy's errors, and the drivers' own from
    the chain check, which reads through the raw DBAPI cursor."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    errors: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return errors
    return (*errors, psycopg.Error)


def _cmd_report(args: argparse.Namespace) -> int:
    from gateway.audit.report import ReportError, build_report
    from gateway.audit.report_render import render
    from gateway.audit.source import resolve
    from gateway.persistence.store import Database

    try:
        scope = _scope(args)
    except _Usage as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        source = resolve(args)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    db = Database(source.database_url)
    try:
        report = build_report(db, where=source.where, **scope)
    except ReportError as exc:
        return _fail(EXIT_FAILURE, f"{exc} ({source.where})")
    except _db_errors() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(EXIT_FAILURE, f"cannot read the record at {source.where}: {first}")
    finally:
        db.dispose()
    body = render(report, args.format)
    if not report["verification"]["ok"]:
        _fail(EXIT_OK, f"warning: {report['verification']['summary']}")
    if args.out is None:
        assert isinstance(body, str)
        sys.stdout.write(body)
        return EXIT_OK
    try:
        if isinstance(body, bytes):
            args.out.write_bytes(body)
        else:
            args.out.write_text(body, encoding="utf-8")
    except OSError as exc:
        return _fail(EXIT_FAILURE, f"cannot write {args.out}: {exc.strerror or exc}")
    return EXIT_OK
