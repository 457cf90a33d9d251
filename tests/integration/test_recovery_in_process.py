"""Recovery after a crash of the dispatcher at each step, in one process.

test_crash_points.py kills the whole daemon (SIGKILL) at each step; this file stops the
dispatcher thread at the same steps inside the test process, then starts a new node on
the same database and stores. What the new node must do is the same: one J as New per
session, no relay twice, every fill once, the P recorded. Being in-process, these runs
are fast and are seen by the mutation tool's per-test coverage (scripts/dev.sh mutants),
which cannot see into a daemon subprocess.

The crash is a BaseException raised at the step: the dispatcher's `except Exception`
does not catch it, so its thread ends there with the state exactly as the step left it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from gateway import faults
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.node import Node
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    OMS_KEY,
    Ports,
    broker_sim,
    oms_sim,
    write_config,
)

pytestmark = [
    pytest.mark.fix,
    # The dispatcher thread ending on DispatcherCrash is the point of these tests.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]

FILLS = 5
QTY = Decimal(50_000)


class DispatcherCrash(BaseException):
    """Ends the dispatcher thread at a fault step, as a kill would end the process."""


@contextmanager
def crash_at(monkeypatch: pytest.MonkeyPatch, step: str, nth: int = 1) -> Iterator[None]:
    seen = [0]

    def point(name: str) -> None:
        if name == step:
            seen[0] += 1
            if seen[0] == nth:
                raise DispatcherCrash(step)

    monkeypatch.setattr(faults, "point", point)
    try:
        yield
    finally:
        monkeypatch.undo()


def _node(cfg: Path) -> Node:
    from gateway.config import load_config

    node = Node(load_config(cfg))
    node.start()
    return node


@pytest.mark.parametrize(("step", "nth"), [
    ("decision_stored", 1), ("broker_j_sent", 1), ("broker_j_recorded", 1),
    ("oms_j_sent", 1), ("ack_received", 1), ("relay_sent", 3),
])
def test_dispatcher_stopped_at_a_step_then_a_new_node_finishes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, nth: int
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    order = BlotterOrder(cl_ord_id="RIP-1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=QTY, price=Decimal("190.50"))
    with broker_sim(tmp_path, ports, FillPlan(fills=FILLS, interval_ms=20)) as broker, \
            oms_sim(tmp_path, ports) as oms:
        with crash_at(monkeypatch, step, nth):
            first = _node(cfg)
            try:
                eventually(oms.engine.is_logged_on, timeout=30)
                oms.send_order(order)
                assert first.dispatcher is not None
                thread = first.dispatcher._thread
                assert thread is not None
                eventually(lambda: not thread.is_alive(), timeout=30,
                           description=f"the dispatcher stopped at {step}")
            finally:
                first.stop()
        second = _node(cfg)
        try:
            assert second.db is not None
            db = second.db
            eventually(lambda: [a for a in db.load_allocations() if a["status"] == "accepted"],
                       timeout=60, description=f"accepted after a stop at {step}")
            eventually(lambda: oms.allocation_for(order.cl_ord_id), timeout=30)
            fills = [r for r in db.load_reports() if r["exec_type"] == "F"]
            assert len(fills) == FILLS == len({r["exec_id"] for r in fills})
            for key in (BROKER_KEY, OMS_KEY):
                new_j = {m["seq_num"] for m in db.wire_messages(session_id=key, direction="out",
                                                                msg_type="J")
                         if b"\x0171=0\x01" in m["raw"]}
                assert len(new_j) == 1, f"{key}: {len(new_j)} J as New"
        finally:
            second.stop()
    assert len(broker.allocations) == 1
    relays = Counter(e.exec_id for e in oms.executions[order.cl_ord_id])
    assert all(n == 1 for n in relays.values()), f"relayed twice: {relays}"
    assert sum(e.last_qty for e in oms.executions[order.cl_ord_id] if e.exec_type == "F") == QTY
