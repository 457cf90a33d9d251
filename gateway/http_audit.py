"""HTTP for audit evidence: a decision explained, the audit report of an allocation.

Handlers read the database only (the HTTP pool), never dispatcher state.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse

from gateway.http_auth import Guard
from gateway.persistence.store import Database


def add_audit_endpoints(app: FastAPI, db: Database, guard: Guard) -> None:
    """Register the audit endpoints on `app`."""
    from gateway.audit.explain import ExplainError, explain_allocation

    @app.get("/allocations/{alloc_id}/explain",
             summary="Why each account got its quantity: rules, caps, arithmetic, rounding, "
                     "lots, as structure and plain sentences",
             responses={404: {"description": "unknown allocation or account"}},
             dependencies=[Depends(guard.needs("view"))])
    def explain(alloc_id: str, accounts: Annotated[str | None, Query(
            max_length=4000, description="A,B: explain these accounts in full and compare "
                                         "them; absent: a summary of every account")] = None,
                ) -> Any:
        names = None
        if accounts is not None:
            names = list(dict.fromkeys(a.strip() for a in accounts.split(",") if a.strip()))
            if not names:
                return JSONResponse({"detail": "accounts names no account"}, status_code=422)
        try:
            return explain_allocation(db, alloc_id, names).to_json()
        except ExplainError as exc:
            # An unknown allocation and an unknown account are both "not found", told apart
            # by `missing_kind` so a client can say which name was wrong.
            return JSONResponse({"detail": str(exc), "missing_kind": exc.kind,
                                 "missing": list(exc.missing)}, status_code=404)
