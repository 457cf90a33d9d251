"""`fixalloc rules whatif` on the demo's real record: a proposed rule's effect, block by block.

Every run goes through the real CLI against the demo's SQLite database, which must come
out byte-for-byte unchanged. The expected redistribution is computed here independently,
by the engine itself on the demo's reference files, not by the module under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import engine
from gateway import refdata
from gateway.errors import EXIT_CONFIG, EXIT_USAGE

pytestmark = pytest.mark.fix

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "rules"


def _fingerprint(state: Path) -> dict[str, str]:
    """The database and its side files, by content: a what-if must not touch any of them."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((state / "gateway").glob("fixalloc.db*"))}


def _whatif(state: Path, rules: Path, *which: str, as_json: bool = True
            ) -> subprocess.CompletedProcess[str]:
    before = _fingerprint(state)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "rules", "whatif", "--rules", str(rules), *which,
         "--state-dir", str(state), *(["--json"] if as_json else [])],
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT)
    assert _fingerprint(state) == before, "the what-if changed the database"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _stored(state: Path, alloc_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The allocation's decision row and document, read without touching the record."""
    db = state / "gateway" / "fixalloc.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT d.* FROM decisions d JOIN allocations a "
                           "ON a.decision_id = d.decision_id WHERE a.alloc_id = ?",
                           (alloc_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None
    text = row["canonical_json"] or zlib.decompress(row["canonical_zlib"]).decode()
    return dict(row), json.loads(text)


def _rules_with(tmp: Path, extra: str) -> Path:
    rules = tmp / "proposed"
    shutil.copytree(RULES, rules)
    if extra:
        (rules / "90-proposed.yaml").write_text(extra, encoding="utf-8")
    return rules


def _exclusion(account: str, symbol: str, rule_id: str = "WHATIF-EXCLUDE") -> str:
    return f"""restrictions:
  - id: {rule_id}
    version: "1"
    description: Client {account} asked to stop buying this name
    kind: exclude
    match: {{symbols: [{symbol}]}}
    scope: {{accounts: [{account}]}}
"""


def _engine_decision(row: dict[str, Any], stored: dict[str, Any], rules: Path
                     ) -> dict[str, Decimal]:
    """The engine's own split of the stored block under `rules`, from the demo's files."""
    config = ROOT / "config"
    accounts = tuple(a for a in refdata.load_accounts(config / "accounts.csv",
                                                      config / "positions.csv")
                     if a.book == "SMA-CORE")
    request = engine.AllocationRequest(
        block_id=stored["block_id"], symbol=stored["symbol"], side=engine.Side(stored["side"]),
        executed_qty=Decimal(stored["executed_qty"]), avg_px=Decimal(stored["avg_px"]),
        trade_date=dt.date.fromisoformat(stored["trade_date"]), accounts=accounts,
        securities=refdata.load_securities(config / "securities.csv"),
        decided_at=dt.datetime.fromisoformat(stored["decided_at"]),
        rotation_offset=int(row["rotation_offset"] or 0))
    assert engine.inputs_hash(request) == stored["inputs_hash"], "not the demo's inputs"
    decision = engine.allocate(request, refdata.load_rulebook(rules))
    return {r.account_id: r.qty for r in decision.results}


def test_excluding_one_account_moves_exactly_its_shares_as_the_engine_would(
    demo_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    state, summary = demo_record
    row, stored = _stored(state, summary["alloc_id"])
    before = {r["account_id"]: Decimal(r["qty"]) for r in stored["results"]}
    account = next(a for a, q in sorted(before.items()) if q > 0)
    rules = _rules_with(tmp_path, _exclusion(account, stored["symbol"]))

    result = _whatif(state, rules, "--alloc", summary["alloc_id"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    totals = report["totals"]
    assert report["proposed_rulebook_version"] == refdata.load_rulebook(rules).version
    assert (totals["blocks_compared"], totals["blocks_changed"],
            totals["blocks_not_comparable"]) == (1, 1, 0)
    [block] = report["blocks"]
    assert block["alloc_id"] == summary["alloc_id"] and block["outcome"] == "changed"
    assert block["stored_rulebook_version"] == stored["rulebook_version"]
    lines = {c["account_id"]: c for c in block["accounts"]}

    # The excluded account: its whole allocation goes, and the rule says why.
    out = lines.pop(account)
    assert (out["change"], out["rule_id"], out["status_after"]) == (
        "newly_excluded", "WHATIF-EXCLUDE", "excluded")
    assert (Decimal(out["qty_before"]), Decimal(out["qty_after"])) == (before[account],
                                                                        Decimal(0))
    assert f"Client {account} asked to stop buying" in out["reason"]

    # Everyone else: exactly the engine's redistribution, and only those who moved listed.
    expected = _engine_decision(row, stored, rules)
    assert expected[account] == 0
    moved = {a for a in before if a != account and expected[a] != before[a]}
    assert set(lines) == moved and moved
    for acct, line in lines.items():
        assert Decimal(line["qty_before"]) == before[acct]
        assert Decimal(line["qty_after"]) == expected[acct]
        assert line["change"] == "quantity_changed" and Decimal(line["delta"]) > 0

    # Shares out = shares in = the excluded account's allocation; the block total holds.
    assert Decimal(totals["shares_moved_out"]) == Decimal(totals["shares_moved_in"]) \
        == before[account]
    assert totals["accounts_changed"] == len(moved) + 1
    assert sum(expected.values()) == sum(before.values())


def test_a_rulebook_that_does_not_touch_the_block_changes_nothing(
    demo_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    state, summary = demo_record
    _, stored = _stored(state, summary["alloc_id"])
    trade_date = stored["trade_date"]

    same = _whatif(state, RULES, "--date", trade_date, as_json=False)
    assert same.returncode == 0, same.stderr
    assert "blocks compared 1, changed 0, unchanged 1" in same.stdout
    assert "shares moved out 0, in 0" in same.stdout

    # A different version (a rule for another symbol) is decided again, and still agrees:
    # rule-version and wording differences alone are not reported as changes.
    other = _rules_with(tmp_path, _exclusion("SMA0001", "NOT-" + stored["symbol"]))
    result = _whatif(state, other, "--from", trade_date, "--to", trade_date)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["proposed_rulebook_version"] != stored["rulebook_version"]
    assert report["totals"] == {
        "blocks_compared": 1, "blocks_changed": 0, "blocks_unchanged": 1,
        "blocks_not_comparable": 0, "blocks_that_would_be_exceptions": 0,
        "accounts_changed": 0, "shares_moved_out": "0", "shares_moved_in": "0"}
    assert report["blocks"] == []


def test_a_broken_rule_file_is_refused_with_file_and_line(
    demo_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    state, summary = demo_record
    rules = _rules_with(tmp_path, "restrictions:\n  - id: X\n    version: \"1\"\n"
                                  "    kind: nope\n")
    result = _whatif(state, rules, "--alloc", summary["alloc_id"])
    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {rules / '90-proposed.yaml'}:2: ")


def test_an_unknown_allocation_is_one_line_and_usage_exit(
    demo_record: tuple[Path, dict[str, Any]]
) -> None:
    state, _ = demo_record
    result = _whatif(state, RULES, "--alloc", "NO-SUCH-J1")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == ["error: no allocation 'NO-SUCH-J1' in the record"]
