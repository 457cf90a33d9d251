"""Orders read from the database: the day's blotter for HTTP readers (paged, filtered),
and single orders for the dispatcher when it loads a released one back.

The dispatcher holds only the orders that are still moving (gateway/order_book.py); a
finished order is served from here, so reading the blotter costs O(page), not O(day).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, exists, func, insert, select, update

from gateway.persistence import tables as t
from gateway.persistence.retry import transient

# `split`: a block split across brokers, which lives on in its children's rows.
TERMINAL = ("filled", "done_for_day", "canceled", "expired", "rejected", "split")
FINAL_ALLOC = ("accepted", "cancelled", "replaced")


class BlotterQueries:
    engine: Engine

    def load_order(self, order_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.orders).where(t.orders.c.order_id == order_id)
                               ).mappings().first()
        return None if row is None else dict(row)

    def find_order(self, session: str, cl_ord_id: str) -> dict[str, Any] | None:
        """The newest order the OMS sent under this ClOrdID (an OMS may reuse one on a later
        trade date)."""
        o = t.orders.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.orders).where(
                and_(o.oms_session == session, o.oms_cl_ord_id == cl_ord_id))
                .order_by(o.trade_date.desc())).mappings().first()
        return None if row is None else dict(row)

    def split_order(self, parent_id: str, children: list[dict[str, Any]],
                    now: datetime) -> None:
        """A block split across brokers: its row marked `split` (and released: only its
        children move) and the children's rows, in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(update(t.orders).where(t.orders.c.order_id == parent_id)
                         .values(status="split", updated_at=now, released_at=now))
            conn.execute(t.orders.insert(), children)

    @transient
    def record_cross(self, splits: list[tuple[str, list[dict[str, Any]]]],
                     wires: list[dict[str, Any]], reports: list[dict[str, Any]],
                     events: list[dict[str, Any]], now: datetime) -> list[int]:
        """A live cross (gateway/crossing_live.py) in one transaction: both blocks split
        into their crossed and routed parts, the venue's execution reports with their wire
        rows, and the cross's record (audit events). Returns the reports' ids, in order."""
        ids = []
        with self.engine.begin() as conn:
            for parent_id, children in splits:
                conn.execute(update(t.orders).where(t.orders.c.order_id == parent_id)
                             .values(status="split", updated_at=now, released_at=now))
                conn.execute(t.orders.insert(), children)
            conn.execute(insert(t.fix_messages), wires)
            for report in reports:
                pk = conn.execute(insert(t.broker_reports), report).inserted_primary_key
                ids.append(int(pk[0]) if pk else 0)
            for event in events:
                conn.execute(insert(t.audit_events).values(
                    recorded_at=now, severity="info", alloc_id=None,
                    kind=event["kind"], session_id=event["session_id"],
                    order_id=event["order_id"],
                    detail_json=json.dumps(event["detail"], sort_keys=True, default=str)))
        return ids

    def children_of(self, parent_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.orders).where(t.orders.c.parent_order_id == parent_id)
                                .order_by(t.orders.c.broker)).mappings()
            return [dict(r) for r in rows]

    def unreleased_orders(self) -> list[dict[str, Any]]:
        """What startup recovery rebuilds: every order not let go as finished."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.orders).where(t.orders.c.released_at.is_(None))
                                .order_by(t.orders.c.created_at)).mappings()
            return [dict(r) for r in rows]

    def mark_released(self, order_id: str, at: datetime | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.orders).where(t.orders.c.order_id == order_id)
                         .values(released_at=at))

    def _latest_allocation(self) -> Any:
        """Per order, its latest J (the highest AllocID number is the newest)."""
        a = t.allocations.c
        newest = (select(a.order_id, func.max(a.created_at).label("created_at"))
                  .group_by(a.order_id).subquery())
        return (select(a.order_id, a.alloc_id, a.status, a.alloc_trans_type)
                .join(newest, and_(newest.c.order_id == a.order_id,
                                   newest.c.created_at == a.created_at))
                .subquery())

    def blotter(self, trade_date: str, *, book: str | None = None, state: str = "all",
                limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """(matching count, one page) of the day's orders with their latest J's status.

        `state`: all | open (still working, or its allocation not yet accepted) |
        finished | one order status (new, filled, ...)."""
        o = t.orders.c
        latest = self._latest_allocation()
        alloc_status = latest.c.status
        query = (select(t.orders, latest.c.alloc_id, alloc_status.label("alloc_status"),
                        latest.c.alloc_trans_type)
                 .select_from(t.orders.outerjoin(latest, latest.c.order_id == o.order_id))
                 .where(o.trade_date == trade_date))
        if book:
            query = query.where(o.book == book)
        finished = and_(o.status.in_(TERMINAL),
                        (alloc_status.is_(None)) | alloc_status.in_(FINAL_ALLOC))
        if state == "open":
            query = query.where(~finished)
        elif state == "finished":
            query = query.where(finished)
        elif state != "all":
            query = query.where(o.status == state)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(query.order_by(o.created_at, o.order_id)
                                .limit(limit).offset(offset)).mappings()
            return int(total), [dict(r) for r in rows]

    def allocation_counts(self, trade_date: str) -> Mapping[str, int]:
        """The day's blocks by the status of their latest J (a Cancel accepted: cancelled)."""
        latest = self._latest_allocation()
        o = t.orders.c
        status = latest.c.status
        query = (select(latest.c.alloc_trans_type, status, func.count())
                 .select_from(t.orders.join(latest, latest.c.order_id == o.order_id))
                 .where(o.trade_date == trade_date)
                 .group_by(latest.c.alloc_trans_type, status))
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for trans, st, n in conn.execute(query):
                key = "cancelled" if trans == "2" and st == "accepted" else str(st)
                out[key] = out.get(key, 0) + int(n)
        return out

    def allocations_awaiting_aks(self) -> list[dict[str, Any]]:
        """Accepted Js with a line still awaiting its AK and not yet asked for (BH): what
        the AK timer watches again after a restart."""
        a, ln = t.allocations.c, t.allocation_lines.c
        waiting = exists().where(and_(t.lines_of(self.engine.dialect.name, a.alloc_id),
                                      ln.ticket_state == "awaiting_ak",
                                      ln.bh_sent_at.is_(None)))
        query = (select(a.alloc_id, a.order_id, a.broker, a.acked_at)
                 .where(and_(a.status == "accepted", a.alloc_trans_type != "2",
                             a.acked_at.is_not(None), waiting)))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
