"""HTTP for the post-trade lifecycle: a person's actions on an allocation, the exceptions.

POST /allocations/{alloc_id}/{resend|replace|cancel} hands the action to the dispatcher
(the one owner of state) and waits for its answer; the action is recorded there with the
actor and the reason. GET /exceptions reads the queue from the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth.principals import Principal
from gateway.http_auth import Guard
from gateway.persistence.store import Database

Operate = Callable[[str, str, str, str], dict[str, Any]]
"""(action, alloc_id, actor, reason) -> the result; raises LookupError / ValueError."""


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=500)
    actor: str = Field(default="api", min_length=1, max_length=128)
    """Who acts, when the caller is the shared token (a script names its person); a
    user's own name is recorded whatever this says."""


@contextmanager
def dispatcher_answer() -> Iterator[None]:
    """What the dispatcher's refusals mean over HTTP: unknown 404, not now 409, no answer
    503 (a refusal that carries its own `status`, a vote's, keeps it)."""
    try:
        yield
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status_code=getattr(exc, "status", 409), detail=str(exc)) from exc
    except TimeoutError as exc:
        raise HTTPException(status_code=503, detail="the dispatcher did not answer in time; "
                                                    "check /status") from exc


def add_lifecycle_endpoints(app: FastAPI, db: Database, operate: Operate | None,
                            guard: Guard) -> None:
    may_operate = Depends(guard.needs("operate_allocation"))

    @app.post("/allocations/{alloc_id}/{action}",
              summary="resend | replace | cancel an allocation (recorded with actor and reason)")
    def act(alloc_id: str, action: str, body: ActionRequest,
            who: Principal = may_operate) -> dict[str, Any]:
        if action not in ("resend", "replace", "cancel"):
            raise HTTPException(status_code=404, detail=f"no action {action!r}: "
                                                        "resend, replace or cancel")
        if operate is None:
            raise HTTPException(status_code=503, detail="the dispatcher is not running")
        actor = who.actor(body.actor)
        with guard.recording(who, "operate_allocation", f"allocation.{action}",
                             f"allocation:{alloc_id}", reason=body.reason, claimed=body.actor,
                             alloc_id=alloc_id), dispatcher_answer():
            return operate(action, alloc_id, actor, body.reason)

    @app.get("/exceptions", summary="The exceptions queue: what needs a person, and the next step",
             dependencies=[Depends(guard.needs("view"))])
    def exceptions(state: str = "open", date: str | None = None) -> dict[str, Any]:
        if state not in ("open", "resolved", "all"):
            raise HTTPException(status_code=422, detail="state is open, resolved or all")
        rows = db.exceptions(state=None if state == "all" else state, trade_date=date)
        return {"count": len(rows),
                "exceptions": [{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                for k, v in row.items()} for row in rows]}
