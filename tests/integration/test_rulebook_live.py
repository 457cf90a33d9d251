"""The live rulebook in the running daemon: an edit applies to the next block."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.harness import (
    CONFIG,
    Ports,
    http_get,
    running,
    write_config,
)

pytestmark = pytest.mark.fix

EXCLUDE_SMA0001 = """
restrictions:
  - id: TEST-NO-AAPL-0001
    version: "1"
    description: Client SMA0001 asked to stop buying Apple
    kind: exclude
    match: {symbols: [AAPL]}
    scope: {accounts: [SMA0001]}
"""


def _order(n: int) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=f"RB-{n}", book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=Decimal(50_000), price=Decimal(190))


def test_rule_edit_applies_to_the_next_block_and_bad_edit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new exclusion is live for the next J and stored as a version; a broken file is not."""
    rules = tmp_path / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    monkeypatch.setenv("FIXALLOC_TEST_API_TOKEN", "tok-123")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, rules=rules,
                       http_extra='api_token_env = "FIXALLOC_TEST_API_TOKEN"')
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (_broker, gw, oms):
        oms.send_order(_order(1))
        assert oms.wait(lambda: oms.allocation_for("RB-1") is not None, 30)
        assert "SMA0001" in {x["account"] for x in oms.allocation_for("RB-1").lines}
        before = http_get(ports.http, "/rulebook")[1]["active"]

        (rules / "90-test.yaml").write_text(EXCLUDE_SMA0001, encoding="utf-8")
        assert http_get(ports.http, "/rulebook/reload", method="POST")[0] == 401
        code, body = http_get(ports.http, "/rulebook/reload", method="POST",
                              headers={"Authorization": "Bearer tok-123"})
        assert code == 200 and body["active"] != before
        assert "added TEST-NO-AAPL-0001" in body["change"]
        edited = body["active"]

        oms.send_order(_order(2))
        assert oms.wait(lambda: oms.allocation_for("RB-2") is not None, 30)
        assert "SMA0001" not in {x["account"] for x in oms.allocation_for("RB-2").lines}

        (rules / "91-broken.yaml").write_text("restrictions:\n  - id: X\n    kind: nope\n",
                                              encoding="utf-8")
        code, body = http_get(ports.http, "/rulebook/reload", method="POST",
                              headers={"Authorization": "Bearer tok-123"})
        assert code == 422 and "91-broken.yaml:" in body["detail"]
        state = http_get(ports.http, "/rulebook")[1]
        assert state["active"] == edited  # the previous version stays in force
        assert "91-broken.yaml" in state["last_error"]
        # No waiting: POST /rulebook/reload stores the version (and queues it for the
        # dispatcher) before it answers, and the refused edit stored nothing.
        db = gw.node.db
        assert db.count("rulebook_versions") == 2
        with db.engine.connect() as conn:
            from sqlalchemy import text

            rows = conn.execute(text("SELECT version, actor FROM rulebook_versions")).all()
        assert {(v, a) for v, a in rows} == {(before, "startup"), (edited, "http")}

        # A rollback to the earlier text is a new row: the newest row is the version in force.
        (rules / "90-test.yaml").unlink()
        (rules / "91-broken.yaml").unlink()
        code, body = http_get(ports.http, "/rulebook/reload", method="POST",
                              headers={"Authorization": "Bearer tok-123"})
        assert code == 200 and body["active"] == before
        newest = db.version_rows("rulebook_versions")[-1]
        assert (newest["version"], newest["reactivated"]) == (before, True)
        assert db.count("rulebook_versions") == 3
