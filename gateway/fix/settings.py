"""Render quickfix session settings from the validated config (one place, one format).

quickfix reads its own INI-style file; we write one per engine into the state directory
at start-up, so the effective settings are inspectable, and log each one once. Every
session gets its own [SESSION] block with every key that may differ between
counterparties: CompIDs, dictionary, reset flags, heartbeat, schedule, timeouts and
validation switches (a session's own key in fixalloc.toml, else the [fix] default).

Plain sessions of one side share a threaded engine (a thread per session). A TLS session
gets an engine of its own: quickfix's SSL engines read their certificates from the
engine-wide defaults, and one engine per session keeps one slow peer from stalling the
others as the threaded engines do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import quickfix as fix

from gateway.config import BrokerSession, Config, FixSettings, OmsSession, SessionKeys


def render(defaults: Mapping[str, object], sessions: Sequence[Mapping[str, object]]) -> str:
    def block(title: str, values: Mapping[str, object]) -> list[str]:
        return [f"[{title}]", *(f"{k}={v}" for k, v in values.items() if v is not None), ""]

    lines = block("DEFAULT", defaults)
    for session in sessions:
        lines += block("SESSION", session)
    return "\n".join(lines)


def _yn(value: bool) -> str:
    return "Y" if value else "N"


def common_defaults(
    *, connection_type: str, store_dir: Path, dictionary: Path, sender_comp_id: str,
    heartbeat: int, start_time: str = "00:00:00", end_time: str = "00:00:00",
) -> dict[str, object]:
    """Engine-wide defaults (the simulators use these as they are)."""
    return {
        "ConnectionType": connection_type,
        "SenderCompID": sender_comp_id,
        "FileStorePath": str(store_dir),
        "UseDataDictionary": "Y",
        "DataDictionary": str(dictionary),
        "ValidateUserDefinedFields": "Y",
        "ValidateFieldsOutOfOrder": "Y",
        "ValidateFieldsHaveValues": "Y",
        "AllowUnknownMsgFields": "N",
        "PersistMessages": "Y",
        "StartTime": start_time,
        "EndTime": end_time,
        "HeartBtInt": heartbeat,
        "SocketNodelay": "Y",
        "ResetOnLogon": "N",
        "ResetOnLogout": "N",
        "ResetOnDisconnect": "N",
    }


def utc_time(wall: str, zone: str, on: datetime | None = None) -> str:
    """A wall-clock time in `zone` as the UTC time quickfix schedules with (today's offset).

    quickfix C++ knows UTC or the process's local time only; the offset is taken on the
    day the daemon starts, so a restart after a daylight-saving change picks up the new one.
    """
    if zone.upper() == "UTC":
        return wall
    day = (on or datetime.now(UTC)).astimezone(ZoneInfo(zone)).date()
    local = datetime.combine(day, time.fromisoformat(wall), tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC).strftime("%H:%M:%S")


def session_block(fx: FixSettings, s: SessionKeys, config: Config) -> dict[str, object]:
    """Every per-counterparty quickfix key of one session, resolved against [fix]."""
    def eff(key: str) -> object:
        return fx.effective(s, key)

    zone = str(eff("time_zone"))
    block: dict[str, object] = {
        "BeginString": fx.begin_string,
        "SenderCompID": eff("sender_comp_id"),
        "TargetCompID": s.target_comp_id,  # type: ignore[attr-defined]
        "DataDictionary": str(config.resolve(eff("data_dictionary"))),  # type: ignore[arg-type]
        "HeartBtInt": eff("heartbeat_seconds"),
        "ResetOnLogon": _yn(bool(eff("reset_on_logon"))),
        "ResetOnLogout": _yn(bool(eff("reset_on_logout"))),
        "ResetOnDisconnect": _yn(bool(eff("reset_on_disconnect"))),
        "RefreshOnLogon": _yn(bool(eff("refresh_on_logon"))),
        "LogonTimeout": eff("logon_timeout"),
        "LogoutTimeout": eff("logout_timeout"),
        "ValidateUserDefinedFields": _yn(bool(eff("validate_user_defined_fields"))),
        "ValidateFieldsOutOfOrder": _yn(bool(eff("validate_fields_out_of_order"))),
        "ValidateFieldsHaveValues": _yn(bool(eff("validate_fields_have_values"))),
        "AllowUnknownMsgFields": _yn(bool(eff("allow_unknown_msg_fields"))),
        "CheckLatency": _yn(bool(eff("check_latency"))),
        "MaxLatency": eff("max_latency_seconds"),
    }
    if eff("non_stop"):
        block["NonStopSession"] = "Y"
    else:
        block["StartTime"] = utc_time(str(eff("start_time")), zone)
        block["EndTime"] = utc_time(str(eff("end_time")), zone)
        start_day, end_day = eff("start_day"), eff("end_day")
        if start_day and end_day:
            block["StartDay"] = str(start_day)[:3]
            block["EndDay"] = str(end_day)[:3]
    if isinstance(s, OmsSession):
        block["SocketAcceptPort"] = s.port
        if s.allowed_remote_addresses:
            block["AllowedRemoteAddresses"] = ",".join(s.allowed_remote_addresses)
    elif isinstance(s, BrokerSession):
        block["SocketConnectHost"] = s.host
        block["SocketConnectPort"] = s.port
        block["ReconnectInterval"] = s.reconnect_seconds or fx.reconnect_seconds
    return block


def tls_keys(s: SessionKeys, config: Config, *, acceptor: bool) -> dict[str, object]:
    tls = s.tls
    assert tls is not None
    out: dict[str, object] = {"SSLProtocol": tls.protocols}
    if tls.cipher_suite:
        out["SSLCipherSuite"] = tls.cipher_suite
    prefix = "Server" if acceptor else "Client"
    if tls.cert_file is not None:
        out[f"{prefix}CertificateFile"] = str(config.resolve(tls.cert_file))
        if tls.key_file is not None:
            out[f"{prefix}CertificateKeyFile"] = str(config.resolve(tls.key_file))
    if tls.ca_file is not None:
        out["CertificationAuthoritiesFile"] = str(config.resolve(tls.ca_file))
    if acceptor:
        # quickfix's CertificateVerifyLevel: 0 none, 1 require a client certificate.
        out["CertificateVerifyLevel"] = 1 if tls.require_client_cert else 0
    return out


@dataclass(frozen=True)
class EngineSpec:
    side: str  # "acceptor" | "initiator"
    tls: bool
    filename: str
    text: str
    sessions: tuple[str, ...]  # session names


def engine_specs(config: Config) -> list[EngineSpec]:
    """The quickfix engines to build: one threaded engine per side, one per TLS session."""
    fx = config.fix
    state = config.state_dir
    specs: list[EngineSpec] = []
    for side, sessions, folder in (("acceptor", fx.oms, "oms"),
                                   ("initiator", fx.brokers, "brokers")):
        defaults = common_defaults(
            connection_type=side, store_dir=state / "fix_store" / folder,
            dictionary=config.resolve(fx.data_dictionary), sender_comp_id=fx.sender_comp_id,
            heartbeat=fx.heartbeat_seconds)
        plain = [s for s in sessions if s.tls is None]
        if plain:
            specs.append(EngineSpec(side, False, f"quickfix-{folder}.cfg",
                                    render(defaults, [session_block(fx, s, config)
                                                      for s in plain]),
                                    tuple(s.name for s in plain)))
        for s in sessions:
            if s.tls is None:
                continue
            tls_defaults = defaults | tls_keys(s, config, acceptor=side == "acceptor")
            specs.append(EngineSpec(side, True, f"quickfix-{folder}-{s.name}-tls.cfg",
                                    render(tls_defaults, [session_block(fx, s, config)]),
                                    (s.name,)))
    return specs


def load(text: str, path: Path) -> fix.SessionSettings:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return fix.SessionSettings(str(path))
