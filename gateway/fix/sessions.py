"""Create, start, stop and send on the gateway's FIX sessions.

The OMS side is a ThreadedSocketAcceptor and the broker side a ThreadedSocketInitiator:
each session gets its own thread, so one slow counterparty cannot stall the others.
quickfix acceptors bind every interface (there is no setting to restrict them): the
systemd unit confines them with IPAddressAllow/IPAddressDeny.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import quickfix as fix
import structlog

from gateway.clock import Clock
from gateway.config import Config
from gateway.fix import settings as qf_settings
from gateway.fix.application import GatewayApplication, SessionRole
from gateway.fix.wire_log import WireLogFactory
from gateway.inbox import Inbox
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.fix")


def session_key(begin_string: str, sender: str, target: str) -> str:
    return f"{begin_string}:{sender}->{target}"


@dataclass(frozen=True)
class SessionInfo:
    name: str
    role: str
    key: str


class FixSessions:
    def __init__(self, config: Config, db: Database, inbox: Inbox, clock: Clock) -> None:
        self.config = config
        sender = config.fix.sender_comp_id
        begin = config.fix.begin_string
        self.infos: dict[str, SessionInfo] = {}
        roles: dict[str, SessionRole] = {}
        for oms in config.fix.oms:
            key = session_key(begin, sender, oms.target_comp_id)
            self.infos[oms.name] = SessionInfo(oms.name, "oms", key)
            roles[key] = SessionRole(oms.name, "oms", password_env=oms.password_env)
        for broker in config.fix.brokers:
            key = session_key(begin, sender, broker.target_comp_id)
            self.infos[broker.name] = SessionInfo(broker.name, "broker", key)
            roles[key] = SessionRole(broker.name, "broker", username=broker.username,
                                     password_env=broker.password_env)
        self._ids: dict[str, fix.SessionID] = {
            info.key: fix.SessionID(begin, sender, info.key.split("->", 1)[1])
            for info in self.infos.values()
        }
        self.application = GatewayApplication(roles, db, inbox, clock,
                                               config.resolve(config.gateway.secrets_file)
                                               if config.gateway.secrets_file else None)
        self._log_factory = WireLogFactory(db, clock)
        acceptor_text, initiator_text = qf_settings.gateway_settings(config)
        self._engines: list[Any] = []
        self._keep: list[Any] = []
        for side, text, filename, engine_cls in (
            ("acceptor", acceptor_text, "quickfix-oms.cfg", fix.ThreadedSocketAcceptor),
            ("initiator", initiator_text, "quickfix-brokers.cfg", fix.ThreadedSocketInitiator),
        ):
            if not text:
                continue
            for line in text.splitlines():
                log.info("fix.setting", side=side, setting=line)
            settings = qf_settings.load(text, config.state_dir / filename)
            store = fix.FileStoreFactory(settings)
            # quickfix keeps raw pointers to the settings and store: keep them alive.
            self._keep += [settings, store]
            self._engines.append(engine_cls(self.application, store, settings,
                                            self._log_factory))

    def start(self) -> None:
        for engine in self._engines:
            engine.start()

    def stop(self) -> None:
        """Log out every session and wait for the engines' threads to finish."""
        for engine in reversed(self._engines):
            try:
                engine.stop()
            except Exception:
                # Stopping one side must not keep the other side's sessions up.
                log.exception("fix.stop_failed")
        # Destroying the engines removes their sessions from quickfix's process-wide
        # registry, so a later engine in the same process can reuse the SessionIDs.
        self._engines.clear()
        gc.collect()

    def key_of(self, name: str) -> str:
        return self.infos[name].key

    def name_of(self, key: str) -> str | None:
        return next((i.name for i in self.infos.values() if i.key == key), None)

    def send(self, key: str, message: fix.Message) -> bool:
        """Hand a message to quickfix: it is stored for resend even if the session is down."""
        try:
            return bool(fix.Session.sendToTarget(message, self._ids[key]))
        except fix.SessionNotFound:
            log.error("fix.session_not_found", session=key)
            return False

    def logged_on(self, key: str) -> bool:
        session = fix.Session.lookupSession(self._ids[key])
        return bool(session is not None and session.isLoggedOn())

    def status(self) -> list[dict[str, Any]]:
        out = []
        for info in self.infos.values():
            session = fix.Session.lookupSession(self._ids[info.key])
            entry: dict[str, Any] = {"name": info.name, "role": info.role, "session": info.key,
                                     "logged_on": False}
            if session is not None:
                entry["logged_on"] = bool(session.isLoggedOn())
                entry["next_sender_seq_num"] = int(session.getExpectedSenderNum())
                entry["next_target_seq_num"] = int(session.getExpectedTargetNum())
            out.append(entry)
        return out
