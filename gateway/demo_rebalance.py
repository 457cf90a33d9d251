"""`fixalloc demo --scenario rebalance`: the shipped model's rebalance handed to a running
gateway, routed to the broker, and allocated back to the accounts that asked.
`--scenario cross`: the same with a crossing policy and a fresh reference price, so the
opposite interest in one security is crossed between the accounts and only the net goes
to the broker; then two live OMS blocks are crossed inside the gateway
(gateway/demo_livecross.py).

Everything is real and on 127.0.0.1: the daemon, the broker and OMS simulators over FIX,
a trader with an API token, and `fixalloc rebalance --send` run as a user would run it.
The scenario passes only when every block was accepted, every J reached the broker with
exactly the accounts and quantities of the trade list, and the OMS heard nothing of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.demo import CONFIG_DIR, DemoFailed, demo_config
from gateway.demo_livecross import live_cross
from gateway.demo_stack import demo_stack, demo_users
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.common import wait_for
from gateway.ports import free_port

MODEL = "core-growth"
CROSSING = """# Added by `fixalloc demo --scenario cross`.
crossing:
  enabled: true
  description: Cross opposite rebalance interest at the last sale (Rule 17a-7 style)
  price_rule: last
  max_price_age_seconds: 300
  live_window_seconds: 5          # live blocks wait this long for the other side
  excluded_accounts:
    accounts: [SMA0042]           # e.g. an ERISA plan: never crossed
"""


def _expected(blocks: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Decimal]]:
    """(symbol, side) -> account -> quantity, from the rebalance's blocks."""
    return {(b["symbol"], b["side"]): {p["account_id"]: Decimal(p["qty"])
                                      for p in b["preallocations"]} for b in blocks}


def run_cross_demo(*, state: Path, say: Callable[[str], None]) -> dict[str, Any]:
    return run_rebalance_demo(state=state, say=say, cross=True)


def run_rebalance_demo(*, state: Path, say: Callable[[str], None], timeout: float = 90.0,
                       cross: bool = False) -> dict[str, Any]:
    state.mkdir(parents=True, exist_ok=True)
    config_dir = state / "config"
    shutil.copytree(CONFIG_DIR, config_dir, dirs_exist_ok=True)
    extra_args: list[str] = []
    if cross:
        (config_dir / "rules" / "40-crossing.yaml").write_text(CROSSING, encoding="utf-8")
        now = datetime.now(UTC).replace(microsecond=0)
        (state / "prices.csv").write_text(
            "symbol,last,bid,ask,as_of\n"
            f"AAPL,190.25,190.20,190.30,{(now - timedelta(seconds=30)).isoformat()}\n",
            encoding="utf-8")
        extra_args = ["--prices", str(state / "prices.csv"), "--as-of", now.isoformat()]
    oms_port, broker_port, http_port = free_port(), free_port(), free_port()
    cfg = demo_config(state, oms_port=oms_port, broker_port=broker_port, http_port=http_port,
                      config_dir=config_dir)
    say(f"fixalloc demo --scenario {'cross' if cross else 'rebalance'}: state in {state}")
    people = [("tina", "trader")] + ([("fred", "operations")] if cross else [])
    tokens = demo_users(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}", people)
    say("  user tina (role trader) with an API token"
        + (", and fred (operations) for the price feed" if cross else ""))
    out: dict[str, Any] = {"state_dir": str(state), "http_port": http_port}
    with demo_stack(state, cfg, broker_port=broker_port, oms_port=oms_port,
                    http_port=http_port, plan=FillPlan(fills=3, interval_ms=5)) as stack:
        run_dir = state / "rebalance"
        command = [sys.executable, "-m", "gateway", "rebalance", "--config", str(config_dir),
                   "--model", MODEL, "--out", str(run_dir),
                   "--send", f"http://127.0.0.1:{http_port}", "--token-env", "DEMO_TOKEN",
                   *extra_args]
        say(f"  $ fixalloc rebalance --config {config_dir} --model {MODEL} --out {run_dir} "
            f"--send http://127.0.0.1:{http_port} {' '.join(extra_args)}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,  # noqa: S603
                              env={**os.environ, "DEMO_TOKEN": tokens["tina"]}, check=False)
        for line in (done.stdout + done.stderr).splitlines():
            say(f"    {line}")
        if done.returncode != 0:
            raise DemoFailed(f"fixalloc rebalance --send exited {done.returncode}")
        blocks = json.loads((run_dir / "blocks.json").read_text(encoding="utf-8"))
        sent = json.loads((run_dir / "sent.json").read_text(encoding="utf-8"))["orders"]
        expected = _expected(blocks)
        broker, oms = stack.broker, stack.oms
        if not wait_for(lambda: len(broker.allocations) >= len(sent), timeout):
            raise DemoFailed(f"{len(broker.allocations)} of {len(sent)} J reached the broker")
        wrong = []
        for j in broker.allocations:
            got = {str(x["account"]): Decimal(str(x["qty"])) for x in j.lines}
            want = expected.get((j.symbol, j.side))
            if got != want:
                wrong.append(f"{j.symbol} {j.side}: J has {len(got)} accounts, "
                             f"{sum(got.values())} shares; the trade list "
                             f"{len(want or {})}, {sum((want or {}).values())}")
            say(f"  J {j.alloc_id}: {j.side} {j.quantity:,} {j.symbol} @ {j.avg_px} "
                f"over {len(j.lines)} accounts"
                + (" = the trade list" if got == want else " != the trade list"))
        oms_heard = sorted(set(oms.executions) & {o["cl_ord_id"] for o in sent})
        out.update(blocks=len(blocks), orders=len(sent),
                   accounts=len({a for w in expected.values() for a in w}),
                   shares=str(sum((Decimal(b["qty"]) for b in blocks), Decimal(0))),
                   js=len(broker.allocations), mismatched=wrong, oms_heard=oms_heard,
                   rejected=[o for o in sent if o["status"] == "rejected"])
        out["ok"] = (not wrong and not oms_heard and not out["rejected"]
                     and len(broker.allocations) == len(sent))
        if cross:
            out.update(_crossed(run_dir, broker, say))
            out["live"] = live_cross(stack, tokens["fred"], say)
            out["ok"] = out["ok"] and out["crossed_ok"] and out["live"]["live_ok"]
    out["daemon_exit"] = stack.daemon.returncode
    out["ok"] = bool(out.get("ok")) and stack.daemon.returncode == 0
    return out


def _crossed(run_dir: Path, broker: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The cross is on record at the reference price, and the broker saw only the net."""
    crossing = json.loads((run_dir / "crossing.json").read_text(encoding="utf-8"))
    routed = {(o.symbol, o.side): o.qty for o in broker.orders.values()}
    crosses = []
    ok = bool(crossing["crosses"])
    for c in crossing["crosses"]:
        say(f"  crossed {c['qty']} {c['symbol']} at {c['price']} ({c['price_rule']} from "
            f"{c['price_source']}, {c['price_age_seconds']} s old): {len(c['buys'])} buying "
            f"and {len(c['sells'])} selling accounts, no commission")
        sides = {(c["symbol"], s): routed.get((c["symbol"], s), Decimal(0))
                 for s in ("buy", "sell")}
        say(f"  routed to the broker for {c['symbol']}: buy {sides[(c['symbol'], 'buy')]:,}, "
            f"sell {sides[(c['symbol'], 'sell')]:,} (the net)")
        crosses.append({"symbol": c["symbol"], "qty": c["qty"], "price": c["price"],
                        "routed": {s: str(q) for (_sym, s), q in sides.items()}})
        ok = ok and c["price"] == "190.25" and Decimal(c["qty"]) > 0
    blocks = json.loads((run_dir / "blocks.json").read_text(encoding="utf-8"))
    want = {(b["symbol"], b["side"]): Decimal(b["qty"]) for b in blocks}
    ok = ok and routed == want  # exactly the net blocks, nothing crossed went out
    return {"crosses": crosses, "crossed_ok": ok}
