"""`fixalloc alloc resend|replace|cancel ALLOC_ID --reason ...` and `fixalloc exceptions`.

An action on an allocation goes to the running daemon over its HTTP API (the dispatcher
owns the state and the sessions), with the bearer token when the config names one, and
is recorded there with the actor and the reason. The exceptions queue is read from the
database directly, so it can be looked at with the daemon down.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

EXIT_OK, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2


def _config(path: str) -> Any:
    from gateway.config import load_config

    return load_config(path)


def _token(config: Any) -> str | None:
    from gateway.secrets import resolve_secret

    if not config.http.api_token_env:
        return None
    secrets = config.resolve(config.gateway.secrets_file) if config.gateway.secrets_file else None
    return resolve_secret("http", config.http.api_token_env, secrets)


def _alloc(args: argparse.Namespace) -> int:
    try:
        config = _config(args.config)
        token = _token(config)
    except Exception as exc:
        # A bad config or a missing token: say which, in one line.
        sys.stderr.write(f"fixalloc: {exc}\n")
        return EXIT_REFUSED
    actor = args.actor or f"cli:{getpass.getuser()}"
    body = json.dumps({"reason": args.reason, "actor": actor}).encode()
    request = urllib.request.Request(
        f"http://{config.http.host}:{config.http.port}/allocations/{args.alloc_id}/{args.action}",
        data=body, method="POST",
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        # http:// to the host and port of the config's own [http] section, nothing else.
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
            result = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        sys.stderr.write(f"fixalloc: {args.action} {args.alloc_id} refused ({exc.code}): "
                         f"{detail}\n")
        return EXIT_REFUSED
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"fixalloc: the daemon at {config.http.host}:{config.http.port} "
                         f"did not answer: {exc}\n")
        return EXIT_UNREACHABLE
    sys.stdout.write(f"{args.action} {args.alloc_id}: sent {result.get('result')} "
                     f"(recorded for {result.get('actor')})\n")
    return EXIT_OK


def _exceptions(args: argparse.Namespace) -> int:
    from gateway.persistence.store import Database

    config = _config(args.config)
    db = Database(config.database_url)
    try:
        db.migrate()  # a database the daemon never opened has no queue yet: an empty one
        rows = db.exceptions(state=None if args.state == "all" else args.state,
                             trade_date=args.date)
    finally:
        db.dispose()
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return EXIT_OK
    if not rows:
        sys.stdout.write("no exceptions\n")
    for row in rows:
        target = row["individual_alloc_id"] or row["alloc_id"] or row["order_id"] or "-"
        sys.stdout.write(f"#{row['id']:<5} {row['state']:<8} {row['kind']:<18} {target}\n"
                         f"       {row['reason']}\n       next: {row['next_step']}\n")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    alloc = sub.add_parser("alloc", help="act on an allocation through the running daemon")
    actions = alloc.add_subparsers(dest="action", required=True)
    helps = {"resend": "a rejected J again as a fresh J New with a new AllocID",
             "replace": "a J Replace (or Cancel + New, as the broker wants) with the "
                        "allocation decided under the current rulebook and reference data",
             "cancel": "a J Cancel of the allocation"}
    for name, text in helps.items():
        p = actions.add_parser(name, help=text)
        p.add_argument("alloc_id")
        p.add_argument("--reason", required=True, help="why (recorded with the action)")
        p.add_argument("--config", default=os.environ.get("FIXALLOC_CONFIG",
                                                          "config/fixalloc.toml"))
        p.add_argument("--actor", help="who (default: cli:<login name>)")
        p.set_defaults(func=_alloc)
    ex = sub.add_parser("exceptions", help="the exceptions queue: what needs a person")
    ex.add_argument("--config", default=os.environ.get("FIXALLOC_CONFIG",
                                                       "config/fixalloc.toml"))
    ex.add_argument("--state", choices=["open", "resolved", "all"], default="open")
    ex.add_argument("--date", help="trade date YYYY-MM-DD")
    ex.add_argument("--format", choices=["table", "json"], default="table")
    ex.set_defaults(func=_exceptions)
