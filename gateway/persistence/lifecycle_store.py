"""Database access for the post-trade lifecycle (mixed into `Database`).

Confirmations are appended; tickets live on allocation_lines; exceptions are opened once
per (kind, allocation, line) and resolved with who and why; sweep reports are kept one
per (trade date, checkpoint), a re-run replacing the report and counting the runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.persistence import lifecycle_tables as lt
from gateway.persistence import tables as t
from gateway.persistence.retry import transient


class LifecycleRecords:
    engine: Engine

    # -- allocations of an order ----------------------------------------------------------

    def allocations_for_order(self, order_id: str) -> list[dict[str, Any]]:
        query = (select(t.allocations).where(t.allocations.c.order_id == order_id)
                 .order_by(t.allocations.c.created_at, t.allocations.c.alloc_id))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def allocations_on(self, trade_date: str) -> list[dict[str, Any]]:
        query = (select(t.allocations).where(t.allocations.c.trade_date == trade_date)
                 .order_by(t.allocations.c.created_at))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def orders_on(self, trade_date: str) -> list[dict[str, Any]]:
        query = (select(t.orders).where(t.orders.c.trade_date == trade_date)
                 .order_by(t.orders.c.created_at))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def line(self, individual_alloc_id: str) -> dict[str, Any] | None:
        query = select(t.allocation_lines).where(
            t.allocation_lines.c.individual_alloc_id == individual_alloc_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return dict(row) if row else None

    @transient
    def update_lines(self, alloc_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.allocation_lines)
                         .where(t.lines_of(self.engine.dialect.name, alloc_id))
                         .values(**values))

    @transient
    def update_line(self, individual_alloc_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.allocation_lines)
                         .where(t.allocation_lines.c.individual_alloc_id == individual_alloc_id)
                         .values(**values))

    # -- confirmations ----------------------------------------------------------------------

    @transient
    def record_confirmation(self, row: Mapping[str, Any]) -> int | None:
        """Store an AK; None when this (session, ConfirmID, trans type) is already stored."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(insert(lt.confirmations).values(**row))
                return int(result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            return None

    @transient
    def update_confirmation(self, confirmation_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(lt.confirmations).where(lt.confirmations.c.id == confirmation_id)
                         .values(**values))

    def confirmations(self, alloc_id: str | None = None) -> list[dict[str, Any]]:
        query = select(lt.confirmations).order_by(lt.confirmations.c.id)
        if alloc_id is not None:
            query = query.where(lt.confirmations.c.alloc_id == alloc_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- exceptions -------------------------------------------------------------------------

    @transient
    def open_exception(self, kind: str, *, reason: str, next_step: str, opened_at: datetime,
                       order_id: str | None = None, alloc_id: str | None = None,
                       individual_alloc_id: str | None = None, book: str | None = None,
                       broker: str | None = None, trade_date: str | None = None,
                       detail: Mapping[str, Any] | None = None) -> tuple[int, bool]:
        """(id, opened now): one open exception per kind, allocation and line."""
        c = lt.exceptions.c
        with self.engine.begin() as conn:
            existing = conn.execute(select(c.id).where(
                c.state == "open", c.kind == kind, c.order_id.is_(None) if order_id is None
                else c.order_id == order_id,
                c.alloc_id.is_(None) if alloc_id is None else c.alloc_id == alloc_id,
                c.individual_alloc_id.is_(None) if individual_alloc_id is None
                else c.individual_alloc_id == individual_alloc_id)).scalar()
            if existing is not None:
                return int(existing), False
            result = conn.execute(insert(lt.exceptions).values(
                kind=kind, state="open", order_id=order_id, alloc_id=alloc_id,
                individual_alloc_id=individual_alloc_id, book=book, broker=broker,
                trade_date=trade_date, reason=reason, next_step=next_step,
                detail_json=json.dumps(detail or {}, sort_keys=True, default=str),
                opened_at=opened_at))
            return int(result.inserted_primary_key[0]), True  # type: ignore[index]

    @transient
    def resolve_exceptions(self, *, at: datetime, by: str, resolution: str,
                           exception_id: int | None = None, alloc_id: str | None = None,
                           individual_alloc_id: str | None = None,
                           kinds: tuple[str, ...] = ()) -> int:
        c = lt.exceptions.c
        query = update(lt.exceptions).where(c.state == "open")
        if exception_id is not None:
            query = query.where(c.id == exception_id)
        if alloc_id is not None:
            query = query.where(c.alloc_id == alloc_id)
        if individual_alloc_id is not None:
            query = query.where(c.individual_alloc_id == individual_alloc_id)
        if kinds:
            query = query.where(c.kind.in_(kinds))
        with self.engine.begin() as conn:
            result = conn.execute(query.values(state="resolved", resolved_at=at, resolved_by=by,
                                               resolution=resolution))
            return int(result.rowcount)

    def exceptions(self, *, state: str | None = None, trade_date: str | None = None,
                   alloc_id: str | None = None) -> list[dict[str, Any]]:
        c = lt.exceptions.c
        query = select(lt.exceptions).order_by(c.id)
        if state is not None:
            query = query.where(c.state == state)
        if trade_date is not None:
            query = query.where(c.trade_date == trade_date)
        if alloc_id is not None:
            query = query.where(c.alloc_id == alloc_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def open_exceptions_by_kind(self) -> dict[str, int]:
        c = lt.exceptions.c
        query = select(c.kind, func.count()).where(c.state == "open").group_by(c.kind)
        with self.engine.connect() as conn:
            return {k: int(n) for k, n in conn.execute(query).all()}

    # -- sweep reports ----------------------------------------------------------------------

    @transient
    def save_sweep_report(self, *, trade_date: str, checkpoint: str, ran_at: datetime,
                          report: Mapping[str, Any]) -> int:
        c = lt.sweep_reports.c
        body = json.dumps(report, sort_keys=True, default=str)
        with self.engine.begin() as conn:
            existing = conn.execute(select(c.id, c.runs).where(
                c.trade_date == trade_date, c.checkpoint == checkpoint)).first()
            if existing is None:
                result = conn.execute(insert(lt.sweep_reports).values(
                    trade_date=trade_date, checkpoint=checkpoint, ran_at=ran_at, runs=1,
                    report_json=body))
                return int(result.inserted_primary_key[0])  # type: ignore[index]
            conn.execute(update(lt.sweep_reports).where(c.id == existing.id).values(
                ran_at=ran_at, runs=existing.runs + 1, report_json=body))
            return int(existing.id)

    def sweep_reports(self, trade_date: str | None = None) -> list[dict[str, Any]]:
        c = lt.sweep_reports.c
        query = select(lt.sweep_reports).order_by(c.trade_date, c.checkpoint)
        if trade_date is not None:
            query = query.where(c.trade_date == trade_date)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def sweep_report(self, report_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(lt.sweep_reports)
                               .where(lt.sweep_reports.c.id == report_id)).mappings().first()
            return dict(row) if row else None
