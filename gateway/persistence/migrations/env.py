"""Alembic environment: reuse the gateway's engine when it hands one over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import gateway.notify.outbox
import gateway.persistence.approval_tables
import gateway.persistence.auth_tables
import gateway.persistence.lifecycle_tables  # noqa: F401  (their tables join the metadata)
from gateway.persistence.tables import metadata

config = context.config
engine = config.attributes.get("engine") or create_engine(
    config.get_main_option("sqlalchemy.url") or "sqlite://"
)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
