"""Stored sweep reports as a table, JSON and CSV, and `fixalloc sweep report` on a database."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.persistence.store import Database
from gateway.posttrade.sweep import store
from gateway.posttrade.sweep_report import CSV_COLUMNS, headline, render, stored
from tests.unit.posttrade.sweep_rows import DAY, Blotter, ny, sweep


def _fill(db: Database) -> None:
    b = Blotter(db)
    b.order("O-1")
    one, _two = b.allocation("O-1", acked="16:11")
    b.affirm(one)
    b.order("O-2", broker="BRKB", status="partially_filled", cum="10")
    for checkpoint in ("16:30", "21:00"):
        now = ny(checkpoint)
        store(db, sweep(db, checkpoint, now=now), DAY, checkpoint, now)


def _rows(db: Database) -> list[dict[str, object]]:
    return [stored(r) for r in db.sweep_reports("2026-11-20")]


def test_the_table_shows_figures_items_sessions_records_and_the_cutoff_list(
        db: Database) -> None:
    """One block of text per report: figures per scope, open items, recordkeeping, tickets."""
    _fill(db)
    text = render(_rows(db), "table")
    first, second = text.split("\n\n\nSweep")  # one block per report, in checkpoint order
    assert first.startswith("Sweep 2026-11-20 16:30 America/New_York (report 1, ran "
                            "2026-11-20T21:30:00+00:00, run 1)")
    assert "past close yes; past allocation deadline no; past affirmation cutoff no" in first
    assert "Unaffirmed tickets" not in first
    lines = second.splitlines()
    header = next(x for x in lines if x.startswith("scope"))
    assert header.split() == ["scope", "name", "blocks", "allocated", "accepted", "tickets",
                              "confirmed", "affirmed", "booked_elsewhere"]
    total = next(x for x in lines if x.startswith("total"))
    assert total.split() == ["total", "2", "1/1", "(100.0%)", "1/1", "(100.0%)", "2", "1",
                             "1/2", "(50.0%)", "0"]
    assert any(x.split()[:2] == ["account", "SMA0002"] for x in lines)
    assert "Open items: 2" in second and "[order_open_after_close] broker BRKB order O-2" in second
    assert "Sessions not logged on: none" in second
    assert "Recordkeeping: ok  J 1/1  P 1/1  AK 0/0  AU 0/0" in second
    assert "Unaffirmed tickets: 1" in second and "A-O-1-2" in second


def test_json_is_the_stored_reports_as_they_are(db: Database) -> None:
    """JSON keeps every field; a single run prints one object, a date a list."""
    _fill(db)
    rows = _rows(db)
    parsed = json.loads(render(rows, "json"))
    assert [r["checkpoint"] for r in parsed] == ["16:30", "21:00"]
    assert parsed[1]["report"]["totals"]["affirmed_pct"] == "50.0"
    assert json.loads(render(rows[:1], "json", single=True))["id"] == rows[0]["id"]
    assert headline(parsed[1]["report"])["open_items"] == 2


def test_csv_has_one_row_per_figure_scope_item_and_unaffirmed_ticket(db: Database) -> None:
    """Spreadsheet-ready: a `record` column says which kind of row each one is."""
    _fill(db)
    reader = csv.DictReader(io.StringIO(render(_rows(db)[1:], "csv")))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    figures = [(r["scope"], r["name"]) for r in rows if r["record"] == "figures"]
    assert figures == [("total", ""), ("broker", "BRKA"), ("broker", "BRKB"),
                       ("custodian", "CUST-A"), ("custodian", "CUST-B"),
                       ("account", "SMA0001"), ("account", "SMA0002")]
    total = rows[0]
    assert (total["tickets"], total["affirmed"], total["affirmed_pct"]) == ("2", "1", "50.0")
    items = [r for r in rows if r["record"] == "open_item"]
    assert [r["kind"] for r in items] == ["order_open_after_close", "missing_ak"]
    [ticket] = [r for r in rows if r["record"] == "unaffirmed_ticket"]
    assert ticket["individual_alloc_id"] == "A-O-1-2" and "NDO" in ticket["next_step"]


def test_render_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        render([], "xml")


# -- fixalloc sweep report --------------------------------------------------------------------


def _config(tmp_path: Path, database_url: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "gw.toml"
    url = f'database_url = "{database_url}"' if database_url else ""
    path.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n{url}\n', encoding="utf-8")
    return path


def test_sweep_report_prints_the_stored_reports_of_a_date(
        any_db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fixalloc sweep report DATE` reads the database, no daemon, in each format."""
    _fill(any_db)
    config = str(_config(tmp_path, any_db.url))
    assert main(["sweep", "report", "2026-11-20", "--config", config]) == 0
    out = capsys.readouterr().out
    assert out.count("Sweep 2026-11-20") == 2
    assert main(["sweep", "report", "2026-11-20", "--config", config, "--format", "json",
                 "--checkpoint", "21:00"]) == 0
    [only] = json.loads(capsys.readouterr().out)
    assert only["checkpoint"] == "21:00" and only["report"]["past_affirmation_cutoff"]
    assert main(["sweep", "report", "2026-11-20", "--config", config, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith(",".join(CSV_COLUMNS))


def test_sweep_report_says_precisely_what_is_wrong(
        db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input exits 2; a missing database or report exits 1; each with a reason."""
    config = str(_config(tmp_path, db.url))
    cases = [
        (["2026-11-31"], 2, "invalid date '2026-11-31': expected YYYY-MM-DD"),
        (["2026-11-20", "--checkpoint", "7pm"], 2, "invalid time '7pm'"),
        (["2026-11-20"], 1, "no sweep report for 2026-11-20 in "),
        (["2026-11-20", "--checkpoint", "19:00"], 1, "no sweep report for 2026-11-20 at 19:00"),
    ]
    for args, code, message in cases:
        assert main(["sweep", "report", *args, "--config", config]) == code
        assert message in capsys.readouterr().err
    missing = str(_config(tmp_path / "elsewhere"))
    assert main(["sweep", "report", "2026-11-20", "--config", missing]) == 1
    assert "no database at " in capsys.readouterr().err
    assert main(["sweep", "report", "2026-11-20", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["sweep", "report", "2026-11-20", "--config", config, "--format", "xml"])
    assert exited.value.code == 2


def test_stored_rows_carry_the_run_count(db: Database) -> None:
    """A checkpoint run again replaces its report and counts the runs."""
    _fill(db)
    now = ny("21:00") + timedelta(minutes=3)
    store(db, sweep(db, "21:00", now=now), DAY, "21:00", now)
    row = _rows(db)[1]
    assert row["runs"] == 2 and row["ran_at"] == now.isoformat()
