"""Two-step rulebook activation in the running daemon: stage, look at the what-if, activate."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.harness import (
    CONFIG,
    Ports,
    gateway_in_process,
    http_get,
    running,
    write_config,
)

pytestmark = pytest.mark.fix

TOKEN = {"Authorization": "Bearer tok-staged"}
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
    return BlotterOrder(cl_ord_id=f"ST-{n}", book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=Decimal(50_000), price=Decimal(190))


def _staged_config(tmp_path: Path, ports: Ports, rules: Path) -> Path:
    cfg = write_config(tmp_path, ports, rules=rules,
                       http_extra='api_token_env = "FIXALLOC_TEST_API_TOKEN"')
    text = cfg.read_text(encoding="utf-8")
    assert text.count("watch = false") == 1
    cfg.write_text(text.replace("watch = false",
                                'watch = false\nrules_activation = "staged"'), encoding="utf-8")
    return cfg


def test_an_edit_is_staged_shown_with_its_whatif_and_activated_by_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    monkeypatch.setenv("FIXALLOC_TEST_API_TOKEN", "tok-staged")
    ports = Ports.free()
    cfg = _staged_config(tmp_path, ports, rules)
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (_broker, gw, oms):
        oms.send_order(_order(1))
        assert oms.wait(lambda: oms.allocation_for("ST-1") is not None, 30)
        first = oms.allocation_for("ST-1")
        assert first is not None
        sma0001 = next(x for x in first.lines if x["account"] == "SMA0001")
        before = http_get(ports.http, "/rulebook")[1]["active"]
        code, shown = http_get(ports.http, "/rulebook/staged")
        assert code == 200 and shown["staged"] is None, shown  # the mode is on, nothing waits

        # The edit is validated and staged; the version in force does not move.
        (rules / "90-test.yaml").write_text(EXCLUDE_SMA0001, encoding="utf-8")
        code, body = http_get(ports.http, "/rulebook/reload", method="POST", headers=TOKEN)
        assert code == 200 and body["active"] == before
        assert "staged" in body["change"] and "added TEST-NO-AAPL-0001" in body["change"]
        assert http_get(ports.http, "/rulebook")[1]["active"] == before
        code, shown = http_get(ports.http, "/rulebook/staged")
        assert code == 200 and shown["activation"] == "staged" and shown["active"] == before
        staged = shown["staged"]["version"]
        assert staged != before and "added TEST-NO-AAPL-0001" in shown["staged"]["change"]
        assert "90-test.yaml" in shown["staged"]["files"]
        assert gw.node is not None and gw.node.db is not None
        db = gw.node.db
        assert db.count("rulebook_versions") == 1  # staged is not in force: no version row
        assert [json.loads(e["detail_json"])["version"]
                for e in db.events("rulebook.staged")] == [staged]

        # The what-if on the block this test allocated: SMA0001 out, its shares to others.
        stored = db.load_allocation(first.alloc_id)
        assert stored is not None
        trade_date = stored["trade_date"]
        code, report = http_get(ports.http, f"/rulebook/staged/whatif?date={trade_date}")
        assert code == 200, report
        totals = report["totals"]
        assert (totals["blocks_compared"], totals["blocks_changed"]) == (1, 1)
        [block] = report["blocks"]
        assert block["alloc_id"] == first.alloc_id and block["stored_rulebook_version"] == before
        lines = {c["account_id"]: c for c in block["accounts"]}
        assert lines["SMA0001"]["change"] == "newly_excluded"
        assert lines["SMA0001"]["rule_id"] == "TEST-NO-AAPL-0001"
        assert (Decimal(lines["SMA0001"]["qty_before"]), lines["SMA0001"]["qty_after"]) == \
            (Decimal(str(sma0001["qty"])), "0")
        assert Decimal(totals["shares_moved_in"]) == Decimal(totals["shares_moved_out"]) == \
            Decimal(str(sma0001["qty"]))
        assert http_get(ports.http, "/rulebook/staged/whatif?date=2026-13-01")[0] == 422

        # Activation needs the token, and names who did it in the stored version row.
        assert http_get(ports.http, "/rulebook/staged/activate", method="POST")[0] == 401
        code, body = http_get(ports.http, "/rulebook/staged/activate", method="POST",
                              headers=TOKEN, body={"actor": "jane", "version": staged})
        assert code == 200 and body["active"] == staged and body["actor"] == "http:jane"
        assert http_get(ports.http, "/rulebook")[1]["active"] == staged
        assert http_get(ports.http, "/rulebook/staged")[1]["staged"] is None
        newest = db.version_rows("rulebook_versions")[-1]
        assert (newest["version"], newest["actor"]) == (staged, "http:jane")

        oms.send_order(_order(2))
        assert oms.wait(lambda: oms.allocation_for("ST-2") is not None, 30)
        second = oms.allocation_for("ST-2")
        assert second is not None
        assert "SMA0001" not in {x["account"] for x in second.lines}
        alloc = db.load_allocation(second.alloc_id)
        assert alloc is not None
        decision = db.load_decision(alloc["decision_id"])
        assert decision is not None and decision["rulebook_version"] == staged

        # Undoing the edit stages the earlier text; discarding it keeps what is in force.
        (rules / "90-test.yaml").unlink()
        assert http_get(ports.http, "/rulebook/reload", method="POST", headers=TOKEN)[0] == 200
        assert http_get(ports.http, "/rulebook/staged")[1]["staged"]["version"] == before
        assert http_get(ports.http, "/rulebook/staged/discard", method="POST")[0] == 401
        code, body = http_get(ports.http, "/rulebook/staged/discard", method="POST",
                              headers=TOKEN, body={"actor": "jane"})
        assert code == 200 and body == {"discarded": before, "active": staged}
        assert http_get(ports.http, "/rulebook/staged")[1]["staged"] is None
        assert http_get(ports.http, "/rulebook/staged/activate", method="POST",
                        headers=TOKEN)[0] == 409
        assert len(db.events("rulebook.staged_discarded")) == 1


def test_a_restart_keeps_the_version_in_force_and_stages_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files hold an unreviewed edit at restart: it stays staged, not in force."""
    rules = tmp_path / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    monkeypatch.setenv("FIXALLOC_TEST_API_TOKEN", "tok-staged")
    ports = Ports.free()
    cfg = _staged_config(tmp_path, ports, rules)
    with gateway_in_process(cfg, ports):
        before = http_get(ports.http, "/rulebook")[1]["active"]
    (rules / "90-test.yaml").write_text(EXCLUDE_SMA0001, encoding="utf-8")
    (rules / "91-broken.yaml").write_text("restrictions:\n  - id: X\n    kind: nope\n",
                                          encoding="utf-8")
    with gateway_in_process(cfg, ports):  # a broken edit waiting: refused, not fatal
        state = http_get(ports.http, "/rulebook")[1]
        assert state["active"] == before and "91-broken.yaml:" in state["last_error"]
        assert http_get(ports.http, "/rulebook/staged")[1]["staged"] is None
    (rules / "91-broken.yaml").unlink()
    with gateway_in_process(cfg, ports) as gw:
        assert http_get(ports.http, "/rulebook")[1]["active"] == before
        staged = http_get(ports.http, "/rulebook/staged")[1]["staged"]
        assert staged is not None and "added TEST-NO-AAPL-0001" in staged["change"]
        assert gw.node is not None and gw.node.db is not None
        assert [r["version"] for r in gw.node.db.version_rows("rulebook_versions")] == [before]
