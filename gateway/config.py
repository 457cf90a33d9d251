"""The gateway's one validated configuration tree.

A TOML file is parsed, environment overrides are applied, and pydantic validates it
into frozen models. Errors name the file, the line (where the key can be found) and
the reason, so an operator can fix a bad deploy without reading a traceback.
Secrets are never part of this tree: sessions name an environment variable or a
secrets file entry, resolved at logon time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError

_COMP_ID = r"^[A-Za-z0-9_.\-]{1,32}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewaySettings(_Frozen):
    name: str = "fixalloc"
    state_dir: Path = Path("state")
    database_url: str = ""
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    inbox_capacity: PositiveInt = 100_000
    workers: int = Field(default=0, ge=0, le=64)
    """Process-pool workers for the engine; 0 evaluates in-process."""
    secrets_file: Path | None = None
    """KEY=value lines (mode 0600) consulted when a secret's environment variable is unset."""


class HttpSettings(_Frozen):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    api_token_env: str | None = None
    """Environment variable holding the bearer token required by state-changing requests."""


class OmsSession(_Frozen):
    """An OMS that connects to us (we are the acceptor)."""

    name: str = Field(pattern=_COMP_ID)
    target_comp_id: str = Field(pattern=_COMP_ID)
    port: int = Field(ge=1, le=65535)
    password_env: str | None = None
    """Environment variable holding the password the OMS must present on Logon."""


class BrokerSession(_Frozen):
    """An executing broker we connect to (we are the initiator)."""

    name: str = Field(pattern=_COMP_ID)
    target_comp_id: str = Field(pattern=_COMP_ID)
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    alloc_type: Literal["calculated", "preliminary"] = "calculated"
    username: str | None = None
    password_env: str | None = None
    """Environment variable holding the Logon password; never the password itself."""
    send_udfs: bool = True
    """Whether this broker's dictionary declares AllocStrategy/AllocVehicle in NoAllocs."""
    max_message_size: PositiveInt | None = None


class FixSettings(_Frozen):
    begin_string: Literal["FIX.4.4"] = "FIX.4.4"
    sender_comp_id: str = Field(default="FIXALLOC", pattern=_COMP_ID)
    data_dictionary: Path = Path("../fix_specs/FIX44.xml")
    heartbeat_seconds: int = Field(default=30, ge=1, le=300)
    reconnect_seconds: int = Field(default=5, ge=1, le=300)
    start_time: str = "00:00:00"
    end_time: str = "00:00:00"
    oms: tuple[OmsSession, ...] = ()
    brokers: tuple[BrokerSession, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> FixSettings:
        names = [s.name for s in self.oms] + [s.name for s in self.brokers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"session names must be unique, repeated: {', '.join(dupes)}")
        targets = [s.target_comp_id for s in self.oms] + [s.target_comp_id for s in self.brokers]
        if len(set(targets)) != len(targets):
            raise ValueError("every session needs its own target_comp_id")
        ports = [s.port for s in self.oms]
        if len(set(ports)) != len(ports):
            raise ValueError("each OMS acceptor session needs its own port")
        return self


class RefDataSettings(_Frozen):
    securities: Path = Path("securities.csv")
    accounts: Path = Path("accounts.csv")
    positions: Path | None = Path("positions.csv")
    rules: Path = Path("rules")
    source: Literal["files", "database"] = "files"
    """Where accounts/positions/securities are read from: the CSV files above, or the latest
    version stored in the database (by another instance or `fixalloc refdata import`)."""
    watch: bool = True
    """Reload the rulebook and the reference-data files when they change on disk."""


class BookSettings(_Frozen):
    name: str = Field(min_length=1)
    broker: str = Field(min_length=1)
    method: str | None = None
    """Overrides the rulebook's scheme method for every block of this book."""


class Config(_Frozen):
    gateway: GatewaySettings = GatewaySettings()
    http: HttpSettings = HttpSettings()
    fix: FixSettings = FixSettings()
    refdata: RefDataSettings = RefDataSettings()
    books: tuple[BookSettings, ...] = ()
    source: Path = Path("<memory>")
    """The file this was loaded from; relative paths inside resolve against its folder."""

    @field_validator("books")
    @classmethod
    def _books_unique(cls, books: tuple[BookSettings, ...]) -> tuple[BookSettings, ...]:
        names = [b.name for b in books]
        if len(set(names)) != len(names):
            raise ValueError("book names must be unique")
        return books

    @model_validator(mode="after")
    def _books_route_to_known_brokers(self) -> Config:
        brokers = {b.name for b in self.fix.brokers}
        for book in self.books:
            if book.broker not in brokers:
                raise ValueError(
                    f"book {book.name!r} routes to broker {book.broker!r}, "
                    "which is not a configured broker session "
                    f"({', '.join(sorted(brokers)) or 'none'})"
                )
        return self

    def resolve(self, path: Path) -> Path:
        """Resolve a configured path against the config file's folder."""
        return path if path.is_absolute() else (self.source.parent / path).resolve()

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.gateway.state_dir)

    @property
    def database_url(self) -> str:
        if self.gateway.database_url:
            return self.gateway.database_url
        return f"sqlite:///{self.state_dir / 'fixalloc.db'}"

    def broker(self, name: str) -> BrokerSession:
        for b in self.fix.brokers:
            if b.name == name:
                return b
        raise KeyError(name)

    def book(self, name: str) -> BookSettings | None:
        return next((b for b in self.books if b.name == name), None)

    def config_hash(self) -> str:
        """A stable hash of the effective configuration, stored on every decision."""
        payload = self.model_dump(mode="json", exclude={"source"})
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


ENV_PREFIX = "FIXALLOC__"


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Apply FIXALLOC__SECTION__KEY=value overrides (12-factor) onto the parsed TOML."""
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("<environment>", None, f"{key}: {part} is not a table")
        node[path[-1]] = value
    return data


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line number of the deepest named key in a validation error location."""
    names = [p for p in loc if isinstance(p, str)]
    for name in reversed(names):
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*=|^\s*\[+[^\]]*\b{re.escape(name)}\]+")
        for number, line in enumerate(text.splitlines(), start=1):
            if pattern.search(line):
                return number
    return None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Load, override from the environment, and validate a configuration file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(source), None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(str(source), line, f"invalid TOML: {exc}") from exc
    data = _apply_env(data, dict(os.environ if environ is None else environ))
    data["source"] = str(source.resolve())
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = "unknown key"
        raise ConfigError(str(source), _line_of(text, loc), f"{dotted}: {reason}") from exc
