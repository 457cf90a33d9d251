"""A migrated database per test: SQLite by default, both backends through `any_db`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.persistence.store import Database


def _open(url: str) -> Iterator[Database]:
    db = Database(url, sqlite_synchronous="OFF")
    db.migrate()
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    yield from _open(f"sqlite:///{tmp_path / 'fixalloc.db'}")


@pytest.fixture
def any_db(database_url: str) -> Iterator[Database]:
    yield from _open(database_url)
