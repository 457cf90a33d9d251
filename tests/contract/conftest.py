"""The contract suites' database: migrated on SQLite and on the test PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.persistence.store import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()
