"""`fixalloc audit report` on the demo's real record, through the real CLI.

Each format is checked against what the demo itself says it did (its JSON summary): the
allocation's accounts and quantities, its excluded accounts and their reasons, its fills,
the record's chain verification on the first page.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.fix

ROOT = Path(__file__).resolve().parents[2]


def report(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "report",
                           "--state-dir", str(state), *args],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fixalloc audit report: ")
    return lines[0]


@pytest.fixture(scope="module")
def as_json(demo_record: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    state, summary = demo_record
    result = report(state, "--alloc", summary["alloc_id"], "--format", "json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_json_is_the_demo_allocation(demo_record: tuple[Path, dict[str, Any]],
                                     as_json: dict[str, Any]) -> None:
    _state, summary = demo_record
    assert as_json["scope"] == {"kind": "allocation", "alloc_id": summary["alloc_id"],
                                "text": f"allocation {summary['alloc_id']}"}
    [a] = as_json["allocations"]
    assert a["alloc_id"] == summary["alloc_id"]
    assert a["order"]["cl_ord_id"] == summary["cl_ord_id"]
    assert a["order"]["order_id"] == summary["order_id"]
    assert (a["order"]["symbol"], a["order"]["side"], a["order"]["book"],
            a["order"]["broker"]) == ("AAPL", "buy", "SMA-CORE", "BRKA")
    assert a["decision"]["method"] == summary["method"]
    assert a["decision"]["rulebook_version"] == summary["rulebook_version"]
    assert len(a["decision"]["refdata_version"]) == 64
    assert a["accounts"]["evaluated"] == summary["accounts_in_book"]
    assert a["accounts"]["allocated"] == summary["accounts_allocated"] == len(a["lines"])
    total = sum((Decimal(x["qty"]) for x in a["lines"]), Decimal(0))
    assert total == Decimal(summary["total_allocated"]) == Decimal(a["lines_qty_total"])
    assert a["allocation"]["status"] == summary["p_status"]


def test_every_omitted_or_reduced_account_has_its_rationale(
        demo_record: tuple[Path, dict[str, Any]], as_json: dict[str, Any]) -> None:
    _state, summary = demo_record
    [a] = as_json["allocations"]
    by_status: dict[str, list[dict[str, Any]]] = {}
    for x in a["rationale"]:
        by_status.setdefault(x["status"], []).append(x)
    expected: dict[str, int] = {}
    for item in summary["explained"]:
        expected[item["status"]] = expected.get(item["status"], 0) + item["accounts"]
    assert {k: len(v) for k, v in by_status.items()} == expected
    assert len(by_status["excluded"]) == a["accounts"]["excluded"] == 5
    for x in a["rationale"]:
        assert x["rules"] and x["codes"], x
        assert x["reason"].strip() and x["explanation"].strip(), x
    # The reasons are the decision's own: every sentence the demo printed is there.
    reasons = {x["reason"] for x in a["rationale"]}
    assert {item["reason"] for item in summary["explained"]} <= reasons
    # explain adds what the decision does not keep: the share a cap clipped.
    capped = [x for x in a["rationale"] if x["status"] == "capped"]
    assert all("share before caps" in x["explanation"] for x in capped)
    # Every rule cited is listed with its version among the rules applied.
    applied = {(r["rule_id"], r["rule_version"]) for r in a["rules_applied"]}
    assert ("SYS-STATUS", "engine-1") in applied and ("SMA0034-NO-TECH", "1") in applied


def test_fills_messages_approvals_and_affirmation(demo_record: tuple[Path, dict[str, Any]],
                                                  as_json: dict[str, Any]) -> None:
    _state, summary = demo_record
    [a] = as_json["allocations"]
    fills = [f for f in a["fills"]["fills"] if f["kind"] == "fill"]
    assert len(fills) == a["fills"]["count"] == summary["fills"]
    assert sum(Decimal(f["qty"]) for f in fills) == Decimal(summary["filled_qty"])
    assert all(f["exec_id"] and Decimal(f["px"]) > 0 and f["received_at"] for f in fills)
    kinds: dict[tuple[str, str], int] = {}
    for m in a["messages"]:
        kinds[(m["msg_type"], m["direction"])] = kinds.get((m["msg_type"], m["direction"]), 0) + 1
    assert kinds[("D", "in")] == 1 and kinds[("D", "out")] == 1
    assert kinds[("8", "in")] >= summary["fills"]
    assert kinds[("J", "out")] == 2  # to the broker and the OMS's copy
    assert kinds[("P", "in")] >= 1
    assert kinds[("AK", "in")] == kinds[("AU", "out")] == a["affirmation"]["confirmations"]
    times = [m["recorded_at"] for m in a["messages"]]
    assert times == sorted(times)
    first = a["messages"][0]
    assert (first["msg_type"], first["ref_id"]) == ("D", summary["cl_ord_id"])
    assert a["approvals"] == {"records": [], "note": "no approvals recorded (no approval "
                                                    "policy held this allocation)"}
    af = a["affirmation"]
    assert af["lines"] == summary["accounts_allocated"]
    assert af["affirmed"] + len(af["not_affirmed"]) == af["lines"]
    assert sum(af["by_state"].values()) == af["lines"]


def test_first_page_facts_verification_scope_database(demo_record: tuple[Path, dict[str, Any]],
                                                      as_json: dict[str, Any]) -> None:
    state, _summary = demo_record
    v = as_json["verification"]
    assert v["ok"] is True and v["breaks"] == 0 and v["first_break"] is None
    assert v["entries"] > 0 and v["rows"] > 0 and len(v["head_hash"]) == 64
    assert v["summary"].startswith("audit chain intact")
    assert v["checkpoint"] is None
    assert as_json["database"] == str(state / "gateway" / "fixalloc.db")
    assert as_json["generated_at"].endswith("+00:00")


def test_html_has_the_allocation_and_the_verification(
        demo_record: tuple[Path, dict[str, Any]], as_json: dict[str, Any]) -> None:
    state, summary = demo_record
    result = report(state, "--alloc", summary["alloc_id"], "--format", "html")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("<!DOCTYPE html>")
    assert f'id="{summary["alloc_id"]}"' in page
    assert '<section id="verification" class="box ok">' in page
    assert "<strong>VERIFIED</strong>" in page
    assert as_json["verification"]["head_hash"] in page
    for x in as_json["allocations"][0]["rationale"]:
        assert f"<td>{x['account_id']}</td>" in page
    assert "no approvals recorded (no approval policy held this allocation)." in page
    # Autoescaped: a reason's quotes never become markup.
    assert "custom rule &#34;order.side" in page or "custom rule &quot;order.side" in page


def test_csv_one_row_per_line_then_one_per_account_without_one(
        demo_record: tuple[Path, dict[str, Any]], as_json: dict[str, Any]) -> None:
    state, summary = demo_record
    result = report(state, "--alloc", summary["alloc_id"], "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    a = as_json["allocations"][0]
    lines = [r for r in rows if r["individual_alloc_id"]]
    others = [r for r in rows if not r["individual_alloc_id"]]
    # Every account evaluated once: the lines, plus the excluded accounts (no line).
    assert len(lines) == summary["accounts_allocated"]
    assert len(rows) == summary["accounts_in_book"] == a["accounts"]["evaluated"]
    assert {r["status"] for r in others} == {"excluded"}
    assert len(others) == a["accounts"]["excluded"]
    assert all(r["reason"] and r["rules"] and r["qty"] == "0" for r in others)
    assert sum(Decimal(r["qty"]) for r in rows) == Decimal(summary["total_allocated"])
    assert {r["alloc_id"] for r in rows} == {summary["alloc_id"]}
    assert all(r["ticket_state"] for r in lines)
    capped = [r for r in lines if r["status"] == "capped"]
    assert len(capped) == a["accounts"]["capped"] and all(r["reason"] for r in capped)


def test_pdf_renders_and_carries_the_id_and_the_verification(
        demo_record: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    pdfium = pytest.importorskip("pypdfium2")
    state, summary = demo_record
    out = tmp_path / "x.pdf"
    result = report(state, "--alloc", summary["alloc_id"], "--format", "pdf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_bytes().startswith(b"%PDF")
    pdf = pdfium.PdfDocument(str(out))
    try:
        assert len(pdf) >= 2
        page = pdf[0]
        width, height = page.get_size()
        assert (round(width), round(height)) == (842, 595)  # A4 landscape, in points
        image = page.render(scale=1).to_pil().convert("L")
        assert image.size[0] >= 800 and image.size[1] >= 560
        inked = sum(image.histogram()[:200])
        assert inked / (image.size[0] * image.size[1]) > 0.01
        text = page.get_textpage().get_text_range()
        assert f"allocation {summary['alloc_id']}" in text
        assert "Record verification" in text
        assert "VERIFIED: audit chain intact (whole chain)" in text
        second = pdf[1].get_textpage().get_text_range()
        assert f"Allocation {summary['alloc_id']}" in second
        assert "SMA0034-NO-TECH" in second
    finally:
        pdf.close()


def test_date_and_range_include_the_demo_allocation(
        demo_record: tuple[Path, dict[str, Any]], as_json: dict[str, Any]) -> None:
    state, summary = demo_record
    day = as_json["allocations"][0]["allocation"]["trade_date"]
    by_day = report(state, "--date", day, "--format", "json")
    assert by_day.returncode == 0, by_day.stderr
    doc = json.loads(by_day.stdout)
    assert doc["scope"]["kind"] == "date" and doc["scope"]["date"] == day
    assert summary["alloc_id"] in [a["alloc_id"] for a in doc["allocations"]]
    assert doc["fairness"] is None
    ranged = report(state, "--from", day, "--to", day, "--format", "html")
    assert ranged.returncode == 0, ranged.stderr
    assert f'id="{summary["alloc_id"]}"' in ranged.stdout
    assert '<section id="fairness">' in ranged.stdout and "<svg" in ranged.stdout


def test_a_tampered_record_is_reported_broken_on_the_first_page(
        demo_copy: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_copy
    line = f"{summary['alloc_id']}-00001"
    with sqlite3.connect(state / "gateway" / "fixalloc.db") as conn:
        conn.execute("UPDATE allocation_lines SET qty = '999999' WHERE individual_alloc_id = ?",
                     (line,))
    result = report(state, "--alloc", summary["alloc_id"], "--format", "json")
    assert result.returncode == 0
    v = json.loads(result.stdout)["verification"]
    assert v["ok"] is False
    assert (v["first_break"]["table"], v["first_break"]["key"]) == ("allocation_lines", line)
    assert "audit chain BROKEN" in one_line_error(result)


def test_the_latest_checkpoint_is_on_the_first_page(
        demo_copy: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_copy
    done = subprocess.run([sys.executable, "-m", "gateway", "audit", "checkpoint",
                           "--state-dir", str(state)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    result = report(state, "--alloc", summary["alloc_id"], "--format", "json")
    v = json.loads(result.stdout)["verification"]
    assert v["checkpoint"]["seq"] == v["head_seq"]
    assert v["checkpoint"]["head_hash"] == v["head_hash"]


def test_unknown_allocation_exits_1_with_one_line(
        demo_record: tuple[Path, dict[str, Any]]) -> None:
    state, _summary = demo_record
    result = report(state, "--alloc", "NO-SUCH-J1", "--format", "json")
    assert result.returncode == 1
    assert "no allocation with AllocID 'NO-SUCH-J1'" in one_line_error(result)
    assert result.stdout == ""


def test_pdf_without_out_exits_2(demo_record: tuple[Path, dict[str, Any]]) -> None:
    state, summary = demo_record
    result = report(state, "--alloc", summary["alloc_id"], "--format", "pdf")
    assert result.returncode == 2
    assert "--format pdf writes a binary file: give --out FILE" in one_line_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--date", "2026-02-30"], 2, "--date '2026-02-30' is not a date (YYYY-MM-DD)"),
    (["--from", "2026-03-02", "--to", "2026-03-01"], 2, "--from 2026-03-02 is after --to"),
    (["--from", "2026-03-02"], 2, "--from needs --to"),
    (["--date", "1999-01-04"], 1, "no allocation in the record for allocations with trade "
                                  "date 1999-01-04"),
])
def test_bad_scope_is_one_precise_line(demo_record: tuple[Path, dict[str, Any]],
                                       args: list[str], code: int, message: str) -> None:
    state, _summary = demo_record
    result = report(state, *args, "--format", "csv")
    assert result.returncode == code
    assert message in one_line_error(result)


def test_missing_state_dir_is_a_config_error(tmp_path: Path) -> None:
    result = report(tmp_path / "nowhere", "--date", "2026-03-02", "--format", "csv")
    assert result.returncode == 78
    assert "no gateway database at" in one_line_error(result)
