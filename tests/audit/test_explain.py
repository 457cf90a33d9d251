"""`fixalloc audit explain` and GET /allocations/{id}/explain on a real demo's record.

The golden files tests/audit/golden/explain_demo.txt and .json hold the explanation of the
demo's block for one excluded (SMA0034), one capped (SMA0042) and two ordinary accounts
(SMA0001, SMA0147), with the values that change from run to run (AllocID, order id,
decision id, inputs hash, decision time, trade date) replaced by placeholders.

To regenerate them after an intended change of wording or of the demo's config:

    FIXALLOC_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/audit/test_explain.py

then read the diff before keeping it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE
from gateway.http import HttpServer, build_app
from gateway.persistence.store import Database
from tests.support.harness import http_get

pytestmark = pytest.mark.fix

GOLDEN = Path(__file__).parent / "golden"
NAMED = ["SMA0034", "SMA0042", "SMA0001", "SMA0147"]  # excluded, capped, two ordinary
UPDATE = os.environ.get("FIXALLOC_UPDATE_GOLDEN") == "1"

Record = tuple[Path, dict[str, Any]]


def explain(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "explain", *args,
                           "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=120, check=False)


def normalise(text: str, header: dict[str, Any]) -> str:
    """Replace the values that differ between two demo runs with named placeholders."""
    volatile = {key: header[key] for key in ("decided_at", "alloc_id", "order_id",
                                             "decision_id", "inputs_hash", "trade_date")}
    for key, value in sorted(volatile.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<{key.upper()}>")
    return text


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs (FIXALLOC_UPDATE_GOLDEN=1 to regenerate)"


@pytest.fixture(scope="module")
def named_json(demo_record: Record) -> dict[str, Any]:
    state, summary = demo_record
    result = explain(state, summary["alloc_id"], "--accounts", ",".join(NAMED), "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_cli_text_matches_golden(demo_record: Record, named_json: dict[str, Any]) -> None:
    state, summary = demo_record
    result = explain(state, summary["alloc_id"], "--accounts", ",".join(NAMED))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_golden("explain_demo.txt", normalise(result.stdout, named_json["allocation"]))


def test_cli_json_matches_golden(named_json: dict[str, Any]) -> None:
    text = json.dumps(named_json, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    check_golden("explain_demo.json", normalise(text, named_json["allocation"]))


def test_json_quantities_agree_with_the_allocation_lines(
        demo_record: Record, named_json: dict[str, Any]) -> None:
    state, summary = demo_record
    db = Database(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}")
    try:
        lines = {ln["account_id"]: Decimal(ln["qty"])
                 for ln in db.load_allocation_lines(summary["alloc_id"])}
        alloc = db.load_allocation(summary["alloc_id"])
    finally:
        db.dispose()
    assert alloc is not None
    accounts = {a["account_id"]: a for a in named_json["accounts"]}
    assert list(accounts) == NAMED
    for aid, a in accounts.items():
        assert Decimal(a["final_qty"]) == lines.get(aid, Decimal(0)), aid
        assert (a["line_qty"] is None) == (aid not in lines)
    assert accounts["SMA0034"]["status"] == "excluded"
    assert accounts["SMA0034"]["line_qty"] is None
    assert any(r["rule_id"] == "SMA0034-NO-TECH" and r["outcome"] == "excluded"
               for r in accounts["SMA0034"]["rules"])
    capped = accounts["SMA0042"]
    assert capped["status"] == "capped" and capped["arithmetic"]["clipped"]
    assert capped["arithmetic"]["cap_rule"] == "SMA0042-ISSUER-3"
    # The cap (whole shares) rounded down to the lot size is the final quantity.
    lot = named_json["allocation"]["lot_size"]
    cap = int(Decimal(capped["arithmetic"]["cap"]))
    assert Decimal(capped["final_qty"]) == cap - cap % lot
    # Every account's final quantity, by status group, adds up to the allocated quantity,
    # and the allocated quantity is what the J carried.
    total = sum(Decimal(g["qty"]) for g in named_json["groups"])
    assert total == Decimal(named_json["allocation"]["allocated_qty"]) == Decimal(
        alloc["quantity"]) == sum(lines.values())
    assert named_json["allocation"]["inputs_verified"] is True
    # Pro rata: weight / total weight x executed quantity, exactly as the text says.
    ordinary = accounts["SMA0001"]["arithmetic"]
    share = (Decimal(ordinary["weight"]) / Decimal(ordinary["total_weight"])
             * Decimal(named_json["allocation"]["executed_qty"])).quantize(Decimal("0.01"))
    assert Decimal(ordinary["share"]) == share
    assert len(named_json["comparison"]) == 6  # every pair of the four named accounts


def test_summary_lists_every_account_not_allocated_in_full(demo_record: Record) -> None:
    state, summary = demo_record
    result = explain(state, summary["alloc_id"], "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["named"] is False
    listed = {a["account_id"]: a["status"] for a in body["accounts"]}
    groups = {g["status"]: g["accounts"] for g in body["groups"]}
    assert all(s != "allocated" for s in listed.values())
    assert len(listed) == sum(n for s, n in groups.items() if s != "allocated")
    assert listed["SMA0034"] == "excluded" and listed["SMA0042"] == "capped"
    text = explain(state, summary["alloc_id"]).stdout
    assert "SMA0042 capped, 2,600 shares: SMA0042-ISSUER-3 (version 1)" in text


def test_unknown_allocation_and_account_exit_1_with_one_line(demo_record: Record) -> None:
    state, summary = demo_record
    result = explain(state, "NO-SUCH-ALLOC")
    assert result.returncode == EXIT_FAILURE and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no allocation 'NO-SUCH-ALLOC'" in result.stderr
    result = explain(state, summary["alloc_id"], "--accounts", "SMA0001,ACC-999")
    assert result.returncode == EXIT_FAILURE and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"allocation {summary['alloc_id']} has no account ACC-999" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_record_exits_config(tmp_path: Path) -> None:
    result = explain(tmp_path / "nothing-here", "X-J1")
    assert result.returncode == EXIT_CONFIG
    assert "no gateway database" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def server(demo_record: Record) -> Iterator[int]:
    state, _summary = demo_record
    db = Database(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}", pool_size=2)
    app = build_app(status=lambda **_kw: {}, ready=lambda: (True, []), db=db)
    http = HttpServer(app, "127.0.0.1", 0)
    http.start()
    try:
        yield http.port
    finally:
        http.stop()
        db.dispose()


def test_http_explain_matches_the_cli(server: int, demo_record: Record,
                                      named_json: dict[str, Any]) -> None:
    _state, summary = demo_record
    alloc_id = summary["alloc_id"]
    code, body = http_get(server, f"/allocations/{alloc_id}/explain?accounts={','.join(NAMED)}")
    assert code == 200
    assert body == named_json  # the same structure and sentences as `audit explain --json`
    code, body = http_get(server, f"/allocations/{alloc_id}/explain")
    assert code == 200 and body["named"] is False and body["sentences"]


def test_http_unknown_allocation_and_account_are_404_with_a_body(
        server: int, demo_record: Record) -> None:
    _state, summary = demo_record
    code, body = http_get(server, "/allocations/NO-SUCH/explain")
    assert code == 404
    assert body["missing_kind"] == "allocation" and body["missing"] == ["NO-SUCH"]
    assert "no allocation 'NO-SUCH'" in body["detail"]
    code, body = http_get(server, f"/allocations/{summary['alloc_id']}/explain"
                                  "?accounts=SMA0001,ACC-999")
    assert code == 404
    assert body["missing_kind"] == "account" and body["missing"] == ["ACC-999"]
    code, body = http_get(server, f"/allocations/{summary['alloc_id']}/explain?accounts=,")
    assert code == 422 and "no account" in body["detail"]
