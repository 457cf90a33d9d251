"""Composition root: build every part in a safe order, start it, stop it.

Order matters. The process pool starts before any quickfix thread exists (forking a
threaded process is unsafe); recovery runs before the sessions start, so nothing arrives
while state is being rebuilt; on stop the sessions log out first and the dispatcher then
drains what they delivered.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, date, datetime
from typing import Any

import structlog

import engine
from gateway.alerts import Alerts
from gateway.allocation_flow import AllocationFlow
from gateway.audit.chain_seal import ChainSealer
from gateway.audit.chain_watch import ChainWatch
from gateway.audit.fairness_metrics import register_fairness_metrics
from gateway.clock import Clock, SystemClock, settlement_date, trade_date_of
from gateway.config import Config
from gateway.dispatcher import Dispatcher
from gateway.errors import ConfigError
from gateway.events import (
    ApprovalRequested,
    DeskOrdersSubmitted,
    OperatorRequested,
    ReferenceDataChanged,
    RulebookChanged,
    SweepDue,
)
from gateway.fix.desk import DeskOrder, desk_answer
from gateway.fix.outbound import FixOutbound
from gateway.fix.sessions import FixSessions
from gateway.fix.store_secrets import scrub_files, secure_state_dir
from gateway.http import HttpServer, build_app
from gateway.inbox import Inbox
from gateway.notify.notifier import Notifier
from gateway.persistence.store import Database
from gateway.posttrade import notices
from gateway.posttrade.scheduler import SweepScheduler
from gateway.preflight import preflight
from gateway.recovery import recover
from gateway.refdata_registry import RefDataVersionRecord, ReferenceDataRegistry
from gateway.reference import ReferenceData
from gateway.secrets import resolve_secret

log = structlog.get_logger("fixalloc.node")


def blotter_row(row: dict[str, Any]) -> dict[str, Any]:
    """An order the dispatcher let go, as /status shows orders (from its database row)."""
    trans, status = row.get("alloc_trans_type"), row.get("alloc_status")
    excluded = json.loads(row["eligibility_json"]).get("excluded", []) \
        if row.get("eligibility_json") else []
    return {
        "order_id": row["order_id"], "cl_ord_id": row["oms_cl_ord_id"], "book": row["book"],
        "symbol": row["symbol"], "side": row["side"], "order_qty": row["order_qty"],
        "status": row["status"], "broker": row["broker"], "cum_qty": row["cum_qty"],
        "avg_px": row["avg_px"], "leaves_qty": row["leaves_qty"],
        "alloc_id": row.get("alloc_id"),
        "alloc_status": "cancelled" if trans == "2" and status == "accepted" else status,
        "excluded_accounts": excluded, "queued_for_broker": False, "broker_ack_due": None,
        "broker_ack_overdue": False, "in_memory": False,
    }

HTTP_DB_CONNECTIONS = 4
"""Database connections HTTP requests may hold at once; a request that finds none free
within HTTP_DB_WAIT_SECONDS is answered 503 (gateway/http.py)."""
HTTP_DB_WAIT_SECONDS = 2.0


class Node:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.started_at: datetime | None = None
        self.db: Database | None = None
        self.http_db: Database | None = None
        self.sessions: FixSessions | None = None
        self.dispatcher: Dispatcher | None = None
        self.http: HttpServer | None = None
        self.executor: Any = None
        self.rulebooks: Any = None
        self.refdata: ReferenceDataRegistry | None = None
        self.notifier: Notifier | None = None
        self.sweep_scheduler: SweepScheduler | None = None
        self.chain_watch: ChainWatch | None = None
        self.sealer: ChainSealer | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        cfg = self.config
        # Private from the first file on: the state folder 0700, its files 0600.
        secure_state_dir(cfg.state_dir)
        log.info("node.starting", state_dir=str(cfg.state_dir), config=str(cfg.source),
                 config_hash=cfg.config_hash(), database=cfg.database_url.split("@")[-1])
        # The same checks as `fixalloc config check` (the registries below load the
        # reference data and the rulebook themselves).
        preflight(cfg, reference=False)
        self.db = db = Database(cfg.database_url, sqlite_synchronous=cfg.gateway.sqlite_synchronous)
        db.migrate()
        alerts = Alerts(db, self.clock)
        # Notes of audited writes become chain entries within a fraction of a second.
        self.sealer = ChainSealer(db, cfg.audit.seal_every_ms / 1000)
        self.sealer.start()
        audit = cfg.audit
        self.chain_watch = ChainWatch(
            db, audit, alerts, where=cfg.database_url.split("@")[-1],
            checkpoint_file=cfg.resolve(audit.checkpoint_file) if audit.checkpoint_file
            else None,
            key_file=cfg.resolve(audit.checkpoint_key_file) if audit.checkpoint_key_file
            else None)
        self.chain_watch.start()
        inbox = Inbox(cfg.gateway.inbox_capacity)
        self.refdata = self._refdata(db, inbox)
        refdata = self.refdata.current()
        # Load the exchange calendar now: its first use costs ~0.5 s, which must not land
        # between a block's last fill and its J.
        settlement_date(trade_date_of(self.clock.now()))
        self.rulebooks = self._rulebooks(db, inbox)
        self.executor = self._executor()
        # Per-book work (id order, the accounts' part of the inputs hash, the workers' slices)
        # is done now, not on the first block; the books' tuples are the ones requests carry.
        for accounts in refdata.accounts_by_book.values():
            engine.prepare_accounts(accounts, self.executor)
        # Reference data lives as long as the process: keep it out of every GC pass.
        gc.collect()
        gc.freeze()
        self.sessions = FixSessions(cfg, db, inbox, self.clock, alerts)
        scrubbed = scrub_files(set(self.sessions.store_dirs.values()))
        if scrubbed:
            log.warning("store.secrets_masked", files=scrubbed)
        out = FixOutbound(self.sessions)
        flow = AllocationFlow(cfg, db, out, refdata, self.rulebooks, self.executor, self.clock,
                              alerts)
        self.dispatcher = Dispatcher(cfg, db, inbox, out, refdata, flow, self.clock)
        secrets_file = (cfg.resolve(cfg.gateway.secrets_file)
                        if cfg.gateway.secrets_file else None)
        self.notifier = notifier = Notifier(cfg.notifications, db, self.clock, alerts=alerts,
                                            secrets_file=secrets_file, resolve=cfg.resolve)
        notifier.start()
        flow.notify = lambda order, alloc, rows: notifier.notify(
            notices.allocation_sent(order, alloc, rows, db))
        self.dispatcher.approvals.notify = lambda order, approval, escalated: notifier.notify(
            notices.approval_pending(order, approval, escalated=escalated))
        recover(self.dispatcher)
        self.dispatcher.exceptions.notify = lambda fields: notifier.notify(
            notices.exception_opened(fields))
        self.dispatcher.sweep.notify = notifier.notify
        self.dispatcher.start()
        self.sessions.start()
        if cfg.sweep.enabled:
            self.sweep_scheduler = SweepScheduler(cfg.database_url, cfg.sweep,
                                                  submit=self._sweep_due, name=cfg.gateway.name,
                                                  clock=self.clock)
            self.sweep_scheduler.start()
        if cfg.http.enabled:
            token = None
            if cfg.http.api_token_env:
                token = resolve_secret("http", cfg.http.api_token_env,
                                       cfg.resolve(cfg.gateway.secrets_file)
                                       if cfg.gateway.secrets_file else None)
            # HTTP reads through its own bounded pool: a client polling a large allocation
            # once held every connection and the wire log's next write timed out (exit 75).
            self.http_db = Database(cfg.database_url,
                                    sqlite_synchronous=cfg.gateway.sqlite_synchronous,
                                    pool_size=HTTP_DB_CONNECTIONS, max_overflow=0,
                                    pool_timeout=HTTP_DB_WAIT_SECONDS)
            # Fairness figures for /metrics, computed on a scrape at most once a minute.
            register_fairness_metrics(self.http_db, self.clock)
            app = build_app(status=self.status, ready=self.ready, alive=self.alive,
                            db=self.http_db,
                            run_sweep=self._run_sweep_now, clock=self.clock,
                            operate=self._operate, decide_approval=self._decide_approval,
                            submit_orders=self._submit_desk_orders,
                            prices=self.dispatcher.crossing.prices,
                            rulebooks=self.rulebooks, refdata=self.refdata, api_token=token,
                            auth=cfg.auth)
            self.http = HttpServer(app, cfg.http.host, cfg.http.port)
            self.http.start()
            log.info("http.listening", host=cfg.http.host, port=self.http.port)
        if cfg.refdata.watch:
            self.rulebooks.start_watching()
            self.refdata.start_watching()
        self.started_at = datetime.now(UTC)
        log.info("node.started", sessions=[s["name"] for s in self.sessions.status()])

    def _refdata(self, db: Database, inbox: Inbox) -> ReferenceDataRegistry:
        def persist(record: RefDataVersionRecord, data: ReferenceData) -> None:
            db.save_refdata_version(version=record.version, loaded_at=record.loaded_at,
                                    actor=record.actor, files=data.files,
                                    diff_summary=record.diff_summary)
            log.info("refdata.loaded", version=record.version, actor=record.actor,
                     change=record.diff_summary)
            inbox.put(ReferenceDataChanged(data))

        def rejected(reason: str) -> None:
            log.error("refdata.rejected", reason=reason)
            db.append_event("refdata.rejected", recorded_at=self.clock.now(), severity="error",
                            detail={"reason": reason})

        return ReferenceDataRegistry(self.config, on_new_version=persist, on_rejected=rejected,
                                     db=db)

    def _rulebooks(self, db: Database, inbox: Inbox) -> Any:
        from gateway.refdata import RefDataError
        from gateway.rulebook_registry import RulebookRegistry

        def persist(record: Any) -> None:
            db.save_rulebook_version(
                version=record.version, loaded_at=record.loaded_at, actor=record.actor,
                source=", ".join(str(p) for p in record.source_files),
                content_json=record.content_json, diff_summary=record.diff_summary,
                files=record.files)
            log.info("rulebook.loaded", version=record.version, actor=record.actor,
                     change=record.diff_summary)
            inbox.put(RulebookChanged(record.version))

        def rejected(reason: str) -> None:
            log.error("rulebook.rejected", reason=reason)
            db.append_event("rulebook.rejected", recorded_at=self.clock.now(), severity="error",
                            detail={"reason": reason})

        try:
            return RulebookRegistry(self.config.resolve(self.config.refdata.rules),
                                    on_new_version=persist, on_rejected=rejected,
                                    config=self.config, db=db)
        except RefDataError as exc:
            raise ConfigError(exc.file, exc.line, exc.reason) from exc

    def _executor(self) -> Any:
        if self.config.engine.scheduler:
            # The partitions run on a Dask cluster (docs/engine.md). Unreachable, or without
            # workers: the start fails (WorkerError) and systemd retries, as for a database.
            from gateway.dask_executor import DaskExecutor

            return DaskExecutor(self.config.engine.scheduler)
        workers = self.config.gateway.workers
        if workers <= 0:
            return engine.InProcessExecutor()
        from gateway.pool import ProcessPoolExecutorAdapter

        return ProcessPoolExecutorAdapter(workers)

    def ready(self) -> tuple[bool, list[str]]:
        if self.sessions is None:
            return False, ["<starting>"]
        waiting = [s["name"] for s in self.sessions.status() if not s["logged_on"]]
        if not self.alive():
            waiting.append("<dispatcher stopped>")
        return not waiting, waiting

    def alive(self) -> bool:
        """The dispatcher thread, the only owner of state, is running."""
        return self.dispatcher is not None and self.dispatcher.alive()

    def status(self, *, trade_date: str | None = None, state: str = "all",
               book: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """Sessions and health from the dispatcher's snapshot; the day's blotter (one page,
        filtered) and allocation counts from the database, so the cost is the page's."""
        snapshot = dict(self.dispatcher.snapshot) if self.dispatcher else {}
        live: dict[str, dict[str, Any]] = dict(snapshot.pop("live", {}))
        day = trade_date or trade_date_of(self.clock.now()).isoformat()
        total, rows, counts = 0, list[dict[str, Any]](), dict[str, int]()
        open_rows = list[dict[str, Any]]()
        if self.http_db is not None:
            total, rows = self.http_db.blotter(day, book=book, state=state, limit=limit,
                                               offset=offset)
            open_rows = self.http_db.blotter(day, book=book, state="open", limit=limit)[1]
            counts = dict(self.http_db.allocation_counts(day))

        def shown(row: dict[str, Any]) -> dict[str, Any]:
            # The dispatcher's summary of an order it holds is the fresher one.
            live_one = live.get(row["order_id"])
            return dict(live_one, in_memory=True) if live_one else blotter_row(row)

        orders = [shown(r) for r in rows]
        return {
            "gateway": self.config.gateway.name,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "now": self.clock.now().isoformat(),
            "clock": type(self.clock).__name__,
            "rulebook_version": self.rulebooks.current().version if self.rulebooks else None,
            # The version blocks are allocated with (the dispatcher's), and the one loaded
            # (the registry's): they differ for the moment a new version is on its way.
            "refdata_version": self.dispatcher.refdata.version if self.dispatcher else None,
            "refdata_loaded_version": self.refdata.current().version if self.refdata else None,
            "sessions": self.sessions.status() if self.sessions else [],
            # Open: still working, or its J not yet accepted (the first page of them).
            "open_orders": [shown(r) for r in open_rows],
            "trade_date": day, "filter": {"state": state, "book": book},
            "orders_total": total, "limit": limit, "offset": offset,
            "orders": orders,
            "allocations": counts,
            **snapshot,
        }

    # -- work handed to the dispatcher from other threads ---------------------------------

    def _sweep_due(self, checkpoint: str, at: datetime) -> None:
        """A scheduled checkpoint (on a scheduler thread): only enqueue."""
        assert self.dispatcher is not None
        self.dispatcher.inbox.put(SweepDue(checkpoint, trade_date_of(at)))

    def _run_sweep_now(self, checkpoint: str, trade_date: date) -> dict[str, Any]:
        """POST /sweep/run: the dispatcher runs it; the request waits for the report."""
        assert self.dispatcher is not None
        done: Future[dict[str, Any]] = Future()
        self.dispatcher.inbox.put(SweepDue(checkpoint, trade_date, reply=done))
        result: dict[str, Any] = done.result(timeout=120)["report"]
        return result

    def _operate(self, action: str, alloc_id: str, actor: str, reason: str) -> dict[str, Any]:
        """POST /allocations/{id}/{action}: the dispatcher acts and records who and why."""
        assert self.dispatcher is not None
        done: Future[dict[str, Any]] = Future()
        self.dispatcher.inbox.put(OperatorRequested(action, alloc_id, actor, reason, done))
        return done.result(timeout=60)

    def _decide_approval(self, action: str, target: str, actor: str, roles: tuple[str, ...],
                         reason: str, lines: Mapping[str, str] | None) -> dict[str, Any]:
        """A vote or an override from HTTP: the dispatcher decides and answers."""
        assert self.dispatcher is not None
        done: Future[dict[str, Any]] = Future()
        self.dispatcher.inbox.put(ApprovalRequested(action, target, actor, roles, reason,
                                                    done, lines))
        return done.result(timeout=60)

    def _submit_desk_orders(self, rows: Sequence[Mapping[str, Any]],
                            actor: str) -> list[dict[str, Any]]:
        """POST /orders: each block recorded as the desk's D (on this HTTP thread, as a FIX
        thread records an OMS's), taken by the dispatcher, then answered as it stands."""
        assert self.dispatcher is not None and self.sessions is not None
        # Answers are read through HTTP's own pool, like every other request's reads.
        assert self.http_db is not None
        db, desk = self.http_db, self.sessions.desk
        now = self.clock.now()
        taken = []
        for row in rows:
            event = desk.receive(DeskOrder(
                cl_ord_id=row["cl_ord_id"], book=row["book"], symbol=row["symbol"],
                side=row["side"], qty=row["qty"], ord_type=row["ord_type"],
                price=row["price"],
                preallocations=tuple((p["account_id"], p["qty"])
                                     for p in row["preallocations"]),
                preallocation_reason=row["preallocation_reason"]), actor, now)
            if event is not None:
                taken.append(event)
        done: Future[dict[str, Any]] = Future()
        self.dispatcher.inbox.put(DeskOrdersSubmitted(tuple(taken), done))
        done.result(timeout=120)
        day = trade_date_of(now).isoformat()
        return [desk_answer(db, desk.key, row["cl_ord_id"], day) for row in rows]

    def stop(self) -> None:
        """Drain the dispatcher, log out the sessions, flush and release everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("node.stopping")
        if self.sweep_scheduler is not None:
            self.sweep_scheduler.stop()
        if self.chain_watch is not None:
            self.chain_watch.stop()
        if self.rulebooks is not None:
            self.rulebooks.stop()
        if self.refdata is not None:
            self.refdata.stop()
        # Drain the dispatcher while the sessions are still up, so what it sends for the
        # backlog reaches quickfix. A message arriving after that is stored by its
        # callback and picked up by recovery on the next start, like after a crash.
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.sessions is not None:
            self.sessions.stop()
        if self.http is not None:
            self.http.stop()
        if self.notifier is not None:
            self.notifier.stop()
        close = getattr(self.executor, "close", None)
        if callable(close):
            close()
        if self.http_db is not None:
            self.http_db.dispose()
        if self.sealer is not None:
            self.sealer.stop()  # seals the last writes (the alerts of the stop included)
        if self.db is not None:
            self.db.dispose()
        log.info("node.stopped")
