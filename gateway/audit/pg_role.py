"""The PostgreSQL role the daemon runs as: it may add to the record but not rewrite it.

The schema's owner runs the migrations (`fixalloc audit grants` prints what to grant after
each upgrade); the daemon connects as a role that holds INSERT and SELECT only on the
tables that are append-only by design (the wire log, decisions, audit events, versions and
the chain itself) and full rights on the tables whose rows are state (orders, allocations,
tickets, ...), each of whose writes is itself chained. So a daemon whose password leaks
cannot edit a stored message or decision, nor the chain that covers the state rows.
"""

from __future__ import annotations

import re

from gateway.audit import chain
from gateway.persistence import audit_tables

APPEND_ONLY = ("approval_votes", "audit_chain", "audit_events", "decisions", "fix_messages",
               "order_rejections", "refdata_versions", "rulebook_versions")
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grants_sql(role: str, *, scheduler_table: str = "apscheduler_jobs") -> list[str]:
    """GRANT statements for `role` (a lower-case SQL identifier) on the current schema."""
    if not _ROLE.match(role):
        raise ValueError(f"invalid role name {role!r}: lower-case letters, digits and _")
    tables = sorted({*chain.audited_tables(), audit_tables.audit_chain.name,
                     audit_tables.audit_checkpoints.name, audit_tables.audit_pending.name})
    out = [f"GRANT USAGE ON SCHEMA public TO {role};",
           f"GRANT SELECT ON alembic_version TO {role};"]
    for name in tables:
        rights = "SELECT, INSERT" if name in APPEND_ONLY else "SELECT, INSERT, UPDATE, DELETE"
        out.append(f"REVOKE ALL ON {name} FROM {role};")
        out.append(f"GRANT {rights} ON {name} TO {role};")
    # The sweep's job store, once APScheduler has created it (the first start).
    out.append(f"DO $$ BEGIN IF to_regclass('{scheduler_table}') IS NOT NULL THEN EXECUTE "
               f"'GRANT SELECT, INSERT, UPDATE, DELETE ON {scheduler_table} TO {role}'; "
               "END IF; END $$;")
    out.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};")
    return out
