"""What the auth package writes to `audit_events` (the tamper-evident record).

    user_action    a state-changing action over HTTP or the CLI: detail {actor, action,
                   operation, target, reason, via, outcome}; `action` is one of
                   roles.ACTIONS, `operation` the precise thing done (e.g. user.disable)
    login          a successful login: {username, remote, session_id}
    login_failed   {username, remote, reason}; never the password or the code
    logout         {username, session_id}
    access_denied  an authenticated caller asked for an action its roles do not allow

Events that go with a change to the users' tables are written in that change's own
transaction, so the record never shows a change that did not happen or misses one that did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from gateway.persistence import tables as t

USER_ACTION = "user_action"
LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGOUT = "logout"
ACCESS_DENIED = "access_denied"


def write(conn: Connection, kind: str, at: datetime, detail: Mapping[str, Any], *,
          severity: str = "info", alloc_id: str | None = None) -> None:
    conn.execute(insert(t.audit_events).values(
        recorded_at=at, kind=kind, severity=severity, alloc_id=alloc_id,
        detail_json=json.dumps(dict(detail), sort_keys=True, default=str)))


def action_detail(*, actor: str, action: str, operation: str, target: str,
                  reason: str | None, via: str, outcome: str = "done",
                  **extra: Any) -> dict[str, Any]:
    return {"actor": actor, "action": action, "operation": operation, "target": target,
            "reason": reason, "via": via, "outcome": outcome, **extra}
