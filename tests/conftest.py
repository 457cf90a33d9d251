"""Session-wide fixtures: the throwaway PostgreSQL server and database URLs per backend."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import create_database, postgres_server

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A private PostgreSQL server for the run (FIXALLOC_TEST_PG_URL reuses an existing one)."""
    existing = os.environ.get("FIXALLOC_TEST_PG_URL")
    if existing:
        yield existing
        return
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per backend: SQLite in tmp_path, and a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fixalloc.db'}"
    admin = request.getfixturevalue("pg_admin_url")
    return create_database(admin, f"t{os.getpid()}_{next(_counter)}")


# -- pytest-xdist: each worker chooses its ports from its own slice of the range -------------
# Two workers drawing the same free port is rare but real: a daemon restarted by one worker
# found its HTTP port held by the other's test. Simulators and daemons inherit the setting.
# A worker that dies is replaced by gw<count>, gw<count+1>, ...: slices for four times the
# workers let the first replacements draw from slices no live worker uses.
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    _slices = 4 * int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["FIXALLOC_PORT_SLICE"] = (
        f"{int(os.environ['PYTEST_XDIST_WORKER'][2:]) % _slices}/{_slices}")


# -- pytest-xdist: the workers' summaries, printed once by the controller ---------------------
# The controller collects nothing, so the conftests under tests/integration and tests/web
# (which print these lines in a run on one process) are not loaded in it; their workers
# hand their figures over in `workeroutput`, gathered here.

_GATHERED: dict[str, Any] = {"replay": {}, "web": {"timings": [], "screenshots": []}}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    out = getattr(node, "workeroutput", {})
    for key, value in (out.get("replay_totals") or {}).items():
        _GATHERED["replay"][key] = _GATHERED["replay"].get(key, 0) + value
    for key, lines in (out.get("web_report") or {}).items():
        _GATHERED["web"][key] += lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("dsession"):
        return  # one process: the directories' own conftests print these
    t = _GATHERED["replay"]
    if t.get("tests") or t.get("opted_out"):
        terminalreporter.write_line(
            f"replay: {t['identical']} of {t['allocations']} allocations identical across "
            f"{t['databases']} test databases ({t['seconds']:.1f} s over {t['tests']} "
            f"tests; {t['opted_out']} opted out)")
    for line in _GATHERED["web"]["timings"]:
        terminalreporter.write_line(f"web timing: {line}")
    for path in _GATHERED["web"]["screenshots"]:
        terminalreporter.write_line(f"web screenshot: {path}")


# -- process-wide state a test may leave behind -----------------------------------------------
# The sweep publishes the same-day affirmation ratio only for the newest trade date this
# process has swept (gateway/posttrade/sweep_actions.py). A test that sweeps today (an
# in-process node) would otherwise keep a later test's sweep of an earlier date from
# publishing its ratio, and that test would read the first one's figure.
@pytest.fixture(autouse=True)
def _fresh_sweep_ratio_day() -> Iterator[None]:
    from gateway.posttrade import sweep_actions

    sweep_actions._latest_ratio_day.clear()
    yield
