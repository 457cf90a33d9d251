"""Render quickfix session settings from the validated config (one place, one format).

quickfix reads its own INI-style file; we write it into the state directory at startup
so the effective settings are inspectable, and log each one once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import quickfix as fix

from gateway.config import Config


def render(defaults: Mapping[str, object], sessions: Sequence[Mapping[str, object]]) -> str:
    def block(title: str, values: Mapping[str, object]) -> list[str]:
        return [f"[{title}]", *(f"{k}={v}" for k, v in values.items() if v is not None), ""]

    lines = block("DEFAULT", defaults)
    for session in sessions:
        lines += block("SESSION", session)
    return "\n".join(lines)


def common_defaults(
    *, connection_type: str, store_dir: Path, dictionary: Path, sender_comp_id: str,
    heartbeat: int, start_time: str = "00:00:00", end_time: str = "00:00:00",
) -> dict[str, object]:
    return {
        "ConnectionType": connection_type,
        "SenderCompID": sender_comp_id,
        "FileStorePath": str(store_dir),
        "UseDataDictionary": "Y",
        "DataDictionary": str(dictionary),
        # Validation stays on for every counterparty: our UDFs are declared in the dictionary.
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


def gateway_settings(config: Config) -> tuple[str | None, str | None]:
    """The acceptor (OMS) and initiator (brokers) settings texts; None when a side is empty."""
    state = config.state_dir
    dictionary = config.resolve(config.fix.data_dictionary)
    base = {
        "dictionary": dictionary, "sender_comp_id": config.fix.sender_comp_id,
        "heartbeat": config.fix.heartbeat_seconds, "start_time": config.fix.start_time,
        "end_time": config.fix.end_time,
    }
    acceptor = None
    if config.fix.oms:
        defaults = common_defaults(connection_type="acceptor",
                                   store_dir=state / "fix_store" / "oms",
                                   **base)  # type: ignore[arg-type]
        sessions = [{"BeginString": config.fix.begin_string, "TargetCompID": s.target_comp_id,
                     "SocketAcceptPort": s.port} for s in config.fix.oms]
        acceptor = render(defaults, sessions)
    initiator = None
    if config.fix.brokers:
        defaults = common_defaults(connection_type="initiator",
                                   store_dir=state / "fix_store" / "brokers",
                                   **base)  # type: ignore[arg-type]
        defaults["ReconnectInterval"] = config.fix.reconnect_seconds
        sessions = [{"BeginString": config.fix.begin_string, "TargetCompID": s.target_comp_id,
                     "SocketConnectHost": s.host, "SocketConnectPort": s.port}
                    for s in config.fix.brokers]
        initiator = render(defaults, sessions)
    return acceptor, initiator


def load(text: str, path: Path) -> fix.SessionSettings:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return fix.SessionSettings(str(path))
