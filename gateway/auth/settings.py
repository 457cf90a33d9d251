"""`[auth]` settings: the shared machine token's role, login sessions, failed-login limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.auth.roles import ROLES


class AuthSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    machine_token_role: str = "operations"  # noqa: S105 - a role's name, not a secret
    """The role of a caller presenting the shared token named by `http.api_token_env`
    (the scripts and `fixalloc alloc`/`sweep run` use it)."""
    cookie_secure: bool = True
    """Mark the session cookie Secure. Set false only when the page is served over plain
    HTTP to a browser that would otherwise drop the cookie (a localhost test set-up)."""
    session_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    """A login lasts this long, then the user logs in again."""
    max_failed_logins: int = Field(default=5, ge=1, le=1000)
    """Failed logins for one username within `failed_login_window_minutes` before further
    attempts are answered 429 until the oldest of them leaves the window."""
    failed_login_window_minutes: int = Field(default=15, ge=1, le=24 * 60)

    @field_validator("machine_token_role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: the roles are {', '.join(ROLES)}")
        return role
