"""`fixalloc sweep run` and `fixalloc sweep report`.

`run` asks the running daemon to sweep now (POST /sweep/run: the dispatcher runs it, so a
manual run and a scheduled one act and store the same way) and prints the stored report.
`report` reads the stored reports of a trade date straight from the database, with no
daemon. Exit codes: 0 done, 1 no daemon / nothing stored / the daemon could not run it,
2 bad input (arguments, config, token).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, SecretMissingError
from gateway.posttrade.sweep_report import FORMATS, render, stored

RUN_TIMEOUT_SECONDS = 330.0


def add_commands(sub: Any) -> None:
    """Add `sweep run` and `sweep report` to the `fixalloc` sub-command parser."""
    sweep = sub.add_parser("sweep", help="the end-of-day affirmation sweep").add_subparsers(
        dest="sweep_command", required=True)
    run = sweep.add_parser("run", help="run one sweep now on the running daemon and print "
                                       "its report")
    run.add_argument("--config", required=True, help="the daemon's TOML file ([http] section)")
    run.add_argument("--at", help="checkpoint HH:MM, New York time (default: now; 23:59 for a "
                                  "past date)")
    run.add_argument("--date", help="trade date YYYY-MM-DD (default: today in New York)")
    run.add_argument("--format", choices=FORMATS, default="table")
    run.set_defaults(func=_cmd_run)
    report = sweep.add_parser("report", help="print the stored sweep reports of a trade date "
                                             "(reads the database; no daemon needed)")
    report.add_argument("date", help="trade date YYYY-MM-DD")
    report.add_argument("--config", required=True, help="the gateway's TOML file "
                                                        "(its database_url)")
    report.add_argument("--checkpoint", help="only this checkpoint, HH:MM")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.set_defaults(func=_cmd_report)


def _fail(code: int, message: str) -> int:
    print(f"fixalloc sweep: {message}", file=sys.stderr)  # noqa: T201
    return code


def _load(path: str) -> Any:
    from gateway.config import load_config

    return load_config(path)


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.posttrade.sweep import parse_checkpoint, parse_trade_date
    from gateway.secrets import resolve_secret

    try:
        if args.at is not None:
            parse_checkpoint(args.at)
        if args.date is not None:
            parse_trade_date(args.date)
        config = _load(args.config)
    except (ValueError, ConfigError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    http = config.http
    if not http.enabled:
        return _fail(EXIT_FAILURE, f"{config.source}: http.enabled is false, so the daemon "
                                   "has no API to run the sweep on")
    headers = {"Content-Type": "application/json"}
    if http.api_token_env:
        secrets = config.resolve(config.gateway.secrets_file) if config.gateway.secrets_file \
            else None
        try:
            token = resolve_secret("http", http.api_token_env, secrets)
        except SecretMissingError:
            return _fail(EXIT_USAGE, f"the API token variable {http.api_token_env} "
                                     "(http.api_token_env) is not set")
        headers["Authorization"] = f"Bearer {token}"
    host = "127.0.0.1" if http.host in ("", "0.0.0.0", "::") else http.host  # noqa: S104
    url = f"http://{host}:{http.port}/sweep/run"
    body = {k: v for k, v in (("at", args.at), ("date", args.date)) if v is not None}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=RUN_TIMEOUT_SECONDS) as resp:  # noqa: S310
            row = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code in (401, 422):
            return _fail(EXIT_USAGE, f"the daemon refused the run ({exc.code}): {detail}")
        return _fail(EXIT_FAILURE, f"the daemon could not run the sweep ({exc.code}): {detail}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return _fail(EXIT_FAILURE, f"no fixalloc daemon answers on {url} ({reason}); is it "
                                   f"running with {config.source}?")
    print(render([row], args.format, single=True))  # noqa: T201
    return EXIT_OK


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read() or b"null").get("detail")
    except (ValueError, AttributeError):
        return exc.reason if isinstance(exc.reason, str) else str(exc)
    return detail if isinstance(detail, str) else json.dumps(detail)


def _cmd_report(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.persistence.store import Database
    from gateway.posttrade.sweep import parse_checkpoint, parse_trade_date

    try:
        day = parse_trade_date(args.date).isoformat()
        if args.checkpoint is not None:
            parse_checkpoint(args.checkpoint)
        config = _load(args.config)
    except (ValueError, ConfigError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    url = config.database_url
    where = url.split("@")[-1]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path != ":memory:" and not Path(path).is_file():
            return _fail(EXIT_FAILURE, f"no database at {path} (gateway.state_dir or "
                                       "gateway.database_url in the config)")
    db = Database(url)
    try:
        rows = db.sweep_reports(day)
    except SQLAlchemyError as exc:
        return _fail(EXIT_FAILURE, f"cannot read sweep reports from {where}: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    finally:
        db.dispose()
    if args.checkpoint is not None:
        rows = [r for r in rows if r["checkpoint"] == args.checkpoint]
    if not rows:
        at = f" at {args.checkpoint}" if args.checkpoint else ""
        return _fail(EXIT_FAILURE, f"no sweep report for {day}{at} in {where}")
    print(render([stored(r) for r in rows], args.format))  # noqa: T201
    return EXIT_OK
