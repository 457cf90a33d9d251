"""Session-wide fixtures: the throwaway PostgreSQL server and database URLs per backend."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

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
