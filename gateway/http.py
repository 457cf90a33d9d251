"""HTTP: /healthz, /readyz, /status, /metrics, and allocation lookups, with generated OpenAPI.

Handlers read immutable snapshots published by the dispatcher and the session manager;
they take no locks and never touch dispatcher state. Each endpoint but the probes names
the action it needs (gateway/auth/roles.py); gateway/http_auth.py says who the caller is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.auth.principals import Principal
from gateway.auth.settings import AuthSettings
from gateway.clock import Clock, SystemClock
from gateway.http_approvals import Decide, add_approval_endpoints
from gateway.http_audit import add_audit_endpoints
from gateway.http_auth import Guard, install_auth
from gateway.http_lifecycle import Operate, add_lifecycle_endpoints
from gateway.http_orders import Submit, add_order_endpoints
from gateway.http_prices import add_price_endpoints
from gateway.http_whatif import add_whatif_endpoints
from gateway.metrics import METRICS
from gateway.persistence.store import Database
from gateway.web import add_web_pages


def build_app(
    *, status: Callable[..., dict[str, Any]], ready: Callable[[], tuple[bool, list[str]]],
    db: Database, rulebooks: Any = None, refdata: Any = None, api_token: str | None = None,
    run_sweep: Callable[[str, date], dict[str, Any]] | None = None, clock: Clock | None = None,
    operate: Operate | None = None, alive: Callable[[], bool] | None = None,
    auth: AuthSettings | None = None, decide_approval: Decide | None = None,
    submit_orders: Submit | None = None, prices: Any = None,
) -> FastAPI:
    """`api_token`: the shared machine token (acting as `auth.machine_token_role`); users,
    their tokens and sessions live in `db` (gateway/http_auth.py)."""
    app = FastAPI(title="fixalloc", version="0.1.0",
                  description="Block allocation gateway: health, status, allocations, metrics")
    guard = install_auth(app, db, settings=auth or AuthSettings(), machine_token=api_token)
    view = [Depends(guard.needs("view"))]

    @app.exception_handler(PoolTimeout)
    def busy(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        # Every connection HTTP may use is busy (slow readers): the client retries later;
        # the daemon's own pool, which the FIX path writes through, is not affected.
        return JSONResponse({"detail": "the database is busy with other requests; retry"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.get("/healthz", summary="The process is alive and serving")
    def healthz(response: Response) -> dict[str, str]:
        # Serving HTTP is not enough: without the dispatcher nothing is processed, and
        # the supervisor should restart the process.
        if alive is not None and not alive():
            response.status_code = 503
            return {"status": "dispatcher stopped"}
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready when every configured FIX session is logged on")
    def readyz(response: Response) -> dict[str, Any]:
        ok, waiting = ready()
        if not ok:
            response.status_code = 503
        return {"ready": ok, "sessions_not_logged_on": waiting}

    @app.get("/status", summary="Sessions, open orders, one page of the day's blotter and "
                                "allocations by state", dependencies=view)
    def get_status(
        state: Annotated[str, Query(pattern=r"^[a-z_]{1,24}$", description=(
            "all | open | finished | an order status"))] = "all",
        book: Annotated[str | None, Query(max_length=64)] = None,
        trade_date: Annotated[date | None, Query(description="default: today (NY)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        return status(trade_date=trade_date.isoformat() if trade_date else None, state=state,
                      book=book, limit=limit, offset=offset)

    @app.get("/metrics", summary="Prometheus exposition")
    def metrics() -> Response:
        return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/allocations/{alloc_id}", summary="One allocation with its lines and decision",
             dependencies=view)
    def allocation(alloc_id: str) -> dict[str, Any]:
        alloc = db.load_allocation(alloc_id)
        if alloc is None:
            raise HTTPException(status_code=404, detail=f"no allocation {alloc_id!r}")
        decision = db.load_decision(alloc["decision_id"])
        return {
            "allocation": {k: (str(v) if v is not None else None) for k, v in alloc.items()},
            "lines": db.load_allocation_lines(alloc_id),
            "decision": json.loads(decision["canonical_json"]) if decision else None,
        }

    def refdata_counts(data: Any) -> dict[str, Any]:
        return {"securities": len(data.securities),
                "accounts": {b: len(a) for b, a in data.accounts_by_book.items()}}

    for path, registry, what, extra, action in (
        ("/rulebook", rulebooks, "rulebook", lambda _rb: {}, "reload_rules"),
        ("/refdata", refdata, "reference data (accounts, positions, securities)",
         refdata_counts, "reload_refdata"),
    ):
        if registry is not None:
            _add_live_endpoints(app, path, registry, what, extra, guard, action)

    _add_sweep_endpoints(app, db, run_sweep, clock or SystemClock(), guard)
    add_lifecycle_endpoints(app, db, operate, guard)
    add_audit_endpoints(app, db, guard)
    add_whatif_endpoints(app, db, rulebooks, guard)
    add_approval_endpoints(app, db, decide_approval, guard)
    add_order_endpoints(app, submit_orders, guard)
    add_price_endpoints(app, prices, guard, (clock or SystemClock()).now)
    add_web_pages(app, db, guard, status=status)
    return app


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    """Why, for the record (optional)."""


def _add_live_endpoints(
    app: FastAPI, path: str, registry: Any, what: str,
    extra: Callable[[Any], dict[str, Any]], guard: Guard, action: str,
) -> None:
    """GET the active version of a live file set; POST to reload it (422 when refused)."""
    name = path.strip("/")

    @app.get(path, summary=f"The active {what} version and the versions loaded since start",
             operation_id=f"get_{name}", dependencies=[Depends(guard.needs("view"))])
    def show() -> dict[str, Any]:
        history = [{"version": r.version, "loaded_at": r.loaded_at.isoformat(),
                    "actor": r.actor, "change": r.diff_summary} for r in registry.history]
        return {"active": registry.current().version, "last_error": registry.last_error,
                **extra(registry.current()), "history": history}

    may_reload = Depends(guard.needs(action))

    @app.post(f"{path}/reload", summary=f"Validate and activate the {what} files now",
              operation_id=f"reload_{name}")
    def reload(body: ReloadRequest | None = None, who: Principal = may_reload
               ) -> dict[str, Any]:
        # The version rows keep "http" for the shared token, as before users existed.
        actor = f"http:{who.name}" if who.is_user else "http"
        with guard.recording(who, action, f"{name}.reload", name,
                             reason=body.reason if body else None) as note:
            try:
                record = registry.reload(actor)
            except registry.refused as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from exc
            note["version"] = record.version
        return {"active": record.version, "change": record.diff_summary}


class SweepRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: str | None = None
    """The checkpoint, HH:MM New York time (default: now; 23:59 for a past date)."""
    date: str | None = None
    """The trade date, YYYY-MM-DD (default: today in New York)."""
    reason: str | None = Field(default=None, max_length=500)
    """Why it is run now, for the record (optional)."""


def _add_sweep_endpoints(
    app: FastAPI, db: Database, run_sweep: Callable[[str, date], dict[str, Any]] | None,
    clock: Clock, guard: Guard,
) -> None:
    """GET the stored end-of-day sweep reports; POST to run one now (FIX_ALLOCATION.md §5.3)."""
    from gateway.posttrade import sweep_report
    from gateway.posttrade.sweep import latest_swept_date, parse_trade_date, run_target

    view = [Depends(guard.needs("view"))]
    may_run = Depends(guard.needs("run_sweep"))

    @app.get("/sweep", summary="The sweep reports of a trade date (default: the latest)",
             dependencies=view)
    def sweep_list(date: str | None = None) -> dict[str, Any]:
        day: str | None
        if date is not None:
            try:
                day = parse_trade_date(date).isoformat()
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from exc
            rows = db.sweep_reports(day)
        else:
            day = latest_swept_date(db)
            rows = db.sweep_reports(day) if day is not None else []
        return {"trade_date": day,
                "reports": [sweep_report.summary(sweep_report.stored(r)) for r in rows]}

    @app.get("/sweep/{report_id}", summary="One stored sweep report in full",
             dependencies=view)
    def sweep_one(report_id: int) -> dict[str, Any]:
        row = db.sweep_report(report_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"no sweep report {report_id}")
        return sweep_report.stored(row)

    @app.post("/sweep/run", summary="Run the sweep now for a checkpoint and trade date; "
              "returns the stored report")
    def sweep_run(body: SweepRunRequest | None = None, who: Principal = may_run
                  ) -> dict[str, Any]:
        if run_sweep is None:
            raise HTTPException(status_code=503, detail="the sweep does not run on this gateway")
        request = body or SweepRunRequest()
        try:
            checkpoint, day = run_target(request.at, request.date, clock.now())
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        with guard.recording(who, "run_sweep", "sweep.run", f"sweep:{day}@{checkpoint}",
                             reason=request.reason):
            try:
                report = run_sweep(checkpoint, day)
            except TimeoutError as exc:
                raise HTTPException(status_code=503, detail="the dispatcher did not run the "
                                    f"sweep in time: {exc}") from exc
        row = next((r for r in db.sweep_reports(day.isoformat())
                    if r["checkpoint"] == checkpoint), None)
        if row is not None:
            return sweep_report.stored(row)
        return {"id": None, "trade_date": day.isoformat(), "checkpoint": checkpoint,
                "ran_at": report.get("ran_at"), "runs": None, "report": report}


class HttpServer:
    """uvicorn on its own thread, stopped cleanly with the daemon."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self.server.started and waited < timeout and self._thread.is_alive():
            deadline.wait(0.05)
            waited += 0.05
        if not self.server.started:
            host, port = self.server.config.host, self.server.config.port
            raise RuntimeError(f"HTTP server did not start on {host}:{port} (port in use?)")

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("HTTP server has no socket")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
