"""From a done order to AllocationInstructions on the wire: New, Replace, Cancel.

Runs on the dispatcher thread. The decision, the allocation and its lines are stored in
one transaction *before* the J is handed to quickfix, and each AllocID (J1, J2, ... of
the order) is a function of what is stored, so a restart never produces a second J as
New for the same allocation. What happens after the J (the broker's P, corrections,
confirmations) is in gateway/posttrade/.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, is_dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

import engine
from gateway import faults
from gateway.alerts import Alerts
from gateway.approvals.gate import ApprovalGate
from gateway.clock import Clock, settlement_date
from gateway.config import CROSS_VENUE, Config
from gateway.fix.allocation_codec import ALLOC_TYPE_TO_FIX, JBlock, JLine, block_totals
from gateway.fix.outbound import FixOutbound
from gateway.metrics import METRICS
from gateway.orders import Order
from gateway.persistence.records import RideAlong
from gateway.persistence.store import Database
from gateway.reference import ReferenceData

log = structlog.get_logger("fixalloc.allocation")

READY_TO_BOOK = ALLOC_TYPE_TO_FIX["ready_to_book"]

SIDES = {"buy": engine.Side.BUY, "sell": engine.Side.SELL, "sell_short": engine.Side.SELL_SHORT}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal | date):
        return str(value)
    if hasattr(value, "value") and hasattr(value, "name"):
        return value.value
    return value


# Allocation states whose J must not go out: waiting for the votes, or voted down.
HELD = ("pending_approval", "approval_rejected")


@dataclass(frozen=True)
class Override:
    """A person's split that replaces a rejected decision (a manual allocation)."""

    lines: Mapping[str, Decimal]
    reason: str
    rejected: str  # the rejected allocation's id

    def to_json(self) -> str:
        """The order's pre-allocation form (orders.preallocations_json)."""
        return json.dumps({"lines": [[a, str(q)] for a, q in sorted(self.lines.items())],
                           "reason": self.reason})


class AllocationFlow:
    def __init__(self, config: Config, db: Database, out: FixOutbound, refdata: ReferenceData,
                 rulebooks: Any, executor: Any, clock: Clock,
                 alerts: Alerts | None = None) -> None:
        self.config = config
        self.alerts = alerts or Alerts(db, clock)
        self.db = db
        self.out = out
        self.refdata = refdata
        self.rulebooks = rulebooks
        self.executor = executor
        self.clock = clock
        self._config_hash = config.config_hash()
        # The latest allocation's lines: its J goes to the broker and then to the OMS.
        self._last_lines: tuple[str | None, Sequence[Mapping[str, Any]], list[JLine]] = (
            None, [], [])
        self.notify: Any = None
        """Called with (order, allocation, lines) after a J is sent (notifications)."""
        self.gate = ApprovalGate(db)
        self.on_held: Any = None
        """Called with (order, approval row) when a policy holds a decision."""

    # -- pre-trade ------------------------------------------------------------------------

    def pre_trade(self, order: Order) -> dict[str, Any]:
        intent = engine.OrderIntent(block_id=order.order_id, symbol=order.symbol,
                                    side=SIDES[order.side], qty=order.order_qty,
                                    limit_px=order.price)
        report = engine.evaluate_eligibility(intent, self.refdata.accounts_for(order.book),
                                             self.refdata.securities, self.rulebooks.current(),
                                             self.executor)
        return {"eligible": list(report.eligible),
                "excluded": [_plain(r) for r in report.excluded],
                "rulebook_version": report.rulebook_version}

    def eligibility_json(self, order: Order) -> str:
        return json.dumps({"excluded": order.excluded}, sort_keys=True)

    # -- allocation -----------------------------------------------------------------------

    def allocate(self, order: Order, *, include_oms: bool = True,
                 override: Override | None = None) -> str | None:
        """The block's allocation: decide, store and send a J New, unless an approval
        policy holds it (then the J waits for the votes: gateway/approvals/desk.py).

        `override` is a person's split replacing a rejected decision. Returns the new
        allocation's id, or None when the engine refused (an exception is open)."""
        rulebook = self.rulebooks.current()
        decided = self.decide(order, rulebook=rulebook, override=override)
        if decided is None:
            return None
        decision, rotation = decided
        # Evaluated before storing, so the hold is stored with the allocation: a crash
        # can never leave a held decision looking ready to send.
        hold = self.gate.check(order, decision, rulebook, self.refdata, self.clock.now(),
                               overrides=override.rejected if override else None)
        stored = self.store(order, decision, rotation_offset=rotation,
                            refdata_version=self.refdata.version, approval=hold,
                            override=override)
        alloc_id = str(stored[0]["alloc_id"])
        if hold is not None:
            if self.on_held is not None:
                self.on_held(order, {**hold, "alloc_id": alloc_id})
            return alloc_id
        self.send(order, alloc_id, include_oms=include_oms, stored=stored)
        return alloc_id

    def decide(self, order: Order, *, rulebook: Any = None, refdata: ReferenceData | None = None,
               rotation_offset: int | None = None,
               override: Override | None = None) -> tuple[Any, int] | None:
        """The engine's decision on the order's ledger as it stands, or None (an exception).

        A Replace after a correction passes the rulebook, reference data and rotation of
        the original decision, so that only the executions change the split.
        """
        refdata = refdata or self.refdata
        started = self.clock.now()
        # A rotation tie-break stays fair over time: each block of the book starts the
        # rotation one account further on, and the count lives in the database.
        rotation = (rotation_offset if rotation_offset is not None
                    else self.db.allocations_for_book(order.book))
        request = engine.AllocationRequest(
            block_id=order.order_id, symbol=order.symbol, side=SIDES[order.side],
            executed_qty=order.ledger.cum_qty, avg_px=order.ledger.avg_px,
            trade_date=date.fromisoformat(order.trade_date),
            accounts=refdata.accounts_for(order.book), securities=refdata.securities,
            decided_at=started,
            method=None if override else self.requested_method(order),
            preallocations=dict(override.lines if override else order.preallocations) or None,
            preallocation_reason=override.reason if override else order.preallocation_reason,
            rotation_offset=rotation,
        )
        try:
            decision = engine.allocate(request, rulebook or self.rulebooks.current(),
                                       self.executor)
            engine.check_decision(decision)
            settlement_date(date.fromisoformat(order.trade_date))
        except Exception as exc:
            # Whatever the engine raised, the block becomes an exception for operations to
            # see, never a crash of the dispatcher and never a J.
            order.alloc_status = "exception"
            self.alerts.raise_("allocation_failed", order_id=order.order_id,
                               detail={"cl_ord_id": order.oms_cl_ord_id, "error": str(exc)})
            return None
        METRICS.decision_seconds.observe((self.clock.now() - started).total_seconds())
        if decision.unallocated_qty > 0 or not decision.lines:
            order.alloc_status = "exception"
            self.alerts.raise_("unallocated_quantity", order_id=order.order_id,
                               detail={"cl_ord_id": order.oms_cl_ord_id,
                                       "unallocated_qty": str(decision.unallocated_qty),
                                       "reason": decision.unallocated_reason,
                                       "decision_id": decision.decision_id})
            return None
        return decision, rotation

    def requested_method(self, order: Order) -> str | None:
        """The method the request names: the book's override, or none (the scheme's).

        A pre-allocated order is split as the OMS said (pro-rated on a partial fill)."""
        if order.preallocations:
            return None
        book = self.config.book(order.book)
        return book.method if book else None

    def next_alloc_id(self, order: Order) -> str:
        """J1, J2, ... per order: a pure function of what is stored, so a restart agrees."""
        return f"{order.order_id}-J{len(self.db.allocations_for_order(order.order_id)) + 1}"

    def store(self, order: Order, decision: Any, *, trans_type: str = "0",
              ref_alloc_id: str | None = None, reason: str | None = None,
              rotation_offset: int | None = None, refdata_version: str | None = None,
              refdata: ReferenceData | None = None, approval: dict[str, Any] | None = None,
              override: Override | None = None,
              ) -> tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]:
        """Store the decision and a J (New or Replace) with its lines, before any sending."""
        alloc_id = self.next_alloc_id(order)
        broker = self.config.broker(order.broker)
        accounts = {a.account_id: a for a in (refdata or self.refdata).accounts_for(order.book)}
        alloc_type = ALLOC_TYPE_TO_FIX[broker.alloc_type]
        # A Ready-To-Book J carries no lines, so the broker sends no AK for them: the
        # split (still decided and stored: our record and the OMS's copy) is booked
        # elsewhere, e.g. through CTM, and nothing here waits for an AK or sends a BH.
        ticket = "booked_elsewhere" if alloc_type == READY_TO_BOOK else "awaiting_ak"
        now = self.clock.now()
        settl = settlement_date(date.fromisoformat(order.trade_date)).isoformat()
        lines = [
            {"individual_alloc_id": f"{alloc_id}-{i:05d}", "alloc_id": alloc_id,
             "account_id": ln.account_id, "qty": str(ln.qty), "avg_px": str(ln.avg_px),
             "custodian": accounts[ln.account_id].custodian,
             "prime_broker": accounts[ln.account_id].prime_broker,
             "strategy": accounts[ln.account_id].strategy,
             "vehicle": accounts[ln.account_id].vehicle,
             "lots_json": json.dumps(_plain(ln.lots)) if ln.lots else None,
             "ticket_state": ticket}
            for i, ln in enumerate(decision.lines, start=1)
        ]
        allocation = {
            "alloc_id": alloc_id, "order_id": order.order_id,
            "decision_id": decision.decision_id, "broker": order.broker,
            "alloc_trans_type": trans_type, "alloc_type": alloc_type,
            "quantity": str(decision.allocated_qty), "avg_px": str(decision.avg_px),
            "trade_date": order.trade_date, "settl_date": settl,
            "status": "pending_send" if approval is None else "pending_approval",
            "created_at": now, "last_fill_at": order.ledger.last_fill_at,
            "ref_alloc_id": ref_alloc_id, "reason": reason,
            "fragments": self._fragment_count(order.broker, len(lines), alloc_type)}
        self.db.save_allocation(
            {"decision_id": decision.decision_id, "order_id": order.order_id,
             "method": decision.method, "rulebook_version": decision.rulebook_version,
             "inputs_hash": decision.inputs_hash, "config_hash": self._config_hash,
             "decided_at": decision.decided_at, "canonical_json": decision.to_canonical_json(),
             "refdata_version": refdata_version or self.refdata.version,
             "rotation_offset": rotation_offset, "engine_version": engine.ENGINE_VERSION,
             "requested_method": "" if override else self.requested_method(order) or "",
             "last_report_id": order.last_report_id,
             "preallocations_json": override.to_json() if override else None},
            allocation, lines,
            approval=None if approval is None else {**approval, "alloc_id": alloc_id},
        )
        faults.point("decision_stored")
        order.alloc_id = alloc_id
        order.alloc_status = allocation["status"]
        order.allocs[alloc_id] = allocation["status"]
        order.ledger.changed_by_correction = False
        log.info("allocation.decided", alloc_id=alloc_id, trans_type=trans_type,
                 ref_alloc_id=ref_alloc_id, method=decision.method, accounts=len(lines),
                 quantity=str(decision.allocated_qty), avg_px=str(decision.avg_px),
                 decision_id=decision.decision_id, rulebook=decision.rulebook_version,
                 cl_ord_id=order.oms_cl_ord_id, order_id=order.order_id)
        METRICS.allocations.labels(state="decided").inc()
        return allocation, lines

    def store_cancel(self, order: Order, ref_alloc_id: str, reason: str
                     ) -> tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]:
        """A J Cancel (71=2) of `ref_alloc_id`, stored before it is sent."""
        ref = self.db.load_allocation(ref_alloc_id)
        assert ref is not None
        alloc_id = self.next_alloc_id(order)
        allocation = {**{k: ref[k] for k in ("order_id", "decision_id", "broker", "alloc_type",
                                             "quantity", "avg_px", "trade_date", "settl_date")},
                      "alloc_id": alloc_id, "alloc_trans_type": "2", "status": "pending_send",
                      "created_at": self.clock.now(), "ref_alloc_id": ref_alloc_id,
                      "reason": reason, "fragments": 1}
        self.db.save_allocation({"decision_id": ref["decision_id"]}, allocation, [])
        order.allocs[alloc_id] = "pending_send"
        log.info("allocation.cancel_decided", alloc_id=alloc_id, ref_alloc_id=ref_alloc_id,
                 reason=reason, order_id=order.order_id)
        return allocation, []

    def _fragment_count(self, broker: str, lines: int, alloc_type: str) -> int:
        if alloc_type == READY_TO_BOOK:
            return 1  # no NoAllocs on the broker's J: nothing to split
        most = self.config.broker(broker).max_lines_per_j
        return max(1, -(-lines // most)) if most else 1

    def _j(self, order: Order, alloc: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
           *, to_oms: bool) -> JBlock:
        order_ref: str | None
        if to_oms:
            cl_ord_id, order_ref = order.oms_cl_ord_id, order.order_id
        else:
            # A J quotes the latest ClOrdID of the chain at the broker (FIX_ALLOCATION §1.5).
            cl_ord_id = (f"{order.order_id}~C{order.cancel_count}" if order.cancel_count
                         else order.child_cl_ord_id or order.order_id)
            order_ref = order.broker_order_id
        alloc_type = alloc["alloc_type"]
        if to_oms and alloc_type == READY_TO_BOOK:
            # The OMS books the accounts from our J, so it gets the whole split as a
            # calculated allocation (626=1) even when the broker only gets Ready-To-Book.
            alloc_type = ALLOC_TYPE_TO_FIX["calculated"]
        gross, net = block_totals(_j_lines(rows))
        return JBlock(
            alloc_id=alloc["alloc_id"], alloc_trans_type=alloc["alloc_trans_type"],
            alloc_type=alloc_type, cl_ord_id=cl_ord_id, broker_order_id=order_ref,
            order_qty=order.order_qty, side=order.side, symbol=order.symbol,
            quantity=Decimal(alloc["quantity"]), avg_px=Decimal(alloc["avg_px"]),
            trade_date=alloc["trade_date"], settl_date=alloc["settl_date"],
            transact_time=self.clock.now(), secondary_alloc_id=order.order_id,
            ref_alloc_id=alloc.get("ref_alloc_id"),
            canc_replace_reason="2" if alloc.get("alloc_trans_type") == "1" else "99",
            gross=gross, net_money=net,
            text=(f"internal cross {order.broker_order_id}: every line crossed between the "
                  "firm's own accounts; no commission")
            if order.broker == CROSS_VENUE.name else None,
        )

    def send_pending(
        self, order: Order, *, check_wire: bool = False, include_oms: bool = True,
        stored: tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        """Send whatever of the order's current allocation has not gone to quickfix yet."""
        if order.alloc_id is not None:
            self.send(order, order.alloc_id, check_wire=check_wire, include_oms=include_oms,
                      stored=stored)

    def send(self, order: Order, alloc_id: str, *, check_wire: bool = False,
             include_oms: bool = True,
             stored: tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]] | None = None,
             ) -> None:
        """Send an allocation's J (in fragments when the broker asks) to the broker and OMS.

        Used right after the decision and again by startup recovery, which passes
        `check_wire`: the outbound wire log and quickfix's store then decide how much of
        the J already went to quickfix before the crash, so none of it is sent twice.
        """
        if stored is not None:
            alloc, rows = stored
            self._last_lines = (alloc_id, rows, _j_lines(rows))
        else:
            loaded = self.db.load_allocation(alloc_id)
            if loaded is None:
                return
            alloc = loaded
            if self._last_lines[0] != alloc_id:  # lines never change once stored
                rows = self.db.load_allocation_lines(alloc_id)
                self._last_lines = (alloc_id, rows, _j_lines(rows))
            rows = self._last_lines[1]
        if alloc.get("status") in HELD:
            return  # no J before the approvals say so (recovery comes through here too)
        j_lines = self._last_lines[2]
        broker_key = self.out.broker_key(order.broker)
        if alloc.get("sent_at") is None:
            parts = self._fragments(order.broker, j_lines, alloc["alloc_type"])
            done = self.out.handed_over_count(broker_key, "J", alloc_id) if check_wire else 0
            if done:
                log.info("allocation.already_on_wire", alloc_id=alloc_id, fragments=done)
            block = self._j(order, alloc, rows, to_oms=False)
            sent = self.clock.now()
            ride: RideAlong | None = None
            for index, part in enumerate(parts[done:], start=done):
                last = index == len(parts) - 1
                # "Sent" commits with the last fragment's wire row, which quickfix writes
                # once it has stored the J for resend (recovery asks that store too).
                with (self.db.riding_on_wire(broker_key, self._marker(
                        "broker_j_stored", alloc_id, status="sent", sent_at=sent))
                      if last else nullcontext()) as riding:
                    self.out.allocation(broker_key, block, part,
                                        send_udfs=self.out.send_udfs(broker_key),
                                        fragment=(len(j_lines), last)
                                        if len(parts) > 1 else None)
                ride = riding if last else ride
            if len(parts) > done:
                faults.point("broker_j_sent")
            if ride is None or not ride.done:
                self.db.update_allocation(alloc_id, status="sent", sent_at=sent)
            faults.point("broker_j_recorded")
            order.allocs[alloc_id] = "sent"
            if order.alloc_id == alloc_id:
                order.alloc_status = "sent"
            METRICS.allocations.labels(state="sent").inc()
            if order.ledger.last_fill_at is not None and alloc["alloc_trans_type"] == "0":
                METRICS.allocation_seconds.observe(
                    (sent - order.ledger.last_fill_at).total_seconds())
            log.info("allocation.sent", alloc_id=alloc_id, broker=order.broker,
                     trans_type=alloc["alloc_trans_type"], cl_ord_id=order.oms_cl_ord_id,
                     lines=sum(len(part) for part in parts), fragments=len(parts))
        if include_oms and alloc.get("oms_sent_at") is None:
            at, recorded = self.clock.now(), False
            if not (check_wire and self.out.handed_over(order.oms_session, "J", alloc_id)):
                with self.db.riding_on_wire(order.oms_session, self._marker(
                        "oms_j_stored", alloc_id, oms_sent_at=at)) as oms_ride:
                    self.out.allocation(order.oms_session,
                                        self._j(order, alloc, rows, to_oms=True),
                                        _crossed(order, j_lines),
                                        send_udfs=self.out.send_udfs(order.oms_session))
                faults.point("oms_j_sent")
                recorded = oms_ride.done
            if not recorded:
                self.db.update_allocation(alloc_id, oms_sent_at=at)
            log.info("allocation.sent_to_oms", alloc_id=alloc_id, cl_ord_id=order.oms_cl_ord_id)
        if self.notify is not None and alloc["alloc_trans_type"] != "2":
            self.notify(order, alloc, rows)

    def _marker(self, fault: str, alloc_id: str, **values: Any) -> Callable[[Any], None]:
        def write(conn: Any) -> None:
            faults.point(fault)
            self.db.write_allocation_update(conn, alloc_id, **values)
        return write

    def _fragments(self, broker: str, lines: Sequence[JLine],
                   alloc_type: str) -> list[Sequence[JLine]]:
        """The broker's J in parts: one, without lines, for Ready-To-Book (FIX_ALLOCATION
        §1.4: NoOrders and no NoAllocs; the accounts are split elsewhere)."""
        if alloc_type == READY_TO_BOOK:
            return [[]]
        most = self.config.broker(broker).max_lines_per_j
        if not most or len(lines) <= most:
            return [lines]
        return [lines[i:i + most] for i in range(0, len(lines), most)]


def _crossed(order: Order, lines: list[JLine]) -> list[JLine]:
    """The OMS's copy marks each line of a crossed part with the cross's id."""
    if order.broker != CROSS_VENUE.name:
        return lines
    return [replace(ln, cross_id=order.broker_order_id) for ln in lines]


def _j_lines(rows: Sequence[Mapping[str, Any]]) -> list[JLine]:
    return [JLine(r["individual_alloc_id"], r["account_id"], Decimal(r["qty"]),
                  Decimal(r["avg_px"]), r["custodian"], r["prime_broker"], r["strategy"],
                  r["vehicle"]) for r in rows]
