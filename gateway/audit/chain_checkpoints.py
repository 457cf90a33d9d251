"""Checkpoints of the audit chain: its head at a moment, kept where the database's
administrator cannot reach.

A checkpoint row in the database proves little on its own (whoever can rewrite the chain
can rewrite it too); the copy that counts is the JSON line appended to a file the operator
ships elsewhere, optionally signed with HMAC-SHA256 under a key held outside the database.
`check_exported` then finds a chain that was rewritten (the entry at a checkpoint's
sequence no longer has its hash) or cut short (the entry is gone).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from gateway.persistence.audit_tables import audit_checkpoints
from gateway.persistence.store import Database


def _signed_text(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise ValueError(f"{path}: a checkpoint key must be at least 16 bytes")
    return key


def head(db: Database) -> tuple[int, str] | None:
    with db.engine.connect() as conn:
        cur = conn.connection.cursor()
        try:
            cur.execute("SELECT seq, entry_hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            row = cur.fetchone()
        finally:
            cur.close()
    return None if row is None else (int(row[0]), str(row[1]))


def write_checkpoint(db: Database, *, export: Path | None = None, key: bytes | None = None,
                     where: str = "") -> dict[str, Any] | None:
    """Record the chain head now (None for an empty chain); append it to `export` too."""
    top = head(db)
    if top is None:
        return None
    entry: dict[str, Any] = {"seq": top[0], "head_hash": top[1],
                             "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "database": where}
    with db.engine.begin() as conn:
        conn.execute(insert(audit_checkpoints).values(
            seq=top[0], head_hash=top[1], written_at=entry["written_at"]))
    if export is not None:
        if key is not None:
            entry["signature"] = hmac.new(key, _signed_text(entry), hashlib.sha256).hexdigest()
        export.parent.mkdir(parents=True, exist_ok=True)
        with export.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def check_exported(db: Database, path: Path, key: bytes | None = None) -> list[str]:
    """What an exported checkpoint file says is wrong with the chain ([] when all hold)."""
    problems: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    with db.engine.connect() as conn:
        mark = "?" if conn.dialect.name == "sqlite" else "%s"
        cur = conn.connection.cursor()
        try:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    entry = json.loads(line)
                    seq, expected = int(entry["seq"]), str(entry["head_hash"])
                except (ValueError, KeyError, TypeError) as exc:
                    problems.append(f"{where}: not a checkpoint line ({exc})")
                    continue
                if key is not None:
                    signature = hmac.new(key, _signed_text(entry), hashlib.sha256).hexdigest()
                    if not hmac.compare_digest(signature, str(entry.get("signature", ""))):
                        problems.append(f"{where}: signature does not match (the file was "
                                        "edited, or another key)")
                        continue
                cur.execute(f"SELECT entry_hash FROM audit_chain WHERE seq = {mark}",  # noqa: S608
                            (seq,))
                row = cur.fetchone()
                if row is None:
                    problems.append(f"{where}: entry #{seq} of the checkpoint is gone: the "
                                    "chain was cut short")
                elif row[0] != expected:
                    problems.append(f"{where}: entry #{seq} no longer has the checkpoint's "
                                    "hash: the chain was rewritten")
        finally:
            cur.close()
    return problems
