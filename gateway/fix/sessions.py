"""Create, start, stop and send on the gateway's FIX sessions.

The OMS side is a ThreadedSocketAcceptor and the broker side a ThreadedSocketInitiator:
each session gets its own thread, so one slow counterparty cannot stall the others.
quickfix acceptors bind every interface (there is no setting to restrict them): the
systemd unit confines them with IPAddressAllow/IPAddressDeny.
"""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import dataclass
from typing import Any

import quickfix as fix
import structlog

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.config import Config
from gateway.fix import allocation_codec, j_layout
from gateway.fix import settings as qf_settings
from gateway.fix.application import GatewayApplication, SessionRole
from gateway.fix.cross_venue import CROSS_NAME, CrossVenue, cross_key
from gateway.fix.desk import DESK_NAME, DeskSession, RecordedSession, desk_key
from gateway.fix.logon_backoff import LogonBackoff
from gateway.fix.store_index import stored_refs
from gateway.fix.store_secrets import body_file
from gateway.fix.wire_log import Refusals, WireLogFactory
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


_HEADER_IDS = (("sender_sub_id", 50), ("sender_location_id", 142), ("target_sub_id", 57),
               ("target_location_id", 143))
_ENGINES: dict[tuple[str, bool], Any] = {
    ("acceptor", False): fix.ThreadedSocketAcceptor,
    ("initiator", False): fix.ThreadedSocketInitiator,
    ("acceptor", True): fix.SSLSocketAcceptor,
    ("initiator", True): fix.SSLSocketInitiator,
}


def session_roles(config: Config) -> dict[str, SessionRole]:
    """Each configured session by its quickfix key, with what the callbacks need to know."""
    fx = config.fix
    roles: dict[str, SessionRole] = {}
    for role, sessions, default_rate in (("oms", fx.oms, fx.oms_max_messages_per_second),
                                         ("broker", fx.brokers,
                                          fx.broker_max_messages_per_second)):
        for s in sessions:
            key = session_key(fx.begin_string, fx.effective(s, "sender_comp_id"),
                              s.target_comp_id)
            rate = (s.max_messages_per_second if s.max_messages_per_second is not None
                    else default_rate)
            roles[key] = SessionRole(
                s.name, role, username=getattr(s, "username", None),
                password_env=s.password_env, max_messages_per_second=rate,
                burst=max(1, int(rate * 2)), send_udfs=bool(fx.effective(s, "send_udfs")),
                header_fields=tuple((tag, getattr(s, attr)) for attr, tag in _HEADER_IDS
                                    if getattr(s, attr)),
                reconnect_seconds=float(getattr(s, "reconnect_seconds", None)
                                        or fx.reconnect_seconds))
    return roles


class FixSessions:
    def __init__(self, config: Config, db: Database, inbox: Inbox, clock: Clock,
                 alerts: Alerts | None = None) -> None:
        self.config = config
        fx = config.fix
        begin = fx.begin_string
        roles = session_roles(config)
        self.infos: dict[str, SessionInfo] = {}
        for key, role in roles.items():
            self.infos[role.name] = SessionInfo(role.name, role.role, key)
        self._ids: dict[str, fix.SessionID] = {
            info.key: fix.SessionID(begin, *info.key.split(":", 1)[1].split("->", 1))
            for info in self.infos.values()
        }
        self._db = db
        self._stored: dict[str, dict[str, Counter[str]]] = {}
        # Orders handed over by people (gateway/fix/desk.py): a session with no socket.
        self.desk = DeskSession(db, clock, desk_key(begin, fx.sender_comp_id),
                                fx.sender_comp_id)
        # The internal crossing venue (gateway/fix/cross_venue.py): no socket either.
        self.cross = CrossVenue(db, clock, cross_key(begin, fx.sender_comp_id),
                                fx.sender_comp_id)
        self._recorded: dict[str, RecordedSession] = {self.desk.key: self.desk,
                                                      self.cross.key: self.cross}
        self._recorded_names = {DESK_NAME: self.desk.key, CROSS_NAME: self.cross.key}
        refusals = Refusals()
        alerts = alerts or Alerts(db, clock)
        self.backoff = LogonBackoff(fx.logon_backoff_max_seconds)
        self.application = GatewayApplication(roles, db, inbox, clock,
                                               config.resolve(config.gateway.secrets_file)
                                               if config.gateway.secrets_file else None,
                                               refusals=refusals, alerts=alerts,
                                               backoff=self.backoff)
        limits = {self.infos[s.name].key: int(fx.effective(s, "max_message_bytes"))
                  for s in fx.all_sessions()}
        self.store_dirs = {
            **{self.infos[s.name].key: config.state_dir / "fix_store" / "oms" for s in fx.oms},
            **{self.infos[s.name].key: config.state_dir / "fix_store" / "brokers"
               for s in fx.brokers}}
        self._log_factory = WireLogFactory(db, clock, refusals=refusals, alerts=alerts,
                                           max_message_bytes=limits, store_dirs=self.store_dirs)
        self._engines: list[Any] = []
        self._keep: list[Any] = []
        # Js are written as text and parsed against the gateway's dictionary when it
        # keeps their groups intact (j_layout says why); otherwise built field by field.
        j_layout.use_dictionary(config.resolve(fx.data_dictionary), allocation_codec.sample_j())
        for spec in qf_settings.engine_specs(config):
            for line in spec.text.splitlines():
                log.info("fix.setting", side=spec.side, tls=spec.tls, setting=line)
            settings = qf_settings.load(spec.text, config.state_dir / spec.filename)
            store = fix.FileStoreFactory(settings)
            # quickfix keeps raw pointers to the settings and store: keep them alive.
            self._keep += [settings, store]
            self._engines.append(_ENGINES[(spec.side, spec.tls)](
                self.application, store, settings, self._log_factory))

    def start(self) -> None:
        for engine in self._engines:
            engine.start()

    def stop(self) -> None:
        """Log out every session and wait for the engines' threads to finish."""
        self.backoff.stop()
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

    def handed_over(self, key: str, msg_type: str, ref_id: str) -> bool:
        """Whether a message about `ref_id` already went to quickfix on this session.

        On the wire (the wire log) or waiting in quickfix's store for the next resend.
        The store is read once, the first time recovery asks, before the sessions start.
        """
        return self.handed_over_count(key, msg_type, ref_id) > 0

    def handed_over_count(self, key: str, msg_type: str, ref_id: str) -> int:
        """How many messages about `ref_id` went to quickfix: on the wire or in its store."""
        on_wire = self._db.sent_count_with_ref(key, msg_type, ref_id)
        if key in self._recorded:
            return on_wire  # recorded as it is sent: the wire log is the whole truth
        if key not in self._stored:
            self._stored[key] = stored_refs(body_file(self.store_dirs[key], key))
        return max(on_wire, self._stored[key].get(msg_type, Counter()).get(ref_id, 0))

    def send_udfs(self, key: str) -> bool:
        if key in self._recorded:
            return True
        return self.application.role(key).send_udfs

    def key_of(self, name: str) -> str:
        if name in self._recorded_names:
            return self._recorded_names[name]
        return self.infos[name].key

    def name_of(self, key: str) -> str | None:
        for name, recorded in self._recorded_names.items():
            if key == recorded:
                return name
        return next((i.name for i in self.infos.values() if i.key == key), None)

    def send(self, key: str, message: fix.Message) -> bool:
        """Hand a message to quickfix: it is stored for resend even if the session is down."""
        if key in self._recorded:
            return self._recorded[key].send(message)
        try:
            return bool(fix.Session.sendToTarget(message, self._ids[key]))
        except fix.SessionNotFound:
            log.error("fix.session_not_found", session=key)
            return False

    def logged_on(self, key: str) -> bool:
        if key in self._recorded:
            return True
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
