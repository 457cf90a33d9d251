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
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.audit.settings import AuditSettings
from gateway.auth.settings import AuthSettings
from gateway.book_routing import BookRouting
from gateway.errors import ConfigError
from gateway.notify.settings import NotificationSettings
from gateway.posttrade.sweep_settings import SweepSettings

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


_SCHEDULER = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*):(\d{1,5})")


class EngineSettings(_Frozen):
    """Where the engine's partitions run when one machine is not enough (docs/engine.md)."""

    scheduler: str | None = None
    """A Dask scheduler's address (tcp://HOST:PORT, or tls://): the engine's partitions run on
    its workers (gateway/dask_executor.py) instead of [gateway] workers processes."""

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if not value:
            return None
        m = _SCHEDULER.fullmatch(value)
        if m is None or not 1 <= int(m.group(3)) <= 65535:
            raise ValueError(f"not a Dask scheduler address: {value!r} (expected "
                             "tcp://HOST:PORT or tls://HOST:PORT, e.g. tcp://127.0.0.1:8786)")
        return value


class HttpSettings(_Frozen):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    api_token_env: str | None = None
    """Environment variable holding the shared machine token: a bearer token that acts as
    `[auth] machine_token_role` (users have tokens of their own: docs/users.md)."""


_TIME = r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
_DAY = Literal["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]


class TlsSettings(_Frozen):
    """TLS on one session, done by quickfix's own SSL engine (built in by scripts/dev.sh)."""

    cert_file: Path | None = None
    """PEM certificate: ours as the acceptor (required there), or our client certificate."""
    key_file: Path | None = None
    """PEM private key for cert_file (default: the key is inside cert_file)."""
    ca_file: Path | None = None
    """CAs that sign the peer's certificate. Initiator: verify the broker's certificate
    chain against it. Acceptor: with `require_client_cert`, the OMS must present one."""
    require_client_cert: bool = False
    """Acceptor only: refuse an OMS that does not present a certificate signed by ca_file."""
    protocols: str = "-all +TLSv1_2 +TLSv1_3"
    """quickfix SSLProtocol syntax; by default TLS 1.2 and 1.3 only."""
    cipher_suite: str | None = None
    """OpenSSL cipher list for TLS 1.2 (quickfix SSLCipherSuite); None keeps OpenSSL's."""

    @model_validator(mode="after")
    def _client_cert_needs_ca(self) -> TlsSettings:
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("require_client_cert needs ca_file "
                             "(the CA of the client certificates)")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file without cert_file")
        return self


def _zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r} (an IANA name such as "
                         "America/New_York)") from None
    return zone


class ConfirmTolerance(_Frozen):
    """How far a broker's Confirmation (AK) may differ from our line and still be affirmed."""

    price: Decimal = Field(default=Decimal("0.0001"), ge=0)
    money: Decimal = Field(default=Decimal("0.01"), ge=0)
    commission: Decimal = Field(default=Decimal("0.01"), ge=0)


class SessionKeys(_Frozen):
    """Session settings that differ between counterparties; unset means [fix]'s value."""

    sender_comp_id: str | None = Field(default=None, pattern=_COMP_ID)
    sender_sub_id: str | None = Field(default=None, pattern=_COMP_ID)
    sender_location_id: str | None = Field(default=None, pattern=_COMP_ID)
    target_sub_id: str | None = Field(default=None, pattern=_COMP_ID)
    target_location_id: str | None = Field(default=None, pattern=_COMP_ID)
    data_dictionary: Path | None = None
    """This counterparty's FIX dictionary (per-counterparty files live in fix_specs/)."""
    heartbeat_seconds: int | None = Field(default=None, ge=1, le=300)
    reset_on_logon: bool | None = None
    reset_on_logout: bool | None = None
    reset_on_disconnect: bool | None = None
    refresh_on_logon: bool | None = None
    start_time: str | None = Field(default=None, pattern=_TIME)
    end_time: str | None = Field(default=None, pattern=_TIME)
    start_day: _DAY | None = None
    end_day: _DAY | None = None
    time_zone: str | None = None
    non_stop: bool | None = None
    logon_timeout: int | None = Field(default=None, ge=1, le=600)
    logout_timeout: int | None = Field(default=None, ge=1, le=600)
    validate_user_defined_fields: bool | None = None
    validate_fields_out_of_order: bool | None = None
    validate_fields_have_values: bool | None = None
    allow_unknown_msg_fields: bool | None = None
    check_latency: bool | None = None
    max_latency_seconds: int | None = Field(default=None, ge=1, le=3600)
    send_udfs: bool | None = None
    """Whether the peer's dictionary declares AllocStrategy/AllocVehicle in NoAllocs."""
    max_message_bytes: int | None = Field(default=None, ge=1024, le=1 << 30)
    max_messages_per_second: float | None = Field(default=None, ge=0)
    """Application messages a second accepted from the peer (0: no limit)."""
    tls: TlsSettings | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        return None if zone is None else _zone(zone)


class OmsSession(SessionKeys):
    """An OMS that connects to us (we are the acceptor)."""

    name: str = Field(pattern=_COMP_ID)
    target_comp_id: str = Field(pattern=_COMP_ID)
    port: int = Field(ge=1, le=65535)
    password_env: str | None = None
    """Environment variable holding the password the OMS must present on Logon."""
    allowed_remote_addresses: tuple[str, ...] = ()
    """Peer addresses quickfix accepts this session from (empty: any, confine with systemd)."""


class BrokerSession(SessionKeys):
    """An executing broker we connect to (we are the initiator)."""

    name: str = Field(pattern=_COMP_ID)
    target_comp_id: str = Field(pattern=_COMP_ID)
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    alloc_type: Literal["calculated", "preliminary", "ready_to_book"] = "calculated"
    """AllocType(626) of our J: 1 calculated, 2 preliminary, or 5 ready-to-book (NoOrders
    and no NoAllocs: the broker books the block, the accounts are split elsewhere)."""
    send_preallocations: bool = False
    """Put an OMS pre-allocation on the child order (AllocID, PreallocMethod=0, NoAllocs)
    so the broker books from it; a cancel/replace that changes it carries a new AllocID."""
    username: str | None = None
    password_env: str | None = None
    """Environment variable holding the Logon password; never the password itself."""
    reconnect_seconds: int | None = Field(default=None, ge=1, le=300)
    max_message_size: PositiveInt | None = None
    max_lines_per_j: PositiveInt | None = None
    """Fragment a J above this many NoAllocs lines (TotNoAllocs/LastFragment)."""
    account_reject_fix: Literal["replace", "cancel_new"] = "replace"
    """How this broker wants an account-level reject fixed: a J Replace of the whole
    allocation, or a J Cancel followed by a J New."""
    p_timeout_minutes: float = Field(default=15.0, gt=0)
    """A J with no P past 'received' by then is an exception (never re-sent as New)."""
    ak_timeout_minutes: float = Field(default=30.0, gt=0)
    """A ticket with no AK by then (after P accepted) gets a ConfirmationRequest (BH)."""
    confirm_tolerance: ConfirmTolerance = Field(default_factory=ConfirmTolerance)
    commission_per_share: Decimal | None = Field(default=None, ge=0)
    """The commission this broker charges per share (to the cent per line): an AK is
    expected to carry it, with net money = gross + commission on a buy, gross - commission
    on a sell. Unset: no commission is expected, and any on an AK is a mismatch."""


CROSS_VENUE = BrokerSession(name="cross", target_comp_id="CROSS", port=1,
                            alloc_type="ready_to_book")
"""The broker of a crossed part (gateway/crossing_live.py): the firm's own venue, booked
in the gateway's record; its J carries no lines and no commission is charged."""


class FixSettings(_Frozen):
    """Defaults for every session; each [[fix.oms]] / [[fix.brokers]] entry may override."""

    begin_string: Literal["FIX.4.4"] = "FIX.4.4"
    sender_comp_id: str = Field(default="FIXALLOC", pattern=_COMP_ID)
    data_dictionary: Path = Path("../fix_specs/FIX44.xml")
    heartbeat_seconds: int = Field(default=30, ge=1, le=300)
    reconnect_seconds: int = Field(default=5, ge=1, le=300)
    logon_backoff_max_seconds: int = Field(default=300, ge=1, le=3600)
    """A broker that refuses our Logon again and again is retried after reconnect_seconds
    x 2^(n-1), at most this long (gateway/fix/logon_backoff.py)."""
    reset_on_logon: bool = False
    reset_on_logout: bool = False
    reset_on_disconnect: bool = False
    refresh_on_logon: bool = False
    start_time: str = Field(default="00:00:00", pattern=_TIME)
    """Start of each session period in time_zone; a new period begins at sequence number 1
    (the daily reset). Equal start and end times mean a 24-hour period."""
    end_time: str = Field(default="00:00:00", pattern=_TIME)
    start_day: _DAY | None = None
    end_day: _DAY | None = None
    time_zone: str = "UTC"
    non_stop: bool = False
    """No schedule and no scheduled reset at all (quickfix NonStopSession)."""
    logon_timeout: int = Field(default=10, ge=1, le=600)
    logout_timeout: int = Field(default=2, ge=1, le=600)
    validate_user_defined_fields: bool = True
    validate_fields_out_of_order: bool = True
    validate_fields_have_values: bool = True
    allow_unknown_msg_fields: bool = False
    check_latency: bool = True
    max_latency_seconds: int = Field(default=120, ge=1, le=3600)
    send_udfs: bool = True
    max_message_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=1 << 30)
    """Inbound messages above this are refused with a session Reject (and an alert)."""
    oms_max_messages_per_second: float = Field(default=500.0, ge=0)
    broker_max_messages_per_second: float = Field(default=0.0, ge=0)
    """0: no limit. A limit on a broker session refuses fills above it (the broker must
    resend them), so it is off by default there."""
    reconnect_alert_logons: int = Field(default=5, ge=2, le=1000)
    """This many logons of one session within `reconnect_alert_seconds` is a reconnect loop."""
    reconnect_alert_seconds: float = Field(default=60.0, gt=0, le=86_400)
    oms: tuple[OmsSession, ...] = ()
    brokers: tuple[BrokerSession, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> FixSettings:
        names = [s.name for s in self.oms] + [s.name for s in self.brokers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"session names must be unique, repeated: {', '.join(dupes)}")
        ids = [(s.sender_comp_id or self.sender_comp_id, s.sender_sub_id, s.sender_location_id,
                s.target_comp_id, s.target_sub_id, s.target_location_id)
               for s in self.all_sessions()]
        if len(set(ids)) != len(ids):
            raise ValueError("two sessions have the same CompIDs: each needs its own "
                             "sender/target combination")
        ports = [s.port for s in self.oms]
        if len(set(ports)) != len(ports):
            raise ValueError("each OMS acceptor session needs its own port")
        # The gateway's own sessions without a socket: the desk (gateway/fix/desk.py, the
        # orders people hand over) and the crossing venue (gateway/fix/cross_venue.py).
        for name, comp_id, what in (("desk", "DESK", "desk session"),
                                    ("cross", "CROSS", "internal crossing venue")):
            if any(s.target_comp_id == comp_id for s in self.all_sessions()):
                raise ValueError(f"target_comp_id {comp_id} is the gateway's own {what}; "
                                 "choose another")
            if any(s.name == name for s in self.all_sessions()):
                raise ValueError(f"session name {name} is the gateway's own {what}; "
                                 "choose another")
        return self

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        return _zone(zone)

    def all_sessions(self) -> tuple[OmsSession | BrokerSession, ...]:
        return (*self.oms, *self.brokers)

    def effective(self, session: SessionKeys, key: str) -> Any:
        """A session's own value for `key`, else this section's default."""
        value = getattr(session, key)
        return getattr(self, key) if value is None else value


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
    rules_activation: Literal["immediate", "staged"] = "immediate"
    """A changed rulebook goes in force at once, or (staged) waits, validated and shown
    with its what-if at GET /rulebook/staged, until POST /rulebook/staged/activate."""


ORD_TYPES = {"market": "1", "limit": "2", "stop": "3", "stop_limit": "4", "pegged": "P"}
TIME_IN_FORCE = {"day": "0", "gtc": "1", "at_the_open": "2", "ioc": "3", "fok": "4",
                 "gtd": "6", "at_the_close": "7"}


class BookSettings(_Frozen):
    name: str = Field(min_length=1)
    broker: str = Field(min_length=1)
    method: str | None = None
    """Overrides the rulebook's scheme method for every block of this book."""
    ord_types: tuple[Literal["market", "limit", "stop", "stop_limit", "pegged"], ...] = (
        "market", "limit")
    """Order types this book accepts from the OMS; anything else is rejected before routing."""
    time_in_force: tuple[Literal["day", "gtc", "at_the_open", "ioc", "fok", "gtd",
                                 "at_the_close"], ...] = ("day", "ioc", "fok", "at_the_open",
                                                          "at_the_close")
    """TimeInForce values this book accepts (an absent TimeInForce(59) means day)."""
    max_order_qty: Decimal = Field(default=Decimal(10_000_000), gt=0)
    """Largest OrderQty accepted on one block, in shares."""
    max_notional: Decimal = Field(default=Decimal(2_000_000_000), gt=0)
    """Largest OrderQty x price (limit price, else the security master's reference price)."""
    ack_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How long the broker has to acknowledge a routed (or queued) block."""
    on_ack_timeout: Literal["reject", "done_for_day"] = "reject"
    """What the OMS hears when the deadline passes with no acknowledgement from the broker."""
    routing: BookRouting | None = None
    """Several brokers: each block split into one child order per broker (book_routing.py)."""


class Config(_Frozen):
    gateway: GatewaySettings = GatewaySettings()
    engine: EngineSettings = EngineSettings()
    http: HttpSettings = HttpSettings()
    fix: FixSettings = FixSettings()
    refdata: RefDataSettings = RefDataSettings()
    books: tuple[BookSettings, ...] = ()
    notifications: NotificationSettings = NotificationSettings()
    sweep: SweepSettings = SweepSettings()
    audit: AuditSettings = AuditSettings()
    auth: AuthSettings = AuthSettings()
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
            wanted = {book.broker} | (book.routing.broker_names() if book.routing else set())
            for name in sorted(wanted - brokers):
                raise ValueError(
                    f"book {book.name!r} routes to broker {name!r}, "
                    "which is not a configured broker session "
                    f"({', '.join(sorted(brokers)) or 'none'})"
                )
        return self

    @model_validator(mode="after")
    def _one_executor(self) -> Config:
        if self.engine.scheduler and self.gateway.workers:
            raise ValueError("gateway.workers and engine.scheduler are both set: the engine "
                             "runs either in local worker processes or on the Dask cluster "
                             "(set workers = 0)")
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
        if name == CROSS_VENUE.name:
            return CROSS_VENUE
        raise KeyError(name)

    def book(self, name: str) -> BookSettings | None:
        return next((b for b in self.books if b.name == name), None)

    def config_hash(self) -> str:
        """A stable hash of the effective configuration, stored on every decision."""
        # Where notifications go is not an input of any decision, nor where the engine runs
        # (a Dask cluster's decisions are byte-identical; the hash of older configs stays).
        payload = self.model_dump(mode="json",
                                  exclude={"source", "notifications", "sweep", "engine"})
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
