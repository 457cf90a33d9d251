"""users, api_tokens, auth_sessions: people, their roles and their credentials

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 11:00:00

Local users with argon2 password hashes, an optional TOTP secret and a set of roles
(gateway/auth/roles.py); per-user API tokens and login sessions, of which only the hash
of the secret half is stored (gateway/persistence/auth_tables.py). The three tables are
audited like every other: on PostgreSQL their note triggers are installed here
(migration 0011 says why); on SQLite each gateway connection creates its own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_Ts = sa.DateTime(timezone=True)
_TABLES = (("users", "username"), ("api_tokens", "token_id"), ("auth_sessions", "session_id"))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _Ts, nullable=False),
        sa.Column("password_changed_at", _Ts, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_users"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("created_at", _Ts, nullable=False),
        sa.Column("revoked_at", _Ts, nullable=True),
        sa.ForeignKeyConstraint(["username"], ["users.username"],
                                name="fk_api_tokens_username_users"),
        sa.PrimaryKeyConstraint("token_id", name="pk_api_tokens"),
    )
    op.create_index("ix_api_tokens_username", "api_tokens", ["username"])
    op.create_table(
        "auth_sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _Ts, nullable=False),
        sa.Column("expires_at", _Ts, nullable=False),
        sa.Column("revoked_at", _Ts, nullable=True),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["username"], ["users.username"],
                                name="fk_auth_sessions_username_users"),
        sa.PrimaryKeyConstraint("session_id", name="pk_auth_sessions"),
    )
    op.create_index("ix_auth_sessions_username", "auth_sessions", ["username"])
    if op.get_bind().dialect.name == "postgresql":
        from gateway.audit.chain_triggers import pg_note_trigger_sql

        for table, pk in _TABLES:
            for sql in pg_note_trigger_sql(table, pk):
                op.execute(sql)


def downgrade() -> None:
    op.drop_index("ix_auth_sessions_username", table_name="auth_sessions")
    op.drop_table("auth_sessions")
    op.drop_index("ix_api_tokens_username", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
