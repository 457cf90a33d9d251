"""HTTP for a rulebook edit that is staged but not yet active: what it would have changed.

Only with the two-step activation mode on ([refdata] rules_activation = "staged"): the
edited files are validated and kept as the staged version (gateway/rulebook_registry.py);
these endpoints show it, report its what-if against recent blocks (gateway/audit/whatif.py,
the same report as `fixalloc rules whatif`), and activate or discard it (action
reload_rules, gateway/auth/roles.py), naming who did it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.audit.whatif import WhatIfError, select_blocks, what_if
from gateway.auth.principals import Principal
from gateway.clock import trade_date_of
from gateway.http_auth import Guard
from gateway.persistence.store import Database
from gateway.rulebook_registry import NothingStaged

RECENT_DAYS = 7
"""Without dates, the what-if covers the trade dates of the last week (New York)."""


class StagedAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(default="api", min_length=1, max_length=100)
    """Who activates or discards, when the caller is the shared token; stored as
    `http:<actor>` in the version row / event (a user is recorded by its own name)."""
    version: str | None = Field(default=None, max_length=64)
    """The version the caller reviewed: refused (409) if another one is staged by now."""
    reason: str | None = Field(default=None, max_length=500)
    """Why, for the record (optional)."""


def add_whatif_endpoints(app: FastAPI, db: Database, rulebooks: Any, guard: Guard) -> None:
    """Register the staged-rulebook endpoints on `app`."""
    if rulebooks is None:
        return
    may_reload = Depends(guard.needs("reload_rules"))

    def staged_mode() -> None:
        if getattr(rulebooks, "activation", "immediate") != "staged":
            raise HTTPException(status_code=409, detail=(
                'rulebook activation is immediate; set [refdata] rules_activation = '
                '"staged" to review edits before they go in force'))

    def staged_or_404() -> Any:
        staged_mode()
        staged = rulebooks.staged
        if staged is None:
            raise HTTPException(status_code=404, detail="no rulebook version is staged")
        return staged

    @app.get("/rulebook/staged", summary="The rulebook version waiting for activation, if any",
             dependencies=[Depends(guard.needs("view"))])
    def show_staged() -> dict[str, Any]:
        staged_mode()
        staged = rulebooks.staged
        body: dict[str, Any] = {"activation": rulebooks.activation,
                                "active": rulebooks.current().version,
                                "last_error": rulebooks.last_error, "staged": None}
        if staged is not None:
            rb, rec = staged.rulebook, staged.record
            body["staged"] = {
                "version": rb.version, "staged_at": rec.loaded_at.isoformat(),
                "staged_by": rec.actor, "change": rec.diff_summary,
                "files": sorted(rec.files), "restrictions": len(rb.restrictions),
                "schemes": len(rb.schemes)}
        return body

    @app.get("/rulebook/staged/whatif",
             summary="What the staged rulebook would have changed in past blocks",
             dependencies=[Depends(guard.needs("whatif"))])
    def staged_whatif(
        date: Annotated[dt.date | None, Query(description="one trade date")] = None,
        date_from: Annotated[dt.date | None, Query(alias="from")] = None,
        date_to: Annotated[dt.date | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        staged = staged_or_404()
        if date is not None and (date_from or date_to):
            raise HTTPException(status_code=422, detail="give date, or from and to, not both")
        if (date_from is None) != (date_to is None):
            raise HTTPException(status_code=422, detail="from and to go together")
        if date is not None:
            first = last = date
        elif date_from is not None and date_to is not None:
            first, last = date_from, date_to
        else:
            last = trade_date_of(dt.datetime.now(dt.UTC))
            first = last - dt.timedelta(days=RECENT_DAYS - 1)
        config = getattr(rulebooks, "config", None)
        if config is None:
            raise HTTPException(status_code=503, detail="the rulebook registry was started "
                                                        "without the gateway configuration")
        try:
            blocks = select_blocks(db, date_from=first, date_to=last)
            report = what_if(db, config, staged.rulebook, blocks,
                             {"from": first.isoformat(), "to": last.isoformat()},
                             registry=rulebooks)
        except WhatIfError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return {"active": rulebooks.current().version, **report.to_json()}

    @app.post("/rulebook/staged/activate", summary="Put the staged rulebook version in force")
    def activate(body: StagedAction | None = None, who: Principal = may_reload
                 ) -> dict[str, Any]:
        staged_mode()
        action = body or StagedAction()
        with guard.recording(who, "reload_rules", "rulebook.activate_staged", "rulebook",
                             reason=action.reason, claimed=action.actor) as note:
            try:
                record = rulebooks.activate(f"http:{who.actor(action.actor)}",
                                            version=action.version)
            except NothingStaged as exc:
                raise HTTPException(status_code=409, detail=str(exc)) from exc
            note["version"] = record.version
        return {"active": record.version, "actor": record.actor,
                "activated_at": record.loaded_at.isoformat(), "change": record.diff_summary}

    @app.post("/rulebook/staged/discard", summary="Drop the staged rulebook version")
    def discard(body: StagedAction | None = None, who: Principal = may_reload
                ) -> dict[str, Any]:
        staged_mode()
        action = body or StagedAction()
        with guard.recording(who, "reload_rules", "rulebook.discard_staged", "rulebook",
                             reason=action.reason, claimed=action.actor) as note:
            try:
                record = rulebooks.discard(f"http:{who.actor(action.actor)}",
                                           version=action.version)
            except NothingStaged as exc:
                raise HTTPException(status_code=409, detail=str(exc)) from exc
            note["version"] = record.version
        return {"discarded": record.version, "active": rulebooks.current().version}
