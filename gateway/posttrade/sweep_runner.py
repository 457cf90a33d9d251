"""The end-of-day sweep, run on the dispatcher thread: check, act, store, tell.

`run_sweep` (gateway/posttrade/sweep.py) only reads and returns a report with actions;
here the actions are taken with the dispatcher's own paths, each of them idempotent (a
line already asked for its AK is not asked again, an allocated block is not allocated
again, an exception already open is not opened twice), the report is stored for its
(trade date, checkpoint) and sent to the people who receive sweep reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from gateway.events import SweepDue
from gateway.notify.message import Notification
from gateway.posttrade import sweep

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.sweep")


class SweepRunner:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self.notify: Any = None

    def on_sweep_due(self, ev: SweepDue) -> None:
        d = self.d
        now = d.clock.now()
        try:
            result = sweep.run_sweep(d.db, trade_date=ev.trade_date, checkpoint=ev.checkpoint,
                                     now=now, settings=d.config.sweep,
                                     sessions=d.out.session_status())
            for action in result.actions:
                self._act(action, now)
            report_id = sweep.store(d.db, result, ev.trade_date, ev.checkpoint, now)
        except Exception as exc:
            if ev.reply is not None:
                ev.reply.set_exception(exc)
            raise
        if self.notify is not None:
            totals = result.report["totals"]
            self.notify(Notification(
                kind="sweep_report", book=None,
                subject=f"sweep {ev.trade_date} {ev.checkpoint}: {totals['affirmed_pct']}% "
                        f"affirmed, {len(result.report['open_items'])} open item(s)",
                summary={"report_id": report_id, "totals": totals,
                         "exceptions": result.report["open_items"][:100]},
                text=f"{totals['tickets']} tickets, {totals['affirmed']} affirmed, "
                     f"{totals['unaffirmed']} not yet."))
        if ev.reply is not None:
            ev.reply.set_result({"id": report_id, "report": result.report})

    def _act(self, action: Any, now: Any) -> None:
        d = self.d
        if isinstance(action, sweep.RequestConfirmation):
            alloc = d.db.load_allocation(action.alloc_id)
            order = d.order_facts(alloc["order_id"]) if alloc else None
            line = d.db.line(action.individual_alloc_id)
            if order is not None and line is not None:
                d.confirmations.request_line(order, line, now)
        elif isinstance(action, sweep.AllocateNow):
            order = d.orders.get(action.order_id)
            if order is not None and not order.allocs and order.done():
                d.flow.allocate(order)
        elif isinstance(action, sweep.OpenException):
            d.exceptions.open(action.kind, reason=action.reason, next_step=action.next_step,
                              order=d.order_facts(action.order_id or ""),
                              alloc_id=action.alloc_id,
                              individual_alloc_id=action.individual_alloc_id)
        elif isinstance(action, sweep.ResolveException):
            d.exceptions.resolve(by="sweep", resolution=action.resolution,
                                 exception_id=action.exception_id)
        else:
            log.warning("sweep.unknown_action", action=repr(action))
