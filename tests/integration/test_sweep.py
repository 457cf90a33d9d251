"""The sweep over real HTTP: GET /sweep, /sweep/{id}, POST /sweep/run, and `fixalloc sweep run`.

uvicorn serves the gateway's FastAPI app on 127.0.0.1; the `run_sweep` callable plays the
dispatcher's part (run, act on the exceptions, store) on a real database, at a frozen time.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.cli import main
from gateway.http import HttpServer, build_app
from gateway.persistence.store import Database
from gateway.ports import free_port
from gateway.posttrade.sweep import SweepSettings, apply_exception_actions, run_sweep, store
from tests.support.clock import FakeClock
from tests.unit.posttrade.sweep_rows import SESSIONS_UP, Blotter, ny

# The day's orders, decisions and allocations are crafted rows (sweep_rows.Blotter, rulebook
# "rb1"): nothing the engine decided, so nothing for the after-test replay.
pytestmark = pytest.mark.no_replay("the sweep's rows are crafted by sweep_rows.Blotter")

TOKEN = "sweep-token-123"
TOKEN_ENV = "FIXALLOC_TEST_SWEEP_TOKEN"


@dataclass
class Api:
    port: int
    db: Database
    clock: FakeClock
    config: Path
    runs: list[tuple[str, date]]

    def call(self, path: str, *, method: str = "GET", body: Any = None,
             token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
                ctype = resp.headers.get("content-type", "")
                return resp.status, json.loads(raw) if "json" in ctype else raw.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def _serve(tmp_path: Path, database_url: str,
           runner: Callable[[Database, FakeClock, list[tuple[str, date]]],
                            Callable[[str, date], dict[str, Any]] | None]) -> Iterator[Api]:
    db = Database(database_url, sqlite_synchronous="OFF")
    db.migrate()
    clock = FakeClock(ny("19:05"))
    runs: list[tuple[str, date]] = []
    app = build_app(status=lambda: {}, ready=lambda: (True, []), db=db, api_token=TOKEN,
                    run_sweep=runner(db, clock, runs), clock=clock)
    port = free_port()
    server = HttpServer(app, "127.0.0.1", port)
    server.start()
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'database_url = "{database_url}"\n[http]\nport = {port}\n'
                      f'api_token_env = "{TOKEN_ENV}"\n', encoding="utf-8")
    try:
        yield Api(port, db, clock, config, runs)
    finally:
        server.stop()
        db.dispose()


def _dispatcher_like(db: Database, clock: FakeClock, runs: list[tuple[str, date]]
                     ) -> Callable[[str, date], dict[str, Any]]:
    def run(checkpoint: str, trade_date: date) -> dict[str, Any]:
        runs.append((checkpoint, trade_date))
        now = clock.now()
        result = run_sweep(db, trade_date=trade_date, checkpoint=checkpoint, now=now,
                           settings=SweepSettings(), sessions=SESSIONS_UP)
        apply_exception_actions(db, result.actions, now)
        store(db, result, trade_date, checkpoint, now)
        return result.report
    return run


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    yield from _serve(tmp_path, database_url, _dispatcher_like)


def _day(db: Database) -> None:
    b = Blotter(db)
    b.order("O-1")
    one, _two = b.allocation("O-1", acked="16:11")
    b.affirm(one)
    b.order("O-2", status="partially_filled", cum="100")


def test_sweep_routes_run_list_and_show_reports(api: Api) -> None:
    """POST runs a checkpoint through the callable and returns the stored report; GETs read."""
    _day(api.db)
    assert api.call("/sweep") == (200, {"trade_date": None, "reports": []})
    code, body = api.call("/sweep/run", method="POST", body={"at": "19:00"}, token=None)
    assert (code, body) == (401, {"detail": "a valid bearer token is required"})
    code, ran = api.call("/sweep/run", method="POST",
                         body={"at": "19:00", "date": "2026-11-20"})
    assert code == 200, ran
    assert (ran["trade_date"], ran["checkpoint"], ran["runs"]) == ("2026-11-20", "19:00", 1)
    assert ran["report"]["totals"]["affirmed_pct"] == "50.0"
    assert ran["report"]["past_allocation_deadline"] is True
    code, now_run = api.call("/sweep/run", method="POST")  # no body: New York time now
    assert code == 200 and now_run["checkpoint"] == "19:05"
    assert api.runs == [("19:00", date(2026, 11, 20)), ("19:05", date(2026, 11, 20))]
    code, listed = api.call("/sweep?date=2026-11-20")
    assert code == 200 and [r["checkpoint"] for r in listed["reports"]] == ["19:00", "19:05"]
    assert listed["reports"][0]["headline"] == {
        "blocks": 2, "blocks_done": 1, "allocated_pct": "100.0", "accepted_pct": "100.0",
        "tickets": 2, "affirmed": 1, "affirmed_pct": "50.0", "open_items": 2,
        "sessions_not_logged_on": [], "recordkeeping_ok": True}
    assert api.call("/sweep")[1] == listed  # the latest trade date by default
    assert api.call("/sweep?date=2026-11-19") == (200, {"trade_date": "2026-11-19",
                                                         "reports": []})
    code, full = api.call(f"/sweep/{ran['id']}")
    assert code == 200 and full["report"]["open_items"] == ran["report"]["open_items"]
    assert api.call("/sweep/999") == (404, {"detail": "no sweep report 999"})
    code, text = api.call("/metrics")
    assert "fixalloc_affirmed_same_day_ratio 0.5" in text
    assert 'fixalloc_open_exceptions{kind="order_open_after_close"} 1.0' in text
    assert "fixalloc_time_to_affirmation_seconds_bucket" in text


def test_sweep_routes_refuse_bad_input_precisely(api: Api) -> None:
    """Bad times and dates, future and holiday dates, unknown fields: 422 with the reason."""
    for body, detail in (
            ({"at": "7pm"}, "invalid time '7pm': expected HH:MM, 24-hour New York time"),
            ({"date": "2026-02-30"}, "invalid date '2026-02-30': expected YYYY-MM-DD"),
            ({"date": "2026-11-23"}, "trade date 2026-11-23 is in the future (today is "
                                     "2026-11-20 in New York)"),
            ({"date": "2026-11-14"}, "2026-11-14 is not an XNYS trading day: there is "
                                     "nothing to sweep")):
        assert api.call("/sweep/run", method="POST", body=body) == (422, {"detail": detail})
    code, _ = api.call("/sweep/run", method="POST", body={"at": "19:00", "when": "now"})
    assert code == 422
    assert api.call("/sweep?date=20261120")[0] == 422
    assert api.runs == []


def test_a_sweep_the_dispatcher_does_not_answer_is_a_503(tmp_path: Path) -> None:
    """A timeout waiting for the dispatcher, or a gateway without the sweep, answers 503."""
    def slow(*_: Any) -> Callable[[str, date], dict[str, Any]]:
        def run(_checkpoint: str, _day: date) -> dict[str, Any]:
            raise TimeoutError("no answer within 60 s")
        return run

    url = f"sqlite:///{tmp_path / 'a.db'}"
    for api in _serve(tmp_path, url, slow):
        assert api.call("/sweep/run", method="POST", body={"at": "19:00"}) == (
            503, {"detail": "the dispatcher did not run the sweep in time: no answer within 60 s"})
    for api in _serve(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", lambda *_: None):
        assert api.call("/sweep/run", method="POST") == (
            503, {"detail": "the sweep does not run on this gateway"})


def test_the_cli_runs_the_sweep_on_the_daemon_and_prints_the_report(
        api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`fixalloc sweep run` posts to the daemon with its token; 0, 1 and 2 say what happened."""
    _day(api.db)
    config = str(api.config)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["sweep", "run", "--config", config, "--at", "21:00"]) == 2
    assert f"the API token variable {TOKEN_ENV} (http.api_token_env) is not set" \
        in capsys.readouterr().err
    monkeypatch.setenv(TOKEN_ENV, "wrong")
    assert main(["sweep", "run", "--config", config, "--at", "21:00"]) == 2
    assert "the daemon refused the run (401): a valid bearer token is required" \
        in capsys.readouterr().err
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with capture_logs():  # the "daemon" logs in this process; keep stdout the CLI's
        assert main(["sweep", "run", "--config", config, "--at", "21:00", "--date",
                     "2026-11-20", "--format", "json"]) == 0
        row = json.loads(capsys.readouterr().out)
        assert main(["sweep", "run", "--config", config, "--at", "21:00"]) == 0
        out = capsys.readouterr().out
    assert row["checkpoint"] == "21:00" and row["runs"] == 1
    assert row["report"]["unaffirmed_tickets"][0]["individual_alloc_id"] == "A-O-1-2"
    assert out.startswith("Sweep 2026-11-20 21:00 America/New_York") and "run 2)" in out
    assert main(["sweep", "run", "--config", config, "--at", "9pm"]) == 2
    assert "invalid time '9pm'" in capsys.readouterr().err
    assert main(["sweep", "run", "--config", config, "--date", "2026-09-07"]) == 2  # Labor Day
    assert "2026-09-07 is not an XNYS trading day" in capsys.readouterr().err
    elsewhere = Path(config).read_text(encoding="utf-8").replace(
        f"port = {api.port}", f"port = {free_port()}")
    other = Path(config).with_name("other.toml")
    other.write_text(elsewhere, encoding="utf-8")
    assert main(["sweep", "run", "--config", str(other)]) == 1
    assert "no fixalloc daemon answers on http://127.0.0.1:" in capsys.readouterr().err
