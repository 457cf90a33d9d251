"""`fixalloc demo --scenario multibroker`: a book that routes to two brokers by each
account's prime broker. One block from the OMS becomes one child order per broker; each
broker fills its part at its own prices and gets its own J for its own accounts; the OMS
sees one order filling cumulatively and receives both Js.

Everything is real and on 127.0.0.1: the daemon, two broker simulators and the OMS
simulator over FIX. The scenario passes only when each broker's J covers exactly the
accounts mapped to it at that broker's average price, and the OMS's last report shows
the whole block filled at the blended price.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.demo import CONFIG_DIR, DemoFailed, demo_config
from gateway.demo_stack import demo_stack
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder
from gateway.ports import free_port

MAPPING = {"PB01": "BRKA", "PB02": "BRKB", "PB03": "BRKB"}
ROUTING = """
[books.routing]
by = "account"
account_field = "prime_broker"
brokers = { PB01 = "BRKA", PB02 = "BRKB", PB03 = "BRKB" }
"""
PRICES = {"BRKA": Decimal("190.10"), "BRKB": Decimal("190.40")}


def run_multibroker_demo(*, state: Path, say: Callable[[str], None], timeout: float = 60.0
                         ) -> dict[str, Any]:
    state.mkdir(parents=True, exist_ok=True)
    config_dir = state / "config"
    shutil.copytree(CONFIG_DIR, config_dir, dirs_exist_ok=True)
    oms_port, port_a, port_b, http_port = free_port(), free_port(), free_port(), free_port()
    cfg = demo_config(state, oms_port=oms_port, broker_port=port_a, http_port=http_port,
                      config_dir=config_dir, extra=ROUTING, broker_extra=f"""
[[fix.brokers]]
name = "BRKB"
target_comp_id = "BRKB"
host = "127.0.0.1"
port = {port_b}
alloc_type = "calculated"
""")
    with (config_dir / "accounts.csv").open(encoding="utf-8") as f:
        broker_of = {r["account_id"]: MAPPING[r["prime_broker"]] for r in csv.DictReader(f)}
    say(f"fixalloc demo --scenario multibroker: state in {state}")
    say("  book SMA-CORE routes by prime_broker: PB01 -> BRKA, PB02 and PB03 -> BRKB")
    other = BrokerSimulator(port=port_b, state_dir=state / "sim-broker-b", sender="BRKB",
                            plan=FillPlan(fills=4, interval_ms=10, prices=(PRICES["BRKB"],)))
    other.start()
    out: dict[str, Any] = {"state_dir": str(state)}
    try:
        with demo_stack(state, cfg, broker_port=port_a, oms_port=oms_port,
                        http_port=http_port,
                        plan=FillPlan(fills=4, interval_ms=10, prices=(PRICES["BRKA"],))
                        ) as stack:
            brokers = {"BRKA": stack.broker, "BRKB": other}
            order = BlotterOrder(cl_ord_id="MULTI-1", book="SMA-CORE", symbol="AAPL",
                                 side="buy", qty=Decimal(30_000), ord_type="2",
                                 price=Decimal("191.00"))
            say("  OMS sends: buy 30,000 AAPL limit 191.00 for book SMA-CORE")
            stack.oms.send_order(order)
            if not wait_for(lambda: all(b.allocations for b in brokers.values())
                            and len(stack.oms.allocations_for("MULTI-1")) == 2, timeout):
                raise DemoFailed("the two brokers' Js did not both arrive")
            per_broker, ok = {}, True
            for name, sim in brokers.items():
                [child] = sim.orders.values()
                [j] = sim.allocations
                accounts = {str(x["account"]) for x in j.lines}
                right = ({broker_of[a] for a in accounts} == {name}
                         and j.avg_px == PRICES[name] and j.quantity == child.qty)
                ok = ok and right
                per_broker[name] = {"child_qty": str(child.qty), "j_qty": str(j.quantity),
                                    "avg_px": str(j.avg_px), "accounts": len(accounts)}
                say(f"  {name}: child order {child.qty:,}; J {j.alloc_id}: {j.quantity:,} "
                    f"@ {j.avg_px} over {len(accounts)} accounts, all with prime broker "
                    f"{'PB01' if name == 'BRKA' else 'PB02/PB03'}"
                    + ("" if right else " (WRONG)"))
            last = stack.oms.executions["MULTI-1"][-1]
            say(f"  OMS: MULTI-1 {'filled' if last.ord_status == '2' else last.ord_status}, "
                f"{last.cum_qty:,} @ {last.avg_px} over both brokers; "
                f"{len(stack.oms.allocations_for('MULTI-1'))} Js received")
            out.update(brokers=per_broker, oms_cum_qty=str(last.cum_qty),
                       oms_avg_px=str(last.avg_px), oms_status=last.ord_status,
                       oms_js=len(stack.oms.allocations_for("MULTI-1")))
            out["ok"] = ok and last.ord_status == "2" and last.cum_qty == 30_000
        out["daemon_exit"] = stack.daemon.returncode
    finally:
        other.stop()
    out["ok"] = bool(out.get("ok")) and out.get("daemon_exit") == 0
    return out
