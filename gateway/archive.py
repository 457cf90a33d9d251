"""Closed days leave the database for compressed, verifiable files, and can come back.

Advisers keep these records five years (Rule 204-2); the live database need not. A day D is
archived as a whole: the orders, refusals, fills, decisions, allocations, lines,
confirmations, exceptions, sweep reports and per-order audit events of trade date D, plus
the wire log and the order-less audit events recorded on UTC day D. Days go in calendar
order and the run stops at the first day that is not closed, so the database always holds
an unbroken suffix of the history and an archive file never depends on a later one.

A day is closed when every order of it has left the dispatcher's memory (`released_at`),
no exception about it is open, and every ticket is answered or the day's sweep has passed
the affirmation cut-off. The daemon may keep running: it never reads a released order of a
closed day unless a late message names it, and such a message is then an unknown order.

The file, `fixalloc-D.jsonl.gz`, holds one JSON object per row (`{"t": table, "r": row}`)
after a header; wire messages are the exact bytes in base64 and decision documents their
exact text, so reading one needs neither this program's compression dictionary nor its
schema. Its manifest, `fixalloc-D.manifest.json`, carries the file's SHA-256 and each
table's row count and SHA-256 over its rows; rows are deleted only after the written file
has been read back and matched against what the database holds.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, LargeBinary, Table, and_, delete, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from gateway.persistence import lifecycle_tables as lt
from gateway.persistence import tables as t
from gateway.persistence import wire_codec
from gateway.persistence.store import Database, _compressed

FORMAT = "fixalloc-archive"
VERSION = 1
# Parents before children: the order rows are restored in and deleted in reverse.
TABLES: tuple[Table, ...] = (
    t.orders, t.order_rejections, t.decisions, t.allocations, t.allocation_lines,
    t.broker_reports, lt.confirmations, lt.exceptions, lt.sweep_reports, t.audit_events,
    t.fix_messages)
_BY_NAME = {tb.name: tb for tb in TABLES}


class ArchiveError(Exception):
    """An archive that cannot be written, read or trusted; the message says which and why."""


@dataclass
class DayFile:
    trade_date: str
    path: Path
    manifest: Path
    rows: dict[str, int] = field(default_factory=dict)
    sha256: str = ""


def _day_bounds(day: str) -> tuple[datetime, datetime]:
    start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _selections(day: str) -> dict[str, ColumnElement[bool]]:
    """Each table's rows that belong to day `day` (see the module's docstring)."""
    orders = select(t.orders.c.order_id).where(t.orders.c.trade_date == day)
    allocs = select(t.allocations.c.alloc_id).where(t.allocations.c.order_id.in_(orders))
    start, end = _day_bounds(day)
    ev, ex = t.audit_events.c, lt.exceptions.c
    return {
        "orders": t.orders.c.trade_date == day,
        "order_rejections": t.order_rejections.c.trade_date == day,
        "decisions": t.decisions.c.order_id.in_(orders),
        "allocations": t.allocations.c.order_id.in_(orders),
        "allocation_lines": t.allocation_lines.c.alloc_id.in_(allocs),
        "broker_reports": or_(t.broker_reports.c.trade_date == day,
                              t.broker_reports.c.order_id.in_(orders)),
        "confirmations": lt.confirmations.c.alloc_id.in_(allocs),
        "exceptions": or_(ex.trade_date == day, ex.order_id.in_(orders)),
        "sweep_reports": lt.sweep_reports.c.trade_date == day,
        "audit_events": or_(ev.order_id.in_(orders), ev.alloc_id.in_(allocs),
                            and_(ev.order_id.is_(None), ev.alloc_id.is_(None),
                                 ev.recorded_at >= start, ev.recorded_at < end)),
        "fix_messages": and_(t.fix_messages.c.recorded_at >= start,
                             t.fix_messages.c.recorded_at < end),
    }


def _order_key(table: Table) -> list[Any]:
    return list(table.primary_key.columns)


def _encode(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON values; wire bytes and decision documents in their exact, plain form."""
    out: dict[str, Any] = {}
    for col in table.columns:
        value = row[col.name]
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(col.type, LargeBinary) and value is not None:
            value = base64.b64encode(bytes(value)).decode("ascii")
        out[col.name] = value
    if table is t.fix_messages:
        wire = wire_codec.unpack(bytes(row["raw"]), bool(row["compressed"]))
        out["raw"], out["compressed"] = base64.b64encode(wire).decode("ascii"), False
    if table is t.decisions and row.get("canonical_zlib") is not None:
        import zlib

        out["canonical_json"] = zlib.decompress(bytes(row["canonical_zlib"])).decode("utf-8")
        out["canonical_zlib"] = None
    return out


def _decode(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `_encode`, stored as the gateway stores a new row today."""
    out: dict[str, Any] = {}
    for col in table.columns:
        value = row.get(col.name)
        if value is not None and isinstance(col.type, t.UtcDateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(col.type, LargeBinary):
            value = base64.b64decode(value)
        out[col.name] = value
    if table is t.fix_messages:
        out["raw"], out["compressed"] = wire_codec.pack(out["raw"])
    if table is t.decisions and out.get("canonical_json") is not None:
        # Stored as the gateway stores a new decision (one compression, in store.py).
        out = {**_compressed(out), "canonical_json": None}
    return out


def _line(table: str, row: Mapping[str, Any]) -> bytes:
    return json.dumps({"t": table, "r": row}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii") + b"\n"


def _rows(conn: Connection, table: Table, where: ColumnElement[bool]) -> Iterator[Any]:
    query = select(table).where(where).order_by(*_order_key(table))
    yield from conn.execution_options(stream_results=True, yield_per=2000).execute(
        query).mappings()


# -- which days ----------------------------------------------------------------------------

def first_day(db: Database) -> str | None:
    """The earliest day anything is stored for, or None for an empty database."""
    with db.engine.connect() as conn:
        days = [conn.execute(select(func.min(t.orders.c.trade_date))).scalar(),
                conn.execute(select(func.min(t.order_rejections.c.trade_date))).scalar()]
        first_wire = conn.execute(select(func.min(t.fix_messages.c.recorded_at))).scalar()
    if first_wire is not None:
        days.append(first_wire.astimezone(UTC).date().isoformat())
    known = [d for d in days if d]
    return min(known) if known else None


def why_open(db: Database, day: str, affirmation_cutoff: str) -> list[str]:
    """The reasons day `day` is not closed yet; an empty list when it may be archived."""
    reasons: list[str] = []
    orders = select(t.orders.c.order_id).where(t.orders.c.trade_date == day)
    allocs = select(t.allocations.c.alloc_id).where(t.allocations.c.order_id.in_(orders))
    with db.engine.connect() as conn:
        held = conn.execute(select(t.orders.c.order_id).where(and_(
            t.orders.c.trade_date == day, t.orders.c.released_at.is_(None)))
            .order_by(t.orders.c.order_id).limit(4)).scalars().all()
        if held:
            reasons.append(f"orders not finished: {', '.join(held)}"
                           + (" and more" if len(held) == 4 else ""))
        ex = lt.exceptions.c
        n_open = conn.execute(select(func.count()).where(and_(
            ex.state == "open", or_(ex.trade_date == day, ex.order_id.in_(orders))))).scalar()
        if n_open:
            reasons.append(f"{n_open} open exception(s)")
        ln = t.allocation_lines.c
        waiting = conn.execute(select(func.count()).where(and_(
            ln.alloc_id.in_(allocs), ln.ticket_state == "awaiting_ak"))).scalar()
        swept = conn.execute(select(func.count()).where(and_(
            lt.sweep_reports.c.trade_date == day,
            lt.sweep_reports.c.checkpoint >= affirmation_cutoff))).scalar()
        if waiting and not swept:
            reasons.append(f"{waiting} ticket(s) await their AK and no sweep at or after "
                           f"{affirmation_cutoff} has run for the day")
    return reasons


# -- writing, checking, deleting -------------------------------------------------------------

def write_day(db: Database, day: str, directory: Path) -> DayFile:
    """Write day `day`'s rows to its file and manifest (nothing is deleted here)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = DayFile(day, directory / f"fixalloc-{day}.jsonl.gz",
                  directory / f"fixalloc-{day}.manifest.json")
    digests: dict[str, Any] = {}
    partial = out.path.with_name(out.path.name + ".partial")
    with db.engine.connect() as conn, gzip.open(partial, "wb", compresslevel=9) as gz:
        gz.write(_line("header", {"format": FORMAT, "version": VERSION, "trade_date": day}))
        for table, where in _selections(day).items():
            h, n = hashlib.sha256(), 0
            for row in _rows(conn, _BY_NAME[table], where):
                line = _line(table, _encode(_BY_NAME[table], row))
                h.update(line)
                gz.write(line)
                n += 1
            out.rows[table], digests[table] = n, h.hexdigest()
    out.sha256 = _file_sha256(partial)
    partial.replace(out.path)
    manifest = {"format": FORMAT, "version": VERSION, "trade_date": day,
                "file": out.path.name, "sha256": out.sha256, "bytes": out.path.stat().st_size,
                "created_at": datetime.now(UTC).isoformat(),
                "tables": {k: {"rows": out.rows[k], "sha256": digests[k]} for k in out.rows}}
    out.manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) from an archive file in the order written; the header is checked."""
    with gzip.open(path, "rb") as gz:
        header = json.loads(gz.readline())
        if header.get("t") != "header" or header["r"].get("format") != FORMAT:
            raise ArchiveError(f"{path}: not a fixalloc archive")
        if header["r"].get("version") != VERSION:
            raise ArchiveError(f"{path}: archive version {header['r'].get('version')} "
                               f"is not {VERSION}")
        for raw in gz:
            item = json.loads(raw)
            yield item["t"], item["r"]


def verify(manifest_path: Path) -> dict[str, Any]:
    """Check a file against its manifest: the file's hash, then every table's rows and hash.

    Raises ArchiveError naming the first thing that does not match.
    """
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{manifest_path}: unreadable manifest: {exc}") from None
    path = manifest_path.with_name(manifest["file"])
    if not path.exists():
        raise ArchiveError(f"{path}: missing (named by {manifest_path.name})")
    if _file_sha256(path) != manifest["sha256"]:
        raise ArchiveError(f"{path}: SHA-256 differs from the manifest: the file was changed")
    hashes = {k: hashlib.sha256() for k in manifest["tables"]}
    counts = dict.fromkeys(manifest["tables"], 0)
    try:
        for table, row in read_rows(path):
            if table not in hashes:
                raise ArchiveError(f"{path}: rows of a table the manifest does not list: {table}")
            hashes[table].update(_line(table, row))
            counts[table] += 1
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise ArchiveError(f"{path}: unreadable: {exc}") from None
    for table, want in manifest["tables"].items():
        if counts[table] != want["rows"] or hashes[table].hexdigest() != want["sha256"]:
            raise ArchiveError(f"{path}: table {table}: {counts[table]} rows read, "
                               f"{want['rows']} in the manifest, or their hash differs")
    return manifest


def delete_day(db: Database, day: str, expected: Mapping[str, int]) -> None:
    """Delete the day's rows in one transaction, if they are still exactly what was written."""
    selections = _selections(day)
    with db.engine.begin() as conn:
        for table in reversed(TABLES):
            where = selections[table.name]
            n = conn.execute(select(func.count()).select_from(table).where(where)).scalar()
            if n != expected[table.name]:
                raise ArchiveError(f"{day}: {table.name} changed while it was archived "
                                   f"({expected[table.name]} rows written, {n} now); "
                                   "nothing was deleted")
            conn.execute(delete(table).where(where))


def restore(db: Database, paths: list[Path]) -> dict[str, int]:
    """Load archive files into a database (the live one, or an empty one for an inquiry).

    Rows are inserted in the order written, parents first, a few thousand at a time.
    """
    counts: dict[str, int] = {}
    with db.engine.begin() as conn:
        for path in paths:
            pending: list[dict[str, Any]] = []
            current: str | None = None
            for table, row in read_rows(path):
                if table != current or len(pending) >= 2000:
                    _flush(conn, current, pending, counts)
                    current, pending = table, []
                pending.append(_decode(_BY_NAME[table], row))
            _flush(conn, current, pending, counts)
        if db.dialect == "postgresql":
            # Ids were inserted as they were: move each sequence past them.
            for table_obj in TABLES:
                if "id" in table_obj.c:
                    top = select(func.max(table_obj.c.id)).scalar_subquery()
                    conn.execute(select(func.setval(
                        func.pg_get_serial_sequence(table_obj.name, "id"),
                        func.coalesce(top, 1))))
    return counts


def _flush(conn: Connection, table: str | None, rows: list[dict[str, Any]],
           counts: dict[str, int]) -> None:
    if table is None or not rows:
        return
    conn.execute(_BY_NAME[table].insert(), rows)
    counts[table] = counts.get(table, 0) + len(rows)
