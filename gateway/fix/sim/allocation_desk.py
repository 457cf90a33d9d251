"""The broker simulator's allocation desk: J in, P out; an accepted J becomes confirmation
tickets (confirmations.py sends their AKs and handles AU, BH and AT).

A mixin of BrokerSimulator (it uses the broker's engine, orders, locks, ID counter and
saved state). What it does for each J the gateway may send:

* J New: P 87=3, then 87=0, 87=1 (block reject, AllocRejCode) or 87=2 (account lines with
  IndividualAllocRejCode) under the PostTradePlan; once accepted, an optional AS, then one
  AK per line (some held, mismatched or status confirms, as planned), then the planned
  busts and corrections of the order's fills.
* J Replace (RefAllocID): P as above, or 87=1 when the J it replaces is unknown or dead, or
  was accepted and the plan refuses amendments; then AK 666=1 for lines whose economics
  changed, AK 666=0 for new lines, AK 666=2 for lines that disappeared.
* J Cancel: P 87=0 (or 87=1 likewise), then AK 666=2 for every line confirmed.
* J fragment (TotNoAllocs): P 87=3 per fragment; when LastFragment=Y arrives, the final P
  for the whole set. Lines are keyed by IndividualAllocID, so a fragment repeated (a
  PossDup resend after a disconnect, or the same fragment sent again) counts once.
* Another J while a fragment set is incomplete: the set is given up (final P 87=1).
* A PossDup/PossResend repeat of a J already booked: recorded, not answered again; a J New
  reusing a booked AllocID without those flags: P 87=1, 88=7.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import quickfix as fix

from gateway.fix import allocation_codec, codec
from gateway.fix import tags as T
from gateway.fix.allocation_codec import JReceived
from gateway.fix.sim.booking import LIVE, Booking, FragmentSet, Line
from gateway.fix.sim.confirmations import ConfirmationDesk
from gateway.fix.sim.orders import order_root
from gateway.fix.sim.plans import PostTradePlan

ALLOC_REJ_TEXT = {"0": "unknown account", "1": "incorrect quantity",
                  "2": "incorrect average price", "3": "unknown executing broker mnemonic",
                  "4": "commission difference", "5": "unknown OrderID", "6": "unknown ListID",
                  "7": "other", "8": "incorrect allocated quantity", "9": "calculation difference",
                  "10": "unknown or stale ExecID", "11": "mismatched data",
                  "12": "unknown ClOrdID", "13": "warehouse request rejected"}
_ACK_LINE_ORDER = [T.AllocAccount, T.AllocAcctIDSource, T.AllocPrice, T.IndividualAllocID,
                   T.IndividualAllocRejCode, T.AllocText, T.EncodedAllocTextLen,
                   T.EncodedAllocText]
_PX_TOLERANCE = Decimal("0.0001")


@dataclass(frozen=True)
class Decision:
    status: str
    rej_code: str | None = None
    text: str | None = None
    rejected: tuple[tuple[Line, str], ...] = ()


class AllocationDesk(ConfirmationDesk):
    """Mixin of BrokerSimulator: J in, P out (see the module docstring)."""

    # Provided by BrokerSimulator.
    allocations: list[JReceived]
    repeated_allocations: list[JReceived]
    _booked: set[str]

    # -- set-up, plans, saved state ---------------------------------------------------------

    def _init_desk(self, plan: PostTradePlan | None,
                   overrides: Mapping[str, PostTradePlan] | None) -> None:
        self.post_trade = plan or PostTradePlan()
        self.post_trade_overrides: dict[str, PostTradePlan] = dict(overrides or {})
        self.bookings: dict[str, Booking] = {}
        self.fragments: list[JReceived] = []
        """Every fragment of a fragmented J, as received (repeats excluded)."""
        self.sent_acks: list[allocation_codec.AllocAckFields] = []
        self._fragment_sets: dict[str, FragmentSet] = {}
        self._post_j_done: set[str] = set()
        self._init_confirmations()

    def set_post_trade(self, key: str, plan: PostTradePlan) -> None:
        """Give one order (its ClOrdID) or one J (its AllocID) a plan of its own."""
        with self._lock:
            self.post_trade_overrides[key] = plan

    def _plan_for(self, alloc_id: str, ref_alloc_id: str | None,
                  cl_ord_ids: tuple[str, ...]) -> PostTradePlan:
        """The J's own plan, else that of a J it replaces or cancels, else its order's."""
        keys = [alloc_id]
        ref, seen = ref_alloc_id, set()
        while ref and ref not in seen:
            seen.add(ref)
            keys.append(ref)
            booking = self.bookings.get(ref)
            ref = booking.ref_alloc_id if booking else None
        for cl in cl_ord_ids:
            keys += [cl, order_root(cl)]
        for key in keys:
            if key in self.post_trade_overrides:
                return self.post_trade_overrides[key]
        return self.post_trade

    def _desk_state(self) -> dict[str, Any]:
        return {"bookings": [b.to_json() for b in self.bookings.values()],
                "fragment_sets": [fs.to_json() for fs in self._fragment_sets.values()],
                "post_j_done": sorted(self._post_j_done), **self._confirmations_state()}

    def _load_desk_state(self, data: Mapping[str, Any] | None) -> None:
        if not data:
            return
        self.bookings = {row["alloc_id"]: Booking.from_json(row) for row in data["bookings"]}
        sets = (FragmentSet.from_json(row) for row in data["fragment_sets"])
        self._fragment_sets = {fs.header.alloc_id: fs for fs in sets}
        self._post_j_done = set(data["post_j_done"])
        self._load_confirmations_state(data)

    def _start_desk(self) -> None:
        self.scheduler.start()

    def _stop_desk(self) -> None:
        self.scheduler.stop()

    # -- J ----------------------------------------------------------------------------------

    def _on_allocation(self, message: fix.Message) -> None:
        j = allocation_codec.parse_allocation_instruction(message)
        if j.tot_no_allocs is not None:
            self._on_fragment(j)
            return
        if codec.is_poss_dup(message) and j.alloc_id in self._booked:
            # A resend of a J already booked: a real broker does not book it twice.
            self.repeated_allocations.append(j)
            return
        self.allocations.append(j)
        self._on_message("allocation", j)
        self._abandon_open_sets(keep=None)
        self._book(j, received_sent=False)

    def _on_fragment(self, j: JReceived) -> None:
        with self._lock:
            fs = self._fragment_sets.get(j.alloc_id)
            complete = fs is None and j.alloc_id in self.bookings
        if complete:  # a fragment of a set already booked, sent again
            self.repeated_allocations.append(j)
            return
        if fs is None:
            self._abandon_open_sets(keep=j.alloc_id)
            fs = FragmentSet(header=j)
            with self._lock:
                self._fragment_sets[j.alloc_id] = fs
        with self._lock:
            fresh = fs.add(j)
        if not fresh:  # every line of it is here already: counted once
            self.repeated_allocations.append(j)
            return
        self.fragments.append(j)
        self._save_state()
        self._send_ack(allocation_codec.build_allocation_ack(
            alloc_id=j.alloc_id, status="3", transact_time=datetime.now(UTC)))
        if j.last_fragment:
            with self._lock:
                self._fragment_sets.pop(j.alloc_id, None)
            whole = fs.assembled()
            self.allocations.append(whole)
            self._on_message("allocation", whole)
            self._book(whole, received_sent=True, refuse=fs.incomplete())

    def _abandon_open_sets(self, keep: str | None) -> None:
        """Another J arrived while a fragment set was incomplete: the set is given up."""
        with self._lock:
            stale = [a for a in self._fragment_sets if a != keep]
            sets = [self._fragment_sets.pop(a) for a in stale]
        for fs in sets:
            self._book(fs.assembled(), received_sent=True,
                       refuse=f"fragment set abandoned ({fs.incomplete() or 'no LastFragment'})"
                              " when another J arrived")

    def _book(self, j: JReceived, *, received_sent: bool, refuse: str | None = None) -> None:
        now = datetime.now(UTC)
        later: list[Callable[[], None]] = []
        with self._lock:
            plan = self._plan_for(j.alloc_id, j.ref_alloc_id, j.cl_ord_ids)
            duplicate = j.alloc_id in self.bookings
            booking = Booking.of(j, number=0 if duplicate else self._rank(j))
            if refuse:
                decision = Decision("1", "7", refuse)
            elif duplicate:
                decision = Decision("1", "7", f"AllocID {j.alloc_id} is already booked")
            else:
                decision = self._decide(j, booking, plan)
            if not duplicate:
                self.bookings[j.alloc_id] = booking
            self._booked.add(j.alloc_id)
            if plan.withhold_final_p and not refuse:
                booking.status = "received"
            elif decision.status == "0":
                booking.status = "accepted"
                later = self._accept(booking, plan)
            else:
                booking.status = "block_rejected" if decision.status == "1" else "account_rejected"
        self._save_state()
        if not received_sent:
            self._send_ack(allocation_codec.build_allocation_ack(
                alloc_id=j.alloc_id, status="3", transact_time=now))
        if not plan.withhold_final_p or refuse:
            self._send_ack(self._final_ack(j.alloc_id, decision, now))
        for step in later:
            step()

    def _rank(self, j: JReceived) -> int:
        roots = {order_root(c) for c in j.cl_ord_ids}
        earlier = sum(1 for b in self.bookings.values()
                      if roots & {order_root(c) for c in b.cl_ord_ids})
        return earlier + 1

    def _executed(self, cl_ord_ids: tuple[str, ...]) -> tuple[Decimal, Decimal]:
        roots = {order_root(c) for c in cl_ord_ids}
        orders = [o for o in self.orders.values() if order_root(o.cl_ord_id) in roots]
        qty = sum((o.cum_qty for o in orders), Decimal(0))
        notional = sum((o.notional for o in orders), Decimal(0))
        return qty, (notional / qty if qty else Decimal(0))

    def _decide(self, j: JReceived, booking: Booking, plan: PostTradePlan) -> Decision:
        trans = j.alloc_trans_type
        if trans in ("1", "2"):
            what = "Replace" if trans == "1" else "Cancel"
            ref = self.bookings.get(j.ref_alloc_id or "")
            if ref is None:
                return Decision("1", "7", f"{what} of unknown RefAllocID {j.ref_alloc_id}")
            if ref.status not in LIVE:
                return Decision("1", "7", f"{what} of {ref.alloc_id}, which is {ref.status}")
            refuse = plan.reject_replace_after_accept if trans == "1" \
                else plan.reject_cancel_after_accept
            if ref.status == "accepted" and refuse:
                return Decision("1", "7", f"{what} of {ref.alloc_id} refused: it was accepted;"
                                          " amend it manually")
        if trans != "2":
            executed, broker_px = self._executed(j.cl_ord_ids)
            total = sum((ln.qty for ln in booking.lines), Decimal(0))
            if j.alloc_type != "5" and total != j.quantity:
                return Decision("1", "8", f"sum of AllocQty {total} != {j.quantity}")
            if j.quantity > executed:
                return Decision("1", "1", f"Quantity {j.quantity} > executed {executed}")
            if plan.check_avg_px and abs(j.avg_px - broker_px) > _PX_TOLERANCE:
                return Decision("1", "2", f"AvgPx {j.avg_px} != executed {broker_px:.6f}")
        code = plan.reject_block.get(booking.number)
        if code is not None:
            return Decision("1", code, f"J {booking.number} of the order refused: "
                                       f"{ALLOC_REJ_TEXT.get(code, 'other')}")
        if plan.reject_block_if is not None:
            code = plan.reject_block_if(j)
            if code is not None:
                return Decision("1", code, ALLOC_REJ_TEXT.get(code, "other"))
        bad = tuple((ln, plan.reject_account[ln.account]) for ln in booking.lines
                    if ln.account in plan.reject_account)
        if bad:
            return Decision("2", None, f"{len(bad)} account line(s) rejected", bad)
        return Decision("0")

    def _final_ack(self, alloc_id: str, d: Decision, now: datetime) -> fix.Message:
        msg = allocation_codec.build_allocation_ack(
            alloc_id=alloc_id, status=d.status, rej_code=d.rej_code, transact_time=now,
            text=d.text)
        for line, code in d.rejected:
            grp = codec.group(T.NoAllocs, T.AllocAccount, _ACK_LINE_ORDER)
            grp.setField(T.AllocAccount, line.account)
            grp.setField(T.IndividualAllocID, line.individual_alloc_id)
            grp.setField(T.IndividualAllocRejCode, code)
            grp.setField(T.AllocText, ALLOC_REJ_TEXT.get(code, "other"))
            msg.addGroup(grp)
        return msg

    def _send_ack(self, msg: fix.Message) -> None:
        fields = allocation_codec.parse_allocation_ack(msg)
        self.sent_acks.append(fields)
        self.engine.send(msg)
        self._on_message("ack", fields)

    # -- booking an accepted J: tickets and what follows (called under the lock) ------------

    def _accept(self, b: Booking, plan: PostTradePlan) -> list[Callable[[], None]]:
        first: list[Callable[[], None]] = []
        later: list[Callable[[], None]] = []
        old: dict[str, str] = {}
        if b.trans_type in ("1", "2"):
            ref = self.bookings[b.ref_alloc_id or ""]
            ref.status = "cancelled" if b.trans_type == "2" else "replaced"
            ref.replaced_by = b.alloc_id if b.trans_type == "1" else None
            old = dict(ref.tickets)
        lines = [] if b.trans_type == "2" or b.alloc_type == "5" or not plan.acks \
            else self._booked_lines(b, plan)
        owed: list[str] = []
        for line in lines:
            tid = old.pop(line.account, None)
            t = self.tickets.get(tid) if tid else None
            if t is None or t.void or t.last_kind == "cancel":
                t = self._new_ticket(b, line, plan)
            else:
                changed = (t.qty, t.avg_px) != (line.qty, line.avg_px)
                t.alloc_id, t.individual_alloc_id = b.alloc_id, line.individual_alloc_id
                t.qty, t.avg_px, t.settl_date = line.qty, line.avg_px, b.settl_date
                if t.confirm_ids and changed and t.pending is None:
                    t.pending = "1"
            b.tickets[line.account] = t.ticket_id
            owed.append(t.ticket_id)
        owed += [tid for tid in old.values() if self._cancel_ticket(self.tickets[tid])]
        later.append(partial(self._schedule_aks, owed))
        if plan.send_as and b.trans_type != "2":
            first.append(partial(self._schedule_todo, self._add_todo("as", alloc_id=b.alloc_id)))
        later += self._post_j_corrections(b, plan)
        return first + later

    def _booked_lines(self, b: Booking, plan: PostTradePlan) -> list[Line]:
        """The J's lines, or the AS's when the plan moves quantity between accounts."""
        lines = [Line(ln.account, ln.individual_alloc_id, ln.qty, ln.avg_px) for ln in b.lines]
        if not (plan.send_as and plan.as_move):
            return lines
        src, dst, qty = plan.as_move
        for ln in lines:
            if ln.account == src:
                ln.qty -= qty
        target = next((ln for ln in lines if ln.account == dst), None)
        if target is None:
            lines.append(Line(dst, f"{b.alloc_id}-AS", qty, b.avg_px))
        else:
            target.qty += qty
        return [ln for ln in lines if ln.qty > 0]

    def _post_j_corrections(self, b: Booking, plan: PostTradePlan) -> list[Callable[[], None]]:
        """The plan's busts and corrections of the order's fills, once per order."""
        if b.trans_type != "0" or not (plan.bust_after_j or plan.correct_after_j):
            return []
        roots = [order_root(c) for c in b.cl_ord_ids]
        order = next((o for o in self.orders.values()
                      if order_root(o.cl_ord_id) in roots), None)
        if order is None or order_root(order.cl_ord_id) in self._post_j_done:
            return []
        self._post_j_done.add(order_root(order.cl_ord_id))
        wids = [self._add_todo("correct", cl_ord_id=order.cl_ord_id, index=i, px=str(px))
                for i, px in plan.correct_after_j]
        wids += [self._add_todo("bust", cl_ord_id=order.cl_ord_id, index=i)
                 for i in plan.bust_after_j]
        return [partial(self._schedule_todo, w, after_aks=True) for w in wids]
