"""A broker that refuses our Logon (FIX_ALLOCATION.md scenario 27): backoff, one alert, no
password anywhere.

The broker is a plain socket server that answers every Logon with a Logout "invalid
password" and closes, as a real venue does for a wrong Password(554). The gateway's
initiator (real quickfix) must slow down, reconnect_seconds x 2^(n-1) up to the cap,
instead of retrying every second; raise one `logon_refused` alert with the peer's
reason; and never write the password to the wire log, the FIX store or the log.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import simplefix

from tests.support.eventually import eventually
from tests.support.harness import Ports, gateway_in_process, write_config

pytestmark = pytest.mark.fix

SECRET = "s3cret-Pa55"


class RefusingBroker:
    """Accepts connections, reads one Logon, answers Logout(58=invalid password), closes."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.logons: list[tuple[float, bytes]] = []
        self._seq = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                self._refuse(conn)

    def _refuse(self, conn: socket.socket) -> None:
        parser = simplefix.FixParser()
        conn.settimeout(5)
        logon = None
        while logon is None:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                return
            if not data:
                return
            parser.append_buffer(data)
            logon = parser.get_message()
        self.logons.append((time.monotonic(), logon.encode()))
        out = simplefix.FixMessage()
        out.append_pair(8, "FIX.4.4", header=True)
        out.append_pair(35, "5", header=True)
        out.append_pair(49, "BRKA", header=True)
        out.append_pair(56, "FIXALLOC", header=True)
        out.append_pair(34, self._seq, header=True)
        out.append_utc_timestamp(52, datetime.now(UTC), precision=3, header=True)
        out.append_pair(58, "invalid password")
        self._seq += 1
        conn.sendall(out.encode())
        time.sleep(0.1)  # let the Logout be read before the close

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def test_refused_logon_backs_off_alerts_once_and_never_stores_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BRKA_PASSWORD", SECRET)
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, fix_extra="logon_backoff_max_seconds = 4",
                       broker_extra='username = "fixalloc"\npassword_env = "BRKA_PASSWORD"')
    broker = RefusingBroker(ports.broker)
    try:
        with gateway_in_process(cfg, ports) as gw:
            eventually(lambda: len(broker.logons) >= 5, timeout=40, interval=0.2,
                       description="five logon attempts")
            db = gw.node.db
            alerts = db.events("alert.logon_refused")
            wire = db.wire_messages(direction="in", msg_type="5")
            logons_out = db.wire_messages(direction="out", msg_type="A")
    finally:
        broker.close()
    at = [t for t, _ in broker.logons[:5]]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # 1, 2, 4, 4 seconds (reconnect_seconds = 1, capped at 4); quickfix's own timer adds
    # up to a second to each. Without backoff every gap is about 1 s.
    assert gaps[0] < 2.5 and gaps[1] >= 1.8 and gaps[2] >= 3.5 and gaps[3] >= 3.5, gaps
    assert gaps[3] < 6.5, gaps  # the cap holds
    assert len(alerts) == 1, alerts
    detail = json.loads(alerts[0]["detail_json"])
    assert "invalid password" in detail["reason"]
    assert wire and all(b"invalid password" in m["raw"] for m in wire)
    # The password went out on every Logon, and is nowhere we keep anything.
    assert all(f"554={SECRET}".encode() in raw for _, raw in broker.logons)
    assert logons_out and all(SECRET.encode() not in m["raw"] for m in logons_out)
    state = tmp_path / "state"
    for path in state.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in capsys.readouterr().out
