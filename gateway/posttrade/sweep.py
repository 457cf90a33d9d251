"""The end-of-day affirmation sweep (FIX_ALLOCATION.md §5.3): read, judge, report.

`run_sweep` reads one trade date's blocks, allocations, tickets, confirmations, open
exceptions and wire log, and returns a report plus the actions that would close the gaps
it found. It writes nothing and sends nothing: the dispatcher, the one owner of mutable
state, executes the actions (each is idempotent) and then stores the report with `store`.
Run twice on the same data it gives the same report (apart from `ran_at` and the run
count) and does not ask again for what was done: a ticket whose BH went out is not asked
for again, a problem with an open exception is not opened twice.

Checkpoints are New York wall-clock times on the trade date (the New York date, never the
UTC one). What a checkpoint reports follows its label (after 16:00 an open order is a
problem, after 19:00 an unallocated block is escalated, from 21:00 on the unaffirmed
tickets are listed for an NDO or a DDO); how long a J or a ticket has waited is measured
against `now`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import structlog

from gateway.clock import CalendarError, settlement_date
from gateway.persistence.store import Database
from gateway.posttrade.sweep_actions import (
    AllocateNow,
    OpenException,
    RequestConfirmation,
    ResolveException,
    SweepAction,
    SweepResult,
    apply_exception_actions,
    latest_swept_date,
    publish_open_exceptions,
    store,
)
from gateway.posttrade.sweep_read import (
    _CONFIRM_STATUS,
    _REJ_CODES,
    _Day,
    _dec,
    _ident,
    _iso,
    _live,
    _load,
    _Problem,
    _spread,
    _Tally,
    _unique,
)
from gateway.posttrade.sweep_records import check_records
from gateway.posttrade.sweep_settings import (
    DEFAULT_CHECKPOINTS,
    END_OF_DAY,
    SweepSettings,
    checkpoint_instant,
    is_session_day,
    parse_checkpoint,
    parse_trade_date,
    run_target,
)

log = structlog.get_logger("fixalloc.sweep")

_PX = Decimal("0.0001")

_FINAL = frozenset({"filled", "done_for_day"})
_ENDED = frozenset({"canceled", "expired"})
_DEAD_TICKETS = frozenset({"cancelled", "superseded"})
# Problems the sweep opens and resolves itself; the others belong to the lifecycle, which
# opened them when the P or the AK arrived: the sweep lists them and only opens one when
# nothing is open on that allocation or ticket.
SWEEP_KINDS = frozenset({"order_open_after_close", "not_allocated", "j_not_sent", "no_p",
                         "p_not_accepted", "alloc_mismatch", "missing_ak", "session_down",
                         "record_missing"})
# The lifecycle's own exception for the same problem, which the sweep then leaves alone.
_COVERED_BY = {"no_p": frozenset({"p_timeout"}), "p_not_accepted": frozenset({"p_timeout"})}
_KIND_ORDER = ("session_down", "order_open_after_close", "not_allocated", "j_not_sent",
               "no_p", "p_not_accepted", "block_rejected", "account_rejected",
               "replace_refused", "alloc_mismatch", "missing_ak", "ak_rejected",
               "ticket_exception", "ak_not_affirmed", "record_missing")



class _Sweep:
    def __init__(self, db: Database, day: _Day, settings: SweepSettings, trade_date: date,
                 checkpoint: str, now: datetime, sessions: Sequence[Mapping[str, Any]]) -> None:
        self.db, self.day, self.s = db, day, settings
        self.trade_date, self.checkpoint, self.now = trade_date, checkpoint, now
        self.sessions = sessions
        self.zone = settings.zone
        self.problems: list[_Problem] = []
        self.actions: list[SweepAction] = []
        self.total = _Tally()
        self.groups: dict[str, dict[str, _Tally]] = {
            "broker": defaultdict(_Tally), "custodian": defaultdict(_Tally),
            "account": defaultdict(_Tally)}
        self.unaffirmed: list[dict[str, Any]] = []
        self.affirm_seconds: list[int] = []
        self.down = sorted(str(s["name"]) for s in sessions if not s.get("logged_on"))
        try:
            self.settl: date | None = settlement_date(trade_date)
        except CalendarError:
            self.settl = None

    def at(self, hhmm: str) -> bool:
        """Whether this checkpoint is at or after a wall-clock time of the trade date."""
        return self.checkpoint >= hhmm

    def waited(self, since: datetime | None, minutes: int) -> bool:
        return since is not None and self.now - since >= timedelta(minutes=minutes)

    def add(self, problem: _Problem) -> None:
        self.problems.append(problem)

    # -- blocks --------------------------------------------------------------------------

    def block(self, order: Mapping[str, Any]) -> None:
        oid, broker, status = order["order_id"], order["broker"], order["status"]
        if status == "split":
            return  # a block split across brokers: each broker's child is swept as a block
        tallies = (self.total, self.groups["broker"][broker])
        for tally in tallies:
            tally.blocks.add(oid)
        base = {"order_id": oid, "broker": broker, "book": order["book"]}
        what = f"{order['side']} {order['order_qty']} {order['symbol']}"
        cum = _dec(order["cum_qty"]) or Decimal(0)
        if status not in _FINAL | _ENDED:
            for tally in tallies:
                tally.working.add(oid)
            self.add(_Problem(
                "order_open_after_close",
                f"{what} is still {status} after the {self.s.market_close} close "
                f"(CumQty {order['cum_qty']}, LeavesQty {order['leaves_qty']})",
                "Ask the trader and the broker for the order's status (done for day or "
                "cancel); do not allocate an unknown final quantity",
                listed=self.at(self.s.market_close), escalate=self.at(self.s.market_close),
                **base))
            return
        if cum <= 0:
            return  # ended with nothing executed: nothing to allocate
        for tally in tallies:
            tally.done.add(oid)
        allocs = self.day.allocations.get(oid, [])
        live = _live(allocs)
        deadline = self.at(self.s.allocation_deadline)
        if not allocs:
            self.actions.append(AllocateNow(oid))
            self.add(_Problem(
                "not_allocated", f"{what} is {status} with CumQty {order['cum_qty']} but has "
                "no allocation", f"Allocate and send the J before "
                f"{self.s.allocation_deadline} ET (asked now); escalate to the trader if it "
                "cannot go", escalate=deadline, **base))
            return
        if live is None:
            latest = next((x for x in reversed(allocs) if x["alloc_trans_type"] != "2"),
                          allocs[-1])
            if latest["status"] == "block_rejected":
                self.add(_Problem(
                    "block_rejected", self.rejection(latest),
                    "Correct the block and send a New J with a new AllocID (not a Replace)",
                    alloc_id=latest["alloc_id"], escalate=True, **base))
            else:
                self.add(_Problem(
                    "not_allocated", f"{what}: no live allocation (the latest J "
                    f"{latest['alloc_id']} is {latest['status']})",
                    f"Send a New J before {self.s.allocation_deadline} ET or escalate",
                    alloc_id=latest["alloc_id"], escalate=deadline, **base))
            return
        self.allocation(order, live, base, tallies)

    def rejection(self, alloc: Mapping[str, Any]) -> str:
        code = alloc.get("rej_code")
        text = f"P 87={alloc.get('ack_status') or '?'} on J {alloc['alloc_id']}"
        if code:
            text += f", AllocRejCode {code} ({_REJ_CODES.get(str(code), 'unknown code')})"
        if alloc.get("ack_text"):
            text += f": {alloc['ack_text']}"
        return text

    def allocation(self, order: Mapping[str, Any], alloc: Mapping[str, Any],
                   base: dict[str, Any], tallies: tuple[_Tally, ...]) -> None:
        aid, status, broker = alloc["alloc_id"], alloc["status"], order["broker"]
        ref = {**base, "alloc_id": aid}
        down = broker in self.down
        if status != "pending_send":
            for tally in tallies:
                tally.allocated.add(order["order_id"])
        if status == "accepted":
            for tally in tallies:
                tally.accepted.add(order["order_id"])
        session_note = (f"; the {broker} session is not logged on" if down else "")
        if status == "pending_send":
            self.add(_Problem(
                "j_not_sent", f"J {aid} is stored but not sent{session_note}",
                f"Send it before {self.s.allocation_deadline} ET: bring the broker session up "
                "or approve the J; escalate to the trader",
                escalate=self.at(self.s.allocation_deadline), **ref))
        elif status == "sent":
            late = self.waited(alloc["sent_at"], self.s.p_timeout_minutes)
            self.add(_Problem(
                "no_p", f"J {aid} sent at {_iso(alloc['sent_at'])}: no P from {broker} within "
                f"{self.s.p_timeout_minutes} minutes{session_note}",
                "Re-check the session (a resend gap?) and call the broker; do not resend the "
                "J as New with a new AllocID", listed=late, escalate=late, **ref))
        elif status == "received":
            since = alloc.get("received_at") or alloc["sent_at"]
            late = self.waited(since, self.s.p_timeout_minutes)
            self.add(_Problem(
                "p_not_accepted", f"J {aid}: the broker's P is still 87=3 (received) after "
                f"{self.s.p_timeout_minutes} minutes{session_note}",
                "Call the broker for the accept or reject; do not resend the J as New",
                listed=late, escalate=late, **ref))
        elif status == "account_rejected":
            self.add(_Problem(
                "account_rejected", self.rejection(alloc),
                "Fix the rejected accounts (776/161) and send a J Replace, or a Cancel and a "
                "New J", escalate=True, **ref))
        self.mismatch(order, alloc, ref)
        for line in self.day.lines.get(aid, []):
            if line.get("ticket_state") not in _DEAD_TICKETS:
                self.ticket(order, alloc, line, ref)

    def mismatch(self, order: Mapping[str, Any], alloc: Mapping[str, Any],
                 ref: dict[str, Any]) -> None:
        lines = [x for x in self.day.lines.get(alloc["alloc_id"], [])
                 if x.get("ticket_state") not in _DEAD_TICKETS]
        total = sum((_dec(x["qty"]) or Decimal(0) for x in lines), Decimal(0))
        cum = _dec(order["cum_qty"]) or Decimal(0)
        order_px = (_dec(order["avg_px"]) or Decimal(0)).quantize(_PX, ROUND_HALF_EVEN)
        alloc_px = _dec(alloc["avg_px"])
        wrong = []
        if total != cum:
            wrong.append(f"Σ AllocQty {total} ≠ CumQty {cum}")
        if alloc_px is None or alloc_px != order_px:
            wrong.append(f"J AvgPx {alloc['avg_px']} ≠ the broker's AvgPx {order_px}")
        if not wrong:
            return
        since = alloc.get("created_at")
        late = [c["exec_id"] for c in self.day.corrections.get(order["order_id"], [])
                if since is None or c["received_at"] >= since]
        why = f" after bust/correction {', '.join(late)} arrived" if late else ""
        self.add(_Problem(
            "alloc_mismatch", f"J {alloc['alloc_id']}: {'; '.join(wrong)}{why}",
            "Send a J Replace (71=1, 796=2) with the new quantities or price; do not affirm "
            "until it is accepted", escalate=True, **ref))

    def ticket(self, order: Mapping[str, Any], alloc: Mapping[str, Any],
               line: Mapping[str, Any], ref: dict[str, Any]) -> None:
        line_id, account = line["individual_alloc_id"], line["account_id"]
        custodian = line.get("custodian") or "(none)"
        state = line.get("ticket_state")
        tallies = (self.total, self.groups["broker"][order["broker"]],
                   self.groups["custodian"][custodian], self.groups["account"][account])
        oid = order["order_id"]
        for tally in tallies[2:]:
            tally.blocks.add(oid)
            tally.done.add(oid)
            if alloc["status"] != "pending_send":
                tally.allocated.add(oid)
            if alloc["status"] == "accepted":
                tally.accepted.add(oid)
        cutoff = checkpoint_instant(self.trade_date, self.s.affirmation_cutoff, self.zone)
        for tally in tallies:
            tally.count(line, self.trade_date, cutoff)
        if state == "booked_elsewhere":
            return  # a Ready-To-Book J's line: no AK is owed, so none is missing
        if state == "affirmed":
            affirmed_at = line.get("affirmed_at")
            if affirmed_at is not None and alloc.get("sent_at") is not None:
                self.affirm_seconds.append(int((affirmed_at - alloc["sent_at"]).total_seconds()))
            return
        mine = {**ref, "individual_alloc_id": line_id, "account_id": account}
        reason, step = self.ticket_problem(alloc, line, mine)
        self.unaffirmed.append({
            "individual_alloc_id": line_id, "alloc_id": alloc["alloc_id"], "order_id": oid,
            "broker": order["broker"], "account_id": account, "custodian": line.get("custodian"),
            "qty": line["qty"], "ticket_state": state, "reason": reason,
            "next_step": self.delivery_step(step, alloc.get("settl_date"))})

    def ticket_problem(self, alloc: Mapping[str, Any], line: Mapping[str, Any],
                       ref: dict[str, Any]) -> tuple[str, str]:
        """Record what keeps this ticket from affirmation; return its reason and next step."""
        state, confirm = line.get("ticket_state"), self.day.confirmations.get(
            line["individual_alloc_id"])
        if alloc["status"] != "accepted":
            return (f"J {alloc['alloc_id']} is {alloc['status']}, not accepted",
                    "Get the J accepted first")
        if state == "rejected":
            mismatches = (confirm or {}).get("mismatches_json") or ""
            reason = f"AK economics did not match our line; AU 940=2 sent {mismatches}".strip()
            step = "Track the broker's replacement AK (666=1, or 666=2 and a new AK) and affirm it"
            self.add(_Problem("ak_rejected", reason, step, **ref))
            return reason, step
        if state == "exception":
            detail = "needs attention"
            if confirm is not None:
                detail = (f"ConfirmType {confirm['confirm_type']}, ConfirmStatus "
                          f"{confirm['confirm_status']} "
                          f"({_CONFIRM_STATUS.get(confirm['confirm_status'], '?')})")
            reason = f"AK {detail}"
            step = "Fix the account master or the SSIs (ALERT) and ask the broker to re-issue"
            self.add(_Problem("ticket_exception", reason, step, **ref))
            return reason, step
        if line.get("ak_received_at") is not None:
            reason = f"AK {line.get('confirm_id')} received but not affirmed"
            step = "Send AU 940=3, or confirm the CTM / custodian affirmation happened"
            self.add(_Problem("ak_not_affirmed", reason, step, **ref))
            return reason, step
        since = alloc.get("acked_at") or alloc.get("sent_at")
        late = self.waited(since, self.s.ak_timeout_minutes)
        bh_at = line.get("bh_sent_at")
        if late and bh_at is None:
            self.actions.append(RequestConfirmation(alloc["alloc_id"], line["individual_alloc_id"],
                                                    line["account_id"]))
        escalate = late and (self.at(self.s.ak_escalation)
                             or self.waited(bh_at, self.s.ak_timeout_minutes))
        reason = (f"no AK since the J was accepted at {_iso(since)} (more than "
                  f"{self.s.ak_timeout_minutes} minutes)" if late else "awaiting the AK")
        step = (f"ConfirmationRequest (BH) for this IndividualAllocID; escalate to the broker "
                f"by {self.s.ak_escalation} ET")
        self.add(_Problem("missing_ak", reason, step, listed=late, escalate=escalate, **ref))
        return reason, step

    def delivery_step(self, step: str, settl_date: str | None) -> str:
        """The ticket's next step, then the delivery that is left if it misses 21:00."""
        settl = settl_date or self.settl
        ddo = f"a Day Delivery Order (DDO) on {settl}" if settl else "a DDO on T+1"
        if self.at(self.s.ndo_deadline):
            return f"{step}; past {self.s.ndo_deadline} ET: {ddo}"
        return (f"{step}; affirm by {self.s.ndo_deadline} ET for a Night Delivery Order (NDO), "
                f"otherwise {ddo}")

    # -- sessions and records --------------------------------------------------------------

    def sessions_check(self) -> None:
        """One session_down problem for the broker sessions that are down.

        Escalated only while one of them has open work today (a broker whose session
        ends in the evening is not a problem by itself). One problem for all of them, as
        the exceptions store opens one exception per kind when nothing else identifies it.
        """
        busy = {p.broker for p in self.problems if p.listed} | {
            u["broker"] for u in self.unaffirmed}
        roles = {str(s["name"]): s.get("role") for s in self.sessions}
        down = [name for name in self.down if roles.get(name) == "broker"]
        if not down:
            return
        waiting = [name for name in down if name in busy]
        names = ", ".join(waiting or down)
        self.add(_Problem(
            "session_down", f"broker FIX session(s) not logged on: {names}"
            + (" (open work today)" if waiting else ""),
            "Check the network and the broker's side; on logon, watch the resend gap fill "
            "and the sequence numbers", listed=bool(waiting), escalate=bool(waiting)))

    def records(self) -> dict[str, Any]:
        report, problems = check_records(self.db, self.day)
        for problem in problems:
            self.add(problem)
        return report

    # -- exceptions ------------------------------------------------------------------------

    def exceptions(self) -> list[dict[str, Any]]:
        """Match problems to open exceptions; ask to open, resolve; list the unmatched."""
        day = self.trade_date.isoformat()
        orders = {o["order_id"] for o in self.day.orders}
        allocs = {a["alloc_id"] for rows in self.day.allocations.values() for a in rows}
        scope = [e for e in self.day.open_exceptions
                 if e.get("trade_date") == day or e.get("order_id") in orders
                 or e.get("alloc_id") in allocs or e["kind"] == "session_down"]
        by_ident: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        by_target: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for exc in scope:
            by_ident[_ident(exc["kind"], exc)].append(exc)
            for level in ("individual_alloc_id", "alloc_id"):
                if exc.get(level):
                    by_target[(level, exc[level])].append(exc)
                    break
        matched: set[int] = set()
        held: set[tuple[str, str, str]] = set()
        for p in self.problems:
            ident = _ident(p.kind, vars(p))
            held.add(ident)
            covering = list(by_ident.get(ident, []))
            if not covering:
                level = "individual_alloc_id" if p.individual_alloc_id else "alloc_id"
                others = _COVERED_BY.get(p.kind, frozenset()) if p.kind in SWEEP_KINDS \
                    else None  # a lifecycle problem: any lifecycle exception on it covers it
                covering = [e for e in by_target.get((level, getattr(p, level) or ""), [])
                            if (e["kind"] in others if others is not None
                                else e["kind"] not in SWEEP_KINDS)]
            matched.update(int(e["id"]) for e in covering)
            if p.escalate and not covering:
                self.actions.append(OpenException(
                    p.kind, p.reason, p.next_step, order_id=p.order_id, alloc_id=p.alloc_id,
                    individual_alloc_id=p.individual_alloc_id, broker=p.broker, book=p.book,
                    trade_date=day))
        items: list[dict[str, Any]] = []
        for exc in scope:
            if int(exc["id"]) in matched:
                continue
            if exc["kind"] in SWEEP_KINDS and _ident(exc["kind"], exc) not in held:
                self.actions.append(ResolveException(
                    int(exc["id"]), exc["kind"], f"the {day} {self.checkpoint} sweep found "
                    "the problem gone"))
                continue
            items.append({"kind": exc["kind"], "order_id": exc.get("order_id"),
                          "alloc_id": exc.get("alloc_id"),
                          "individual_alloc_id": exc.get("individual_alloc_id"),
                          "account_id": None, "broker": exc.get("broker"),
                          "reason": exc["reason"], "next_step": exc["next_step"],
                          "source": "exception", "exception_id": int(exc["id"])})
        return items

    # -- the whole run -----------------------------------------------------------------------

    def run(self) -> SweepResult:
        for order in self.day.orders:
            if order["status"] != "rejected":
                self.block(order)
        self.sessions_check()
        records = self.records()
        listed = [p.item() for p in self.problems if p.listed]
        items = sorted(listed + self.exceptions(), key=_item_key)
        by_kind: dict[str, int] = defaultdict(int)
        for item in items:
            by_kind[item["kind"]] += 1
        totals = self.total.figures()
        totals["time_to_affirmation_seconds"] = _spread(self.affirm_seconds)
        report = {
            "trade_date": self.trade_date.isoformat(), "checkpoint": self.checkpoint,
            "checkpoint_at": checkpoint_instant(self.trade_date, self.checkpoint,
                                                self.zone).isoformat(),
            "ran_at": _iso(self.now), "time_zone": self.s.time_zone,
            "settlement_date": self.settl.isoformat() if self.settl else None,
            "past_market_close": self.at(self.s.market_close),
            "past_allocation_deadline": self.at(self.s.allocation_deadline),
            "past_affirmation_cutoff": self.at(self.s.affirmation_cutoff),
            "past_ndo_deadline": self.at(self.s.ndo_deadline),
            "totals": totals,
            "by_broker": {k: v.figures() for k, v in sorted(self.groups["broker"].items())},
            "by_custodian": {k: v.figures()
                             for k, v in sorted(self.groups["custodian"].items())},
            "by_account": {k: v.figures() for k, v in sorted(self.groups["account"].items())},
            "open_items": items, "open_items_by_kind": dict(sorted(by_kind.items())),
            "sessions_not_logged_on": self.down, "recordkeeping": records,
            "unaffirmed_tickets": (sorted(self.unaffirmed, key=lambda u: (
                u["broker"], u["order_id"], u["individual_alloc_id"]))
                if self.at(self.s.affirmation_cutoff) else None),
        }
        return SweepResult(report, tuple(_unique(self.actions)))


def _item_key(item: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = item["kind"]
    rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
    return (rank, kind, item.get("broker") or "", item.get("order_id") or "",
            item.get("alloc_id") or "", item.get("individual_alloc_id") or "",
            item.get("exception_id") or 0)


def run_sweep(db: Database, *, trade_date: date, checkpoint: str, now: datetime,
              settings: SweepSettings, sessions: Sequence[Mapping[str, Any]]) -> SweepResult:
    """Check one trade date at one checkpoint; return the report and the actions to take.

    `sessions` is the /status session list (name, role, logged_on). Reads only.
    """
    parse_checkpoint(checkpoint)
    day = _load(db, trade_date.isoformat())
    result = _Sweep(db, day, settings, trade_date, checkpoint, now, sessions).run()
    totals = result.report["totals"]
    log.info("sweep.ran", trade_date=trade_date.isoformat(), checkpoint=checkpoint,
             blocks=totals["blocks"], tickets=totals["tickets"],
             affirmed_pct=totals["affirmed_pct"], open_items=len(result.report["open_items"]),
             actions=len(result.actions))
    for action in result.actions:
        log.info("sweep.action", action=type(action).__name__, **vars(action))
    return result



__all__ = ["DEFAULT_CHECKPOINTS", "END_OF_DAY", "AllocateNow", "OpenException",
           "RequestConfirmation", "ResolveException", "SweepAction", "SweepResult",
           "SweepSettings", "apply_exception_actions", "checkpoint_instant", "is_session_day",
           "latest_swept_date", "parse_checkpoint", "parse_trade_date", "publish_open_exceptions",
           "run_sweep", "run_target", "store"]
