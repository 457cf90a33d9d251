"""`fixalloc users ...`: local users, their roles, second factors and API tokens.

    fixalloc users add NAME --role ROLE [--role ROLE ...] [--totp] [--password-stdin]
    fixalloc users passwd NAME [--password-stdin] [--totp | --no-totp]
    fixalloc users totp NAME [--remove]
    fixalloc users roles NAME --role ROLE [--role ROLE ...]
    fixalloc users disable NAME | enable NAME
    fixalloc users list [--json]
    fixalloc users token NAME [--label LABEL] | --revoke TOKEN_ID

each with --config CFG (the gateway's database) or --state-dir DIR (a demo's), and an
optional --reason for the record. Passwords are read from the terminal (twice) or, with
--password-stdin, as one line from standard input; never from the command line, where
`ps` and the shell history would show them. Every change is recorded as a `user_action`
event with the actor `cli:<login>`.

Exit codes: 0 done; 1 refused (an unknown user, a weak password, an unknown role); 2 bad
arguments; 78 a bad config or no database.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError


def add_command(sub: Any) -> None:
    from gateway.audit.source import add_source_arguments
    from gateway.auth.roles import ROLES

    users = sub.add_parser("users", help="local users, roles, TOTP and API tokens")
    users_sub = users.add_subparsers(dest="users_command", required=True)

    def command(name: str, help_text: str, *, changes: bool = True) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = users_sub.add_parser(name, help=help_text)
        if changes:
            cmd.add_argument("username")
            cmd.add_argument("--reason", help="why, for the record")
        add_source_arguments(cmd)
        cmd.set_defaults(func=_run)
        return cmd

    role_help = f"one of {', '.join(ROLES)}; repeat for several"
    add = command("add", "add a user (prompts for the password)")
    add.add_argument("--role", action="append", required=True, help=role_help)
    add.add_argument("--totp", action="store_true",
                     help="enroll a TOTP second factor and print its provisioning URI")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password as one line from standard input")
    passwd = command("passwd", "set a new password (ends the user's login sessions)")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line from standard input")
    factor = passwd.add_mutually_exclusive_group()
    factor.add_argument("--totp", action="store_true", help="also enroll a new TOTP secret")
    factor.add_argument("--no-totp", action="store_true", help="also remove the TOTP factor")
    totp = command("totp", "enroll a new TOTP secret (prints its provisioning URI)")
    totp.add_argument("--remove", action="store_true", help="remove the second factor")
    roles = command("roles", "replace a user's roles")
    roles.add_argument("--role", action="append", required=True, help=role_help)
    command("disable", "refuse the user's logins and API tokens; end its sessions")
    command("enable", "let a disabled user in again")
    listing = command("list", "the users, their roles, TOTP and live API tokens",
                      changes=False)
    listing.add_argument("--json", action="store_true")
    token = command("token", "issue an API token (printed once) or revoke one")
    token.add_argument("--label", default="api", help="what the token is for")
    token.add_argument("--revoke", metavar="TOKEN_ID", help="revoke this token instead")


def _say(text: str) -> None:
    print(text)  # noqa: T201


def _fail(code: int, message: str) -> int:
    print(f"fixalloc users: {message}", file=sys.stderr)  # noqa: T201
    return code


class _NoPassword(Exception):
    pass


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise _NoPassword("no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise _NoPassword("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != first:
        raise _NoPassword("the two passwords differ")
    return first


def _run(args: argparse.Namespace) -> int:
    from gateway.audit.source import resolve
    from gateway.persistence.store import Database

    try:
        source = resolve(args)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    db = Database(source.database_url)
    try:
        db.migrate()
        return _act(args, db)
    finally:
        db.dispose()


def _act(args: argparse.Namespace, db: Any) -> int:
    from gateway.auth.users import UserError, UserStore

    store = UserStore(db)
    actor, reason = f"cli:{getpass.getuser()}", getattr(args, "reason", None)
    what = args.users_command
    try:
        if what == "list":
            return _list(store, args.json)
        if what == "add":
            secret = store.add(args.username, _password(args), args.role, actor=actor,
                               reason=reason, totp=args.totp)
            user = store.get(args.username)
            assert user is not None
            _say(f"added user {user.username} with {_roles(user.roles)}")
            _show_totp(user.username, secret)
        elif what == "passwd":
            store.set_password(args.username, _password(args), actor=actor, reason=reason)
            _say(f"password changed for {args.username.lower()}; its login sessions ended")
            if args.totp or args.no_totp:
                _show_totp(args.username.lower(), store.set_totp(
                    args.username, args.totp, actor=actor, reason=reason))
        elif what == "totp":
            _show_totp(args.username.lower(), store.set_totp(
                args.username, not args.remove, actor=actor, reason=reason))
        elif what == "roles":
            wanted = store.set_roles(args.username, args.role, actor=actor, reason=reason)
            _say(f"{args.username.lower()} now has {_roles(wanted)}")
        elif what in ("disable", "enable"):
            store.set_enabled(args.username, what == "enable", actor=actor, reason=reason)
            _say(f"{args.username.lower()} {what}d"
                 + ("; its login sessions ended and its API tokens are refused"
                    if what == "disable" else ""))
        elif what == "token":
            if args.revoke:
                store.revoke_token(args.username, args.revoke, actor=actor, reason=reason)
                _say(f"token {args.revoke} of {args.username.lower()} revoked")
            else:
                token = store.create_token(args.username, args.label, actor=actor,
                                           reason=reason)
                print("this token is shown once; only its hash is kept. Send it as "  # noqa: T201
                      "'Authorization: Bearer <token>'", file=sys.stderr)
                _say(token)
    except _NoPassword as exc:
        return _fail(EXIT_USAGE, str(exc))
    except UserError as exc:
        return _fail(EXIT_FAILURE, str(exc))
    return EXIT_OK


def _roles(roles: tuple[str, ...]) -> str:
    return f"role{'s' if len(roles) > 1 else ''} {', '.join(roles)}"


def _show_totp(username: str, secret: str | None) -> None:
    from gateway.auth.passwords import provisioning_uri

    if secret is None:
        _say(f"{username} logs in with a password alone (no TOTP)")
        return
    _say(f"TOTP enrolled for {username}: add it to an authenticator app")
    _say(f"  secret           {secret}")
    _say(f"  provisioning URI {provisioning_uri(secret, username)}")


def _list(store: Any, as_json: bool) -> int:
    rows = store.all_users()
    if as_json:
        _say(json.dumps([{**u.public(), "api_tokens": n} for u, n in rows], indent=2))
        return EXIT_OK
    if not rows:
        _say("no users: the HTTP API is open to reads (and to everything without a "
             "machine token); add one with `fixalloc users add`")
        return EXIT_OK
    header = ("username", "roles", "state", "totp", "tokens", "created")
    table = [header] + [
        (u.username, ",".join(u.roles), "enabled" if u.enabled else "disabled",
         "yes" if u.totp else "no", str(n), u.created_at.strftime("%Y-%m-%d %H:%M"))
        for u, n in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        _say("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK
