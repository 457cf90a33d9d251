"""How the live path notes its writes for the sealer: triggers, armed per connection.

Every INSERT, UPDATE and DELETE on an audited table leaves a note (table, row key, op) in
`audit_pending`, in the writing transaction; the sealer (chain_seal.py) turns the notes
into chain entries. The notes are written by the database itself, by triggers, so the
FIX and dispatcher threads pay a b-tree insert in C per written row and no Python at all
(a Python listener on every statement cost the ingest path about a fifth of its rate,
most of it in GIL hand-offs between the FIX threads and the dispatcher).

Only the gateway's own connections note: a write from the sqlite3 shell or psql leaves
no note, so its row no longer matches its latest entry and `audit verify` names it.
- SQLite: the triggers are TEMP triggers, created on each of the gateway's connections
  when it opens; they exist for no other connection.
- PostgreSQL: the triggers are in the schema (migration 0011, and each later migration
  that adds a table) and note only when the session has `fixalloc.chain = 'on'`, which
  the gateway sets on each connection it opens.
Someone who arms a session of his own the same way has his writes sealed like the
gateway's: that is the forged-note limit docs/audit.md describes, which the exported
checkpoints do not cover either.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Table, event

if TYPE_CHECKING:
    from gateway.audit.chain import Chain

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")

PG_NOTE_FUNCTION = """
CREATE OR REPLACE FUNCTION fixalloc_note() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_key text;
  new_key text;
BEGIN
  IF current_setting('fixalloc.chain', true) IS DISTINCT FROM 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_key := to_jsonb(OLD) ->> TG_ARGV[0];
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_key := to_jsonb(NEW) ->> TG_ARGV[0];
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO audit_pending (table_name, row_key, op) VALUES (TG_TABLE_NAME, new_key, 'insert');
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO audit_pending (table_name, row_key, op) VALUES (TG_TABLE_NAME, old_key, 'delete');
  ELSE
    INSERT INTO audit_pending (table_name, row_key, op) VALUES (TG_TABLE_NAME, old_key, 'update');
    IF new_key IS DISTINCT FROM old_key THEN
      INSERT INTO audit_pending (table_name, row_key, op)
        VALUES (TG_TABLE_NAME, new_key, 'update');
    END IF;
  END IF;
  RETURN NULL;
END $$
"""


def _checked(table: str, pk: str) -> None:
    # Names are spliced into DDL: only the schema's own lower-case identifiers.
    for name in (table, pk):
        if not _NAME.match(name):
            raise ValueError(f"not a table or column name of the schema: {name!r}")


def pg_note_trigger_sql(table: str, pk: str) -> list[str]:
    """The statements that make PostgreSQL note writes to `table` (key column `pk`).

    For migrations: run them after creating an audited table."""
    _checked(table, pk)
    return [PG_NOTE_FUNCTION,
            f"DROP TRIGGER IF EXISTS fixalloc_note ON {table}",
            f"CREATE TRIGGER fixalloc_note AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION fixalloc_note('{pk}')"]


def sqlite_note_trigger_sql(table: str, pk: str) -> list[str]:
    """The TEMP triggers that make one SQLite connection note writes to `table`."""
    _checked(table, pk)
    note = "INSERT INTO audit_pending (table_name, row_key, op) VALUES"
    return [
        f"CREATE TEMP TRIGGER IF NOT EXISTS fixalloc_note_{table}_i AFTER INSERT ON "
        f"main.{table} BEGIN {note} ('{table}', new.{pk}, 'insert'); END",
        f"CREATE TEMP TRIGGER IF NOT EXISTS fixalloc_note_{table}_u AFTER UPDATE ON "
        f"main.{table} BEGIN {note} ('{table}', old.{pk}, 'update'); "
        f"INSERT INTO audit_pending (table_name, row_key, op) SELECT '{table}', new.{pk}, "
        f"'update' WHERE new.{pk} IS NOT old.{pk}; END",
        f"CREATE TEMP TRIGGER IF NOT EXISTS fixalloc_note_{table}_d AFTER DELETE ON "
        f"main.{table} BEGIN {note} ('{table}', old.{pk}, 'delete'); END",
    ]


def arm(engine: Engine, chain: Chain, audited: dict[str, Table], pk: Any) -> None:
    """Arm every connection `engine` opens while the chain is on.

    A connection opened while it is off (a migration's) never notes; Database.migrate
    closes the pooled connections around the upgrade for that reason. SQLite tables that
    do not exist yet when a connection opens get no trigger on it, which is why the pool
    is closed again after the upgrade."""

    @event.listens_for(engine, "connect")
    def _arm(dbapi_conn: Any, _record: Any) -> None:
        if not chain.on:
            return
        cur = dbapi_conn.cursor()
        try:
            if engine.dialect.name == "sqlite":
                cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                present = {row[0] for row in cur.fetchall()}
                if "audit_pending" not in present:
                    return  # a database from before the chain (migrate adopts its rows)
                for name in sorted(present & audited.keys()):
                    for sql in sqlite_note_trigger_sql(name, pk(audited[name])):
                        cur.execute(sql)
            else:
                cur.execute("SELECT to_regclass('audit_pending') IS NOT NULL")
                if not cur.fetchone()[0]:
                    return
                cur.execute("SET fixalloc.chain = 'on'")
                dbapi_conn.commit()  # psycopg opened a transaction for the SET
            chain.armed = True
        finally:
            cur.close()
