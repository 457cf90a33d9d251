"""Is a broker's execution report plausible for our order? Checked before the ledger.

A fill we cannot have asked for (more than the order, a price of zero or less, a part of a
share) is answered with a DK (35=Q) and never folded in: an allocation built on it would
be wrong, and the broker must correct it on their side.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# DKReason(127) values used here (FIX 4.4).
QUANTITY_EXCEEDS_ORDER = "C"
OTHER = "Z"


@dataclass(frozen=True, slots=True)
class Implausible:
    dk_reason: str
    text: str


def check_report(*, exec_type: str, last_qty: Decimal, last_px: Decimal, cum_qty: Decimal,
                 order_qty: Decimal, ledger_cum_qty: Decimal) -> Implausible | None:
    """None when the report may be applied; else why it is refused."""
    if cum_qty < 0:
        return Implausible(OTHER, f"CumQty(14) {cum_qty} is negative")
    if cum_qty > order_qty:
        return Implausible(QUANTITY_EXCEEDS_ORDER,
                           f"CumQty(14) {cum_qty} exceeds OrderQty(38) {order_qty}")
    if exec_type not in ("F", "G"):
        return None
    if last_qty < 0 or (exec_type == "F" and last_qty == 0):
        return Implausible(OTHER, f"LastQty(32) {last_qty} is not a positive quantity")
    if last_qty != last_qty.to_integral_value():
        return Implausible(OTHER, f"LastQty(32) {last_qty} is not a whole number of shares")
    if last_px <= 0:
        return Implausible(OTHER, f"LastPx(31) {last_px} is not a positive price")
    if exec_type == "F" and ledger_cum_qty + last_qty > order_qty:
        return Implausible(QUANTITY_EXCEEDS_ORDER,
                           f"fill of {last_qty} brings the executed quantity to "
                           f"{ledger_cum_qty + last_qty}, above OrderQty(38) {order_qty}")
    return None
