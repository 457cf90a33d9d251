"""The live half of `fixalloc demo --scenario cross`: two OMS blocks crossed in the gateway.

After the rebalance's blocks are done, a price feed (a user with the operations role)
pushes AAPL's last sale over HTTP, and the OMS sends a buy block and right after it an
opposite sell block, each pre-allocated by the PM. The gateway crosses the
overlap at the pushed price; SMA0042, which the policy keeps out of crosses, goes to the
broker. It passes only when the broker got exactly the net of each block, the OMS heard
the crossed execution on both blocks at the pushed price, and each block's crossed part
came back to the OMS as a J of its own with every line marked as crossed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.demo import DemoFailed
from gateway.demo_stack import Stack, api_call
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder

PRICE = Decimal("190.25")
BUY = (("SMA0005", Decimal(1000)), ("SMA0006", Decimal(2000)))
SELL = (("SMA0002", Decimal(1500)), ("SMA0042", Decimal(500)))
# What crosses: all 1,500 of SMA0002's sale (SMA0042 may not cross), against the buyers
# pro rata; the rest of each block goes to the broker.
CROSSED = Decimal(1500)
NET = {("LX-BUY", "buy"): Decimal(1500), ("LX-SELL", "sell"): Decimal(500)}


def _block(cl: str, side: str, pre: tuple[tuple[str, Decimal], ...]) -> BlotterOrder:
    limit = Decimal("191.00") if side == "buy" else Decimal("189.00")
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side=side,
                        qty=sum((q for _a, q in pre), Decimal(0)), price=limit,
                        preallocations=pre, text="the PM's split of the block")


def live_cross(stack: Stack, token: str, say: Callable[[str], None],
               timeout: float = 60.0) -> dict[str, Any]:
    say("  live blocks from the OMS:")
    code, body = api_call(stack.http_port, "/prices", token, {
        "source": "demo-feed", "quotes": [{"symbol": "AAPL", "last": str(PRICE),
                                           "as_of": datetime.now(UTC).isoformat()}]})
    if code != 200:
        raise DemoFailed(f"POST /prices answered {code}: {body}")
    say(f"  $ POST /prices AAPL last {PRICE} (operations' token): {body}")
    before = set(stack.broker.orders)
    oms = stack.oms
    # One after the other, as an OMS sends them: the sell arrives within the buy's window.
    oms.send_order(_block("LX-BUY", "buy", BUY))
    oms.send_order(_block("LX-SELL", "sell", SELL))
    if not wait_for(lambda: bool(oms.executions.get("LX-BUY")), timeout):
        raise DemoFailed("the OMS heard nothing of its buy block")
    say(f"  OMS buy 3,000 AAPL: {oms.executions['LX-BUY'][0].text}")
    for cl in ("LX-BUY", "LX-SELL"):
        if not wait_for(lambda cl=cl: len(oms.allocations_for(cl)) >= 2, timeout):
            raise DemoFailed(f"{cl}: {len(oms.allocations_for(cl))} of 2 J reached the OMS")
    routed = {(o.cl_ord_id, o.side): o.qty for k, o in stack.broker.orders.items()
              if k not in before}
    by_side = {side: qty for (_cl, side), qty in routed.items()}
    ok = by_side == {side: qty for (_cl, side), qty in NET.items()}
    out: dict[str, Any] = {"routed": {s: str(q) for s, q in by_side.items()}}
    for cl in ("LX-BUY", "LX-SELL"):
        crossed = [e for e in oms.executions[cl] if e.exec_type == "F" and e.last_px == PRICE]
        marked = [j for j in oms.allocations_for(cl) if j.text and "internal cross" in j.text]
        lines = [ln for j in marked for ln in j.lines]
        good = ([e.last_qty for e in crossed] == [CROSSED] and len(marked) == 1
                and all(str(ln.get("text") or "").startswith("CROSS=") for ln in lines))
        last = oms.executions[cl][-1]
        say(f"  OMS {cl}: crossed {CROSSED:,} at {PRICE} ({crossed[0].text if crossed else '-'}"
            f"); filled {last.cum_qty:,} in all; J of the crossed part over {len(lines)} "
            f"accounts, each line marked {lines[0].get('text') if lines else '-'}")
        out[cl] = {"crossed": [str(e.last_qty) for e in crossed], "js": len(
            oms.allocations_for(cl)), "marked_lines": len(lines), "cum_qty": str(last.cum_qty)}
        ok = ok and good and last.cum_qty == sum((q for _a, q in (BUY if "BUY" in cl
                                                                   else SELL)), Decimal(0))
    say(f"  routed to the broker: buy {by_side.get('buy', 0):,}, sell "
        f"{by_side.get('sell', 0):,} (the net; SMA0042 may not cross)")
    out["live_ok"] = ok
    return out
