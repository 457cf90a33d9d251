"""Every load step of `fixalloc run` that can fail on a bad deploy, without opening a session.

`fixalloc config check` and `Node.start` call the same function, so a check that says ok
means the daemon gets past loading: the config, the reference data and the rulebook (each
error with file:line), the rendered quickfix settings with each session's dictionary, the
secrets the sessions and the HTTP API name, and the TLS files.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.errors import ConfigError, SecretMissingError
from gateway.secrets import resolve_secret


@dataclass(frozen=True)
class Checked:
    refdata: Any
    rulebook: Any
    sessions: int


def load_reference(config: Config) -> tuple[Any, Any]:
    """The reference data and rulebook as `run` loads them (file-sourced reference data)."""
    from gateway import refdata
    from gateway.reference import ReferenceData

    ref = ReferenceData.load(config) if config.refdata.source == "files" else None
    try:
        rulebook = refdata.load_rulebook(config.resolve(config.refdata.rules))
    except refdata.RefDataError as exc:
        raise ConfigError(exc.file, exc.line, exc.reason) from exc
    return ref, rulebook


def check_sessions(config: Config) -> int:
    """Render and parse the quickfix settings and load every session's dictionary."""
    import quickfix as fix

    from gateway.fix import settings as qf_settings

    specs = qf_settings.engine_specs(config)
    dictionaries = {config.resolve(config.fix.effective(s, "data_dictionary"))
                    for s in config.fix.all_sessions()}
    for path in sorted(dictionaries):
        if not path.is_file():
            raise ConfigError(str(config.source), None, f"data dictionary {path} not found")
        try:
            fix.DataDictionary(str(path))
        except Exception as exc:
            raise ConfigError(str(path), None, f"not a usable FIX dictionary: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="fixalloc-check-") as tmp:
        for spec in specs:
            try:
                qf_settings.load(spec.text, Path(tmp) / spec.filename)
            except Exception as exc:
                raise ConfigError(str(config.source), None,
                                  f"quickfix refused the {spec.side} settings: {exc}") from exc
    for s in config.fix.all_sessions():
        if s.tls is not None:
            _check_tls(config, s.name, s.tls, acceptor=s in config.fix.oms)
    return sum(len(spec.sessions) for spec in specs)


def _check_tls(config: Config, name: str, tls: Any, *, acceptor: bool) -> None:
    where = str(config.source)
    if acceptor and tls.cert_file is None:
        raise ConfigError(where, None, f"session {name}: tls.cert_file is required on an "
                                       "acceptor session")
    for attr in ("cert_file", "key_file", "ca_file"):
        path = getattr(tls, attr)
        if path is not None and not config.resolve(path).is_file():
            raise ConfigError(where, None, f"session {name}: tls.{attr} "
                                           f"{config.resolve(path)} not found")
    if tls.cert_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if acceptor
                                 else ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(str(config.resolve(tls.cert_file)),
                                    str(config.resolve(tls.key_file)) if tls.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(where, None, f"session {name}: the certificate and key do not "
                                           f"load: {exc}") from exc


def check_secrets(config: Config) -> None:
    secrets_file = (config.resolve(config.gateway.secrets_file)
                    if config.gateway.secrets_file else None)
    named = [(s.name, s.password_env) for s in config.fix.all_sessions()]
    named.append(("http", config.http.api_token_env))
    for session, variable in named:
        if variable:
            try:
                resolve_secret(session, variable, secrets_file)
            except SecretMissingError as exc:
                raise ConfigError(str(config.source), None, str(exc)) from exc


def check_notifications(config: Config) -> None:
    from gateway.notify.notifier import check_settings

    secrets_file = (config.resolve(config.gateway.secrets_file)
                    if config.gateway.secrets_file else None)
    try:
        check_settings(config.notifications, secrets_file=secrets_file, resolve=config.resolve)
    except (SecretMissingError, ValueError) as exc:
        raise ConfigError(str(config.source), None, f"notifications: {exc}") from exc


def preflight(config: Config, *, reference: bool = True) -> Checked:
    """Run every load step; raise ConfigError (file, line, reason) on the first failure."""
    ref, rulebook = load_reference(config) if reference else (None, None)
    sessions = check_sessions(config)
    check_secrets(config)
    check_notifications(config)
    return Checked(ref, rulebook, sessions)
