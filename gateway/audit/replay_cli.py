"""`fixalloc audit replay`: decide again from the stored inputs, prove the decision identical.

    fixalloc audit replay ALLOC_ID (--state-dir DIR | --config FILE) [--json]
    fixalloc audit replay --date YYYY-MM-DD (--state-dir DIR | --config FILE) [--json]

Exit codes: 0 every replayed decision is byte-identical to the stored one; 1 one differs,
cannot be replayed (the reason is named) or the allocation is unknown; 2 bad arguments;
78 a bad --state-dir / --config, or a database that cannot be read.
The database is opened read-only: a replay changes nothing in the record.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from gateway.audit.replay import ReplayResult
    from gateway.persistence.store import Database

PROG = "fixalloc audit replay"


def _trade_date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def add_command(audit_sub: Any) -> None:
    from gateway.audit.source import add_source_arguments

    cmd = audit_sub.add_parser(
        "replay", help="rebuild decisions from the stored inputs with today's code and prove "
                       "them byte-identical to the stored ones",
        description="Rebuild an allocation's decision (or every one of a trade date) from "
                    "the stored fills, rulebook and reference-data versions, and compare "
                    "the canonical JSON byte for byte. Read-only.")
    cmd.add_argument("alloc_id", nargs="?", metavar="ALLOC_ID", help="e.g. FA2026...-J1")
    cmd.add_argument("--date", type=_trade_date, metavar="YYYY-MM-DD",
                     help="replay every allocation of this trade date instead")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    add_source_arguments(cmd)
    cmd.set_defaults(func=_cmd_replay)


# -- opening the record read-only -----------------------------------------------------------


def read_only_engine(url: str) -> Engine:
    """An engine that cannot write to the database `url` names.

    SQLite: a cleanly closed database (no -wal file) is opened `immutable`, which creates
    no -wal/-shm file beside it; one with a -wal (a gateway running, or killed) is opened
    `mode=ro`, which reads the WAL too. PostgreSQL: every transaction is read-only.
    """
    from sqlalchemy import create_engine, event

    if not url.startswith("sqlite"):
        return create_engine(url, connect_args={"options": "-c default_transaction_read_only=on"})
    path = Path(url.split("///", 1)[-1].split("?", 1)[0])
    if not path.is_file():
        raise FileNotFoundError(f"no database file at {path}")
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
    ro = create_engine(f"sqlite+pysqlite:///file:{quote(str(path.resolve()))}?{mode}&uri=true")

    @event.listens_for(ro, "connect")
    def _query_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only=ON")

    return ro


@contextmanager
def open_read_only(url: str) -> Iterator[Database]:
    """The gateway's Database queries over a read-only engine (Database's own __init__
    would create directories, switch to WAL and install a writer lock)."""
    from gateway.persistence.store import Database

    class ReadOnlyDatabase(Database):
        def __init__(self, url: str) -> None:
            self.url = url
            self.engine = read_only_engine(url)

    db = ReadOnlyDatabase(url)
    try:
        yield db
    finally:
        db.engine.dispose()


# -- the command ----------------------------------------------------------------------------


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)  # noqa: T201
    return code


def _say(text: str = "") -> None:
    print(text)  # noqa: T201


def _cmd_replay(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.audit import replay
    from gateway.audit.source import resolve

    if bool(args.alloc_id) == bool(args.date):
        return _fail(EXIT_USAGE, "name one ALLOC_ID or give --date YYYY-MM-DD (not both)")
    try:
        source = resolve(args)
        with open_read_only(source.database_url) as db:
            if args.date:
                results = replay.replay_all(db, trade_date=args.date, config=source.config)
            else:
                results = [replay.replay_allocation(db, args.alloc_id, config=source.config)]
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except (FileNotFoundError, SQLAlchemyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(EXIT_CONFIG, f"cannot read the record: {first}")
    counted = [r for r in results if r.counted]
    ok = all(r.identical for r in counted)
    if args.json:
        doc: Any = results[0].to_json() if not args.date else {
            "trade_date": args.date, "total": len(counted),
            "identical": sum(r.identical for r in counted),
            "not_counted": [r.alloc_id for r in results if not r.counted],
            "results": [r.to_json() for r in results]}
        _say(json.dumps(doc, indent=2, sort_keys=True))
    elif args.date:
        _print_day(args.date, results, counted)
    else:
        _print_one(results[0])
    return EXIT_OK if ok else EXIT_FAILURE


def _label(r: ReplayResult) -> str:
    from gateway.audit.replay import TRANS_TYPES

    return f"{r.alloc_id} ({TRANS_TYPES.get(r.trans_type or '', 'J')})" if r.trans_type \
        else r.alloc_id


def _verdict(r: ReplayResult) -> str:
    return {"identical": "identical", "different": "DIFFERS",
            "unreplayable": "CANNOT REPLAY", "no_decision": "not counted"}[r.outcome]


def _print_one(r: ReplayResult) -> None:
    _say(f"{_label(r)}: {_verdict(r)}" + ("" if r.identical else f": {r.reason}"))
    if r.stored_sha256:
        same = r.stored_sha256 == r.replayed_sha256
        _say(f"  canonical decision sha256: stored {r.stored_sha256}" + (
            " = replayed" if same else f", replayed {r.replayed_sha256 or '-'}"))
    if r.inputs_hash_stored:
        match = {True: "matches", False: f"differs (replayed {r.inputs_hash_replayed}): the "
                 "inputs themselves differ", None: "not recomputed"}[r.inputs_hash_matches]
        _say(f"  inputs hash: stored {r.inputs_hash_stored} {match}")
        _say(f"  engine version: decided by {r.stored_engine_version or 'unknown'}, "
             f"replayed with {r.replay_engine_version}")
    for note in r.notes:
        _say(f"  {note}")
    _details(r.differences)


def _details(differences: Sequence[str]) -> None:
    for line in differences:
        _say(f"    - {line}")


def _print_day(day: str, results: Sequence[ReplayResult], counted: Sequence[ReplayResult]
               ) -> None:
    for r in results:
        _say(f"{_label(r)}: {_verdict(r)}" + ("" if r.identical else f": {r.reason}"))
        if r.outcome == "different":
            _details(r.differences)
    same = sum(r.identical for r in counted)
    _say(f"{same} of {len(counted)} identical" + (f" on {day}" if not counted else ""))
    skipped = len(results) - len(counted)
    if skipped:
        _say(f"({skipped} J Cancel not counted: a Cancel carries no decision of its own)")
