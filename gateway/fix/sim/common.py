"""Shared plumbing for the simulators: settings, start/stop, waiting for logon."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import quickfix as fix

from gateway.fix import settings as qf_settings

POSS_DUP_FLAG, SENDING_TIME, ORIG_SENDING_TIME = 43, 52, 122
DEFAULT_DICTIONARY = Path(__file__).resolve().parents[3] / "fix_specs" / "FIX44.xml"


class SimEngine:
    """One quickfix engine (acceptor or initiator) with a single session."""

    def __init__(self, app: fix.Application, *, role: str, sender: str, target: str,
                 port: int, host: str = "127.0.0.1", state_dir: Path,
                 dictionary: Path | None = None, heartbeat: int = 30,
                 reconnect: int = 1, tls: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None) -> None:
        defaults = qf_settings.common_defaults(
            connection_type=role, store_dir=state_dir / "store",
            dictionary=dictionary or DEFAULT_DICTIONARY, sender_comp_id=sender,
            heartbeat=heartbeat)
        # quickfix SSL settings (ServerCertificateFile, CertificationAuthoritiesFile, ...)
        # and any other engine-wide keys a test needs (ResetOnLogon, ...).
        defaults.update(tls or {})
        defaults.update(extra or {})
        session: dict[str, Any] = {"BeginString": "FIX.4.4", "TargetCompID": target}
        if role == "acceptor":
            session["SocketAcceptPort"] = port
        else:
            defaults["ReconnectInterval"] = reconnect
            session["SocketConnectHost"] = host
            session["SocketConnectPort"] = port
        text = qf_settings.render(defaults, [session])
        self.settings = qf_settings.load(text, state_dir / f"{role}.cfg")
        self.store = fix.FileStoreFactory(self.settings)
        if tls:
            cls = fix.SSLSocketAcceptor if role == "acceptor" else fix.SSLSocketInitiator
        else:
            cls = fix.ThreadedSocketAcceptor if role == "acceptor" else fix.ThreadedSocketInitiator
        self.engine = cls(app, self.store, self.settings)
        self.session_id = fix.SessionID("FIX.4.4", sender, target)
        self.logged_on = threading.Event()

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        """Stop and destroy the engine so its sessions leave quickfix's global registry."""
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
            gc.collect()

    def send(self, message: fix.Message) -> bool:
        return bool(fix.Session.sendToTarget(message, self.session_id))

    def wait_logged_on(self, timeout: float = 30.0) -> bool:
        return self.logged_on.wait(timeout)

    def message_counts(self) -> tuple[int, int]:
        """(sent, received) messages on this session, admin included, from sequence numbers."""
        session = fix.Session.lookupSession(self.session_id)
        if session is None:
            return (0, 0)
        return (int(session.getExpectedSenderNum()) - 1, int(session.getExpectedTargetNum()) - 1)

    def is_logged_on(self) -> bool:
        session = fix.Session.lookupSession(self.session_id)
        return bool(session is not None and session.isLoggedOn())


class SimApplication(fix.Application):  # type: ignore[misc]
    """What both simulators share: logon tracking, event reporting, a guarded fromApp.

    A simulator must never take its process down: any non-FIX exception in a callback is
    reported through `on_message("error", ...)` instead of escaping to the binding.
    """

    engine: SimEngine

    def __init__(self, on_message: Callable[[str, Any], None] | None) -> None:
        super().__init__()
        self._on_message = on_message or (lambda kind, payload: None)
        self._repeat = threading.local()

    def send_repeat(self, message: fix.Message, *, flag: int = POSS_DUP_FLAG) -> bool:
        """Send a message again under a new MsgSeqNum with PossDupFlag=Y (and
        OrigSendingTime = its SendingTime) or PossResend=Y.

        quickfix's Session::send removes PossDupFlag and OrigSendingTime from whatever an
        application sends; they are put back in toApp, which quickfix calls on this thread
        just before it serialises the message.
        """
        header = message.getHeader()
        orig = header.getField(SENDING_TIME) if header.isSetField(SENDING_TIME) else None
        self._repeat.mark = (flag, orig)
        try:
            return self.engine.send(message)
        finally:
            self._repeat.mark = None

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()

    def onCreate(self, session_id: fix.SessionID) -> None:
        return None

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.engine.logged_on.set()
        self._on_message("logon", session_id.toString())

    def onLogout(self, session_id: fix.SessionID) -> None:
        self.engine.logged_on.clear()
        self._on_message("logout", session_id.toString())

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        return None

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        return None

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        mark = getattr(self._repeat, "mark", None)
        if mark is not None:
            flag, orig = mark
            header = message.getHeader()
            header.setField(flag, "Y")
            if flag == POSS_DUP_FLAG:
                header.setField(ORIG_SENDING_TIME, orig or header.getField(SENDING_TIME))

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            self.on_app_message(str(message.getHeader().getField(35)), message)
        except (fix.UnsupportedMessageType, fix.FieldNotFound, fix.IncorrectTagValue):
            raise
        except Exception as exc:
            # A simulator must never take its process down: report and carry on.
            self._on_message("error", repr(exc))

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        raise fix.UnsupportedMessageType()


def wait_for(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
