"""`fixalloc archive`: move closed days to files, check those files, load them back.

    fixalloc archive --config CFG --before DATE [--dir DIR] [--dry-run]
    fixalloc archive --verify MANIFEST [MANIFEST ...]
    fixalloc archive --restore FILE [FILE ...] --into DATABASE_URL

Exit codes: 0 done (every day before DATE archived, every manifest verified, every file
restored); 1 a day before DATE is not closed yet (the days before it were archived and the
reasons are printed) or a file does not verify; 2 bad arguments; 78 a bad config.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError


def add_command(sub: Any) -> None:
    cmd = sub.add_parser("archive", help="move closed trade dates to compressed, verifiable "
                                         "files; verify them; restore them")
    mode = cmd.add_mutually_exclusive_group(required=True)
    mode.add_argument("--before", metavar="DATE",
                      help="archive every closed day before DATE (YYYY-MM-DD), oldest first")
    mode.add_argument("--verify", nargs="+", metavar="MANIFEST", type=Path,
                      help="check archive files against their manifests")
    mode.add_argument("--restore", nargs="+", metavar="FILE", type=Path,
                      help="load archive files (.jsonl.gz) into the database --into names")
    cmd.add_argument("--config", help="the gateway's TOML file (with --before)")
    cmd.add_argument("--dir", type=Path, help="where the files go (default: STATE_DIR/archive)")
    cmd.add_argument("--dry-run", action="store_true",
                     help="with --before: say which days would go, change nothing")
    cmd.add_argument("--into", metavar="DATABASE_URL",
                     help="with --restore: e.g. sqlite:////tmp/inquiry.db (created and "
                          "migrated if new)")
    cmd.set_defaults(func=_cmd_archive)


def _say(text: str) -> None:
    print(text)  # noqa: T201


def _fail(code: int, message: str) -> int:
    print(f"fixalloc archive: {message}", file=sys.stderr)  # noqa: T201
    return code


def _cmd_archive(args: argparse.Namespace) -> int:
    from gateway.archive import ArchiveError

    try:
        if args.verify:
            return _verify(args.verify)
        if args.restore:
            if not args.into:
                return _fail(EXIT_USAGE, "--restore needs --into DATABASE_URL")
            return _restore(args.restore, args.into)
        if not args.config:
            return _fail(EXIT_USAGE, "--before needs --config")
        return _archive(args)
    except ArchiveError as exc:
        return _fail(EXIT_FAILURE, str(exc))


def _verify(manifests: list[Path]) -> int:
    from gateway.archive import ArchiveError, verify

    bad = 0
    for path in manifests:
        try:
            manifest = verify(path)
        except ArchiveError as exc:
            bad += 1
            _say(f"FAILED  {exc}")
            continue
        rows = sum(x["rows"] for x in manifest["tables"].values())
        _say(f"ok      {manifest['trade_date']}  {rows} rows  {manifest['file']}  "
             f"sha256 {manifest['sha256'][:16]}")
    return EXIT_FAILURE if bad else EXIT_OK


def _restore(files: list[Path], url: str) -> int:
    from gateway.archive import restore
    from gateway.persistence.store import Database

    db = Database(url)
    try:
        db.migrate()
        counts = restore(db, files)
    finally:
        db.dispose()
    _say(f"restored {len(files)} file(s) into {url}: "
         + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return EXIT_OK


def _archive(args: argparse.Namespace) -> int:
    from gateway.archive import delete_day, first_day, verify, why_open, write_day
    from gateway.config import load_config
    from gateway.persistence.store import Database
    from gateway.posttrade.sweep_settings import parse_trade_date

    try:
        before = parse_trade_date(args.before)
    except ValueError as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    today = datetime.now(ZoneInfo(config.sweep.time_zone)).date()
    if before > today:
        return _fail(EXIT_USAGE, f"--before {before} is after today ({today}): a day still "
                                 "trading cannot be archived")
    directory = args.dir or config.state_dir / "archive"
    db = Database(config.database_url)
    try:
        db.migrate()
        start = first_day(db)
        day = date.fromisoformat(start) if start else before
        archived = 0
        while day < before:
            key = day.isoformat()
            reasons = why_open(db, key, config.sweep.affirmation_cutoff)
            if reasons:
                _say(f"stopped at {key}: not closed: {'; '.join(reasons)}")
                _say(f"{archived} day(s) archived before it")
                return EXIT_FAILURE
            if args.dry_run:
                _say(f"would archive {key}")
            else:
                written = write_day(db, key, directory)
                if not any(written.rows.values()):
                    written.path.unlink()
                    written.manifest.unlink()
                else:
                    verify(written.manifest)
                    delete_day(db, key, written.rows)
                    db.append_event("day_archived", recorded_at=datetime.now(UTC), detail={
                        "trade_date": key, "file": str(written.path),
                        "sha256": written.sha256, "rows": written.rows})
                    archived += 1
                    total = sum(written.rows.values())
                    _say(f"archived {key}: {total} rows -> {written.path} "
                         f"({written.path.stat().st_size} bytes, sha256 "
                         f"{written.sha256[:16]})")
            day += timedelta(days=1)
        _say(f"{archived} day(s) archived; every day before {before} is archived"
             if not args.dry_run else "dry run: nothing changed")
        return EXIT_OK
    finally:
        db.dispose()
