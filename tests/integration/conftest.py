"""Every allocation an integration test made must replay byte-identical (`audit replay`).

After each test, the databases it wrote (SQLite files under its tmp_path with a
`decisions` table, and its PostgreSQL database when it ran on the `database_url` fixture's
postgresql param) are opened read-only and every allocation in them is decided again from
the stored inputs; one that is not byte-identical fails the test at teardown, named with
what differs. The PostgreSQL database lives until the session ends, so it is still there
when this fixture's teardown runs.

Opt out with `@pytest.mark.no_replay("why")` only for a test whose decisions are not the
engine's (crafted rows).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TOTALS = {"allocations": 0, "identical": 0, "databases": 0, "tests": 0, "opted_out": 0,
           "seconds": 0.0}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_replay(reason): the test's decisions are not the engine's (crafted "
                   "rows), so the after-test replay of every allocation is skipped")


def _sqlite_databases(tmp_path: Path) -> list[str]:
    """SQLite files under the test's tmp_path that hold gateway decisions."""
    from sqlalchemy import inspect

    from gateway.audit.replay_cli import read_only_engine

    found = []
    for path in sorted(tmp_path.rglob("*.db")):
        if not path.is_file():
            continue
        url = f"sqlite:///{path}"
        engine = read_only_engine(url)
        try:
            if inspect(engine).has_table("decisions"):
                found.append(url)
        except Exception:  # not an SQLite database (a quickfix store, say)
            continue
        finally:
            engine.dispose()
    return found


def _databases(request: pytest.FixtureRequest) -> list[str]:
    args = request.node.funcargs
    urls = _sqlite_databases(args["tmp_path"]) if "tmp_path" in args else []
    url = args.get("database_url")
    if isinstance(url, str) and url.startswith("postgresql"):
        urls.append(url)
    return urls


def _replay(url: str) -> tuple[int, list[str]] | None:
    """(allocations replayed, one line per one that is not identical); None: no decisions."""
    from sqlalchemy import inspect

    from gateway.audit.replay import replay_all
    from gateway.audit.replay_cli import open_read_only

    with open_read_only(url) as db:
        if not inspect(db.engine).has_table("decisions"):
            return None
        results = [r for r in replay_all(db) if r.counted]
    where = url.rsplit("@", maxsplit=1)[-1]
    bad = [f"{r.alloc_id} in {where}: {r.outcome}: {r.reason}"
           + "".join(f"\n      {d}" for d in r.differences[:8]) for r in results
           if not r.identical]
    return len(results), bad


@pytest.fixture(autouse=True)
def _replay_every_allocation(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    marker = request.node.get_closest_marker("no_replay")
    if marker is not None:
        _TOTALS["opted_out"] += 1
        return
    started = time.perf_counter()
    failures: list[str] = []
    for url in _databases(request):
        outcome = _replay(url)
        if outcome is None:
            continue
        count, bad = outcome
        _TOTALS["databases"] += 1
        _TOTALS["allocations"] += count
        _TOTALS["identical"] += count - len(bad)
        failures += bad
    _TOTALS["tests"] += 1
    _TOTALS["seconds"] += time.perf_counter() - started
    if failures:
        pytest.fail("allocations whose decision does not replay byte-identical "
                    "(fixalloc audit replay):\n  " + "\n  ".join(failures), pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist each worker counts its own tests and hands the counts to the
    # controller (tests/conftest.py prints the one summary line there).
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["replay_totals"] = dict(_TOTALS)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TOTALS["tests"] and not _TOTALS["opted_out"]:
        return
    terminalreporter.write_line(
        f"replay: {_TOTALS['identical']} of {_TOTALS['allocations']} allocations identical "
        f"across {_TOTALS['databases']} test databases ({_TOTALS['seconds']:.1f} s over "
        f"{_TOTALS['tests']} tests; {_TOTALS['opted_out']} opted out)")
