"""Tables of people and their credentials (migration 0012); gateway/auth/ writes them.

No secret is stored in a form that can be used: passwords are argon2 hashes, and an API
token or a session cookie is `<id>.<secret>` where only the SHA-256 of the secret is kept,
so a copy of the database (or of the audit chain, whose row keys are the ids) logs no one
in. The TOTP secret is the exception: checking a code needs it in clear (docs/users.md).

Each table's key is one column, as the audit chain requires; the keys double as the
unique constraints (a username, a token id), so a copied row cannot collide with anything
but its key.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, String, Table

from gateway.persistence.tables import UtcDateTime, metadata

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(255), nullable=False),
    Column("roles", String(255), nullable=False),  # comma-separated, sorted (auth/roles.py)
    Column("enabled", Boolean, nullable=False),
    Column("totp_secret", String(64), nullable=True),
    # The time step of the last accepted TOTP code: a code is good for one login only.
    Column("totp_last_step", BigInteger, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("password_changed_at", UtcDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(64), primary_key=True),  # the public half of the token
    Column("username", String(64), ForeignKey("users.username"), nullable=False),
    Column("secret_hash", String(64), nullable=False),  # SHA-256 hex of the secret half
    Column("label", String(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
)
Index("ix_api_tokens_username", api_tokens.c.username)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # the public half of the cookie
    Column("username", String(64), ForeignKey("users.username"), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    # Not a credential on its own (it is useless without the cookie): kept in clear
    # because GET /me hands it to the page that must echo it.
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("remote_addr", String(64), nullable=True),
)
Index("ix_auth_sessions_username", auth_sessions.c.username)
