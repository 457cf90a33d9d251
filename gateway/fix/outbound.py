"""The dispatcher's port for sending: domain values in, FIX messages out through quickfix."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.fix import allocation_codec, codec, replace_codec
from gateway.fix import tags as T
from gateway.fix.sessions import FixSessions


class FixOutbound:
    def __init__(self, sessions: FixSessions) -> None:
        self._sessions = sessions

    def broker_key(self, broker_name: str) -> str:
        return self._sessions.key_of(broker_name)

    def cross_venue(self) -> Any:
        """The internal crossing venue's session (gateway/fix/cross_venue.py)."""
        return self._sessions.cross

    def venue_acks(self) -> list[Any]:
        """The venue's Ps to our Js since the last call, for the dispatcher to take."""
        return self._sessions.cross.take_acks()

    def session_status(self) -> list[dict[str, Any]]:
        return self._sessions.status()

    def handed_over(self, key: str, msg_type: str, ref_id: str) -> bool:
        """Already on the wire or in quickfix's store: sending it again would be a repeat."""
        return self._sessions.handed_over(key, msg_type, ref_id)

    def send_udfs(self, key: str) -> bool:
        """Whether this session's dictionary takes our UDFs in NoAllocs (else AllocText)."""
        return self._sessions.send_udfs(key)

    def logged_on(self, key: str) -> bool:
        return self._sessions.logged_on(key)

    def new_order(self, broker: str, *, cl_ord_id: str, symbol: str, side: str, qty: Decimal,
                  ord_type: str, price: Decimal | None, time_in_force: str | None,
                  now: datetime, stop_px: Decimal | None = None,
                  peg_offset: Decimal | None = None,
                  preallocation: tuple[str, Sequence[tuple[str, Decimal]]] | None = None
                  ) -> bool:
        msg = codec.build_new_order_single(
            cl_ord_id=cl_ord_id, symbol=symbol, side=side, qty=qty, ord_type=ord_type,
            price=price, time_in_force=time_in_force, transact_time=now, stop_px=stop_px,
            peg_offset=peg_offset)
        if preallocation is not None:
            replace_codec.add_preallocations(msg, *preallocation)
        return self._sessions.send(self._sessions.key_of(broker), msg)

    def replace(self, broker: str, *, cl_ord_id: str, orig_cl_ord_id: str,
                broker_order_id: str | None, symbol: str, side: str, qty: Decimal,
                ord_type: str, price: Decimal | None, time_in_force: str | None,
                stop_px: Decimal | None, now: datetime,
                preallocation: tuple[str, Sequence[tuple[str, Decimal]]] | None = None
                ) -> bool:
        """Our G to the broker; NoAllocs (under a new AllocID) only when they changed."""
        msg = replace_codec.build_cancel_replace(
            cl_ord_id=cl_ord_id, orig_cl_ord_id=orig_cl_ord_id,
            broker_order_id=broker_order_id, symbol=symbol, side=side, qty=qty,
            ord_type=ord_type, price=price, time_in_force=time_in_force,
            transact_time=now, stop_px=stop_px)
        if preallocation is not None:
            replace_codec.add_preallocations(msg, *preallocation)
        return self._sessions.send(self._sessions.key_of(broker), msg)

    def cancel(self, broker: str, *, cl_ord_id: str, orig_cl_ord_id: str,
               broker_order_id: str | None, symbol: str, side: str, qty: Decimal,
               now: datetime) -> bool:
        msg = codec.build_cancel_request(
            cl_ord_id=cl_ord_id, orig_cl_ord_id=orig_cl_ord_id, broker_order_id=broker_order_id,
            symbol=symbol, side=side, qty=qty, transact_time=now)
        return self._sessions.send(self._sessions.key_of(broker), msg)

    def execution_report(
        self, oms_key: str, *, poss_resend: bool = False, **fields: object
    ) -> bool:
        msg = codec.build_execution_report(**fields)  # type: ignore[arg-type]
        if poss_resend:
            msg.getHeader().setField(T.PossResend, "Y")
        return self._sessions.send(oms_key, msg)

    def dont_know(self, broker_key: str, *, broker_order_id: str, exec_id: str,
                  text: str, reason: str = "D", side: str | None = None,
                  symbol: str | None = None) -> bool:
        msg = codec.build_dont_know_trade(broker_order_id=broker_order_id, exec_id=exec_id,
                                          side=codec.SIDE_TO_FIX.get(side or ""),
                                          symbol=symbol, reason=reason, text=text)
        return self._sessions.send(broker_key, msg)

    def cancel_reject(self, oms_key: str, *, order_id: str, cl_ord_id: str,
                      orig_cl_ord_id: str, ord_status: str, reason: str, text: str) -> bool:
        msg = codec.build_order_cancel_reject(order_id=order_id, cl_ord_id=cl_ord_id,
                                              orig_cl_ord_id=orig_cl_ord_id,
                                              ord_status=ord_status, reason=reason, text=text)
        return self._sessions.send(oms_key, msg)

    def business_reject(self, key: str, *, ref_seq_num: int, ref_msg_type: str, reason: str,
                        text: str, ref_id: str | None = None) -> bool:
        msg = codec.build_business_reject(ref_seq_num=ref_seq_num, ref_msg_type=ref_msg_type,
                                          reason=reason, text=text, ref_id=ref_id)
        return self._sessions.send(key, msg)

    def allocation(self, key: str, block: allocation_codec.JBlock,
                   lines: Sequence[allocation_codec.JLine], *, send_udfs: bool,
                   fragment: tuple[int, bool] | None = None) -> bool:
        msg = allocation_codec.build_allocation_instruction(block, lines, send_udfs=send_udfs,
                                                            fragment=fragment)
        return self._sessions.send(key, msg)

    def handed_over_count(self, key: str, msg_type: str, ref_id: str) -> int:
        """How many messages about `ref_id` went to quickfix (a J's fragments)."""
        return self._sessions.handed_over_count(key, msg_type, ref_id)

    def send_message(self, key: str, msg: Any) -> bool:
        """Send a message built by a codec (confirmations, requests, reports)."""
        return self._sessions.send(key, msg)
