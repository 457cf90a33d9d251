"""`[audit]` settings: how often the daemon checks its tamper-evident record, and where the
checkpoints go that the database's administrator cannot change."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AuditSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seal_every_ms: int = Field(default=200, ge=10, le=60_000)
    """How often the sealer turns the notes of audited writes into chain entries: the
    most a write waits to be covered by the chain while the daemon runs."""
    verify_every_minutes: int = Field(default=15, ge=0, le=1440)
    """Check the recent chain this often (and once at start-up); 0: only at start-up."""
    verify_window_hours: int = Field(default=24, ge=1, le=24 * 366)
    """How far back "recent" reaches; `fixalloc audit verify` checks everything."""
    checkpoint_file: Path | None = None
    """Each check appends the chain head (sequence, hash, time) here as a JSON line: a file
    the operator ships off the database host (relative to the config file's folder)."""
    checkpoint_key_file: Path | None = None
    """A secret held outside the database: checkpoints are signed with HMAC-SHA256 under it."""
