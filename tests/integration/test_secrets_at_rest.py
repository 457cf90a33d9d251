"""No file the gateway writes holds a secret another user can read, or a password in clear.

Before: with `password_env` on a broker session, quickfix's FileStore body file held
`554=<password>` in clear, mode 0644 in a 0755 folder when run outside systemd.
"""

from __future__ import annotations

import os
import stat
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    Gateway,
    Ports,
    broker_sim,
    http_get,
    oms_sim,
    start_daemon,
    stop_daemon,
    write_config,
)

pytestmark = pytest.mark.fix

PASSWORD = "hunter2-broker-secret"


def _resent(cfg: Path) -> bool:
    db = Gateway(cfg, Ports(0, 0, 0)).db
    try:
        out = db.wire_messages(session_id=BROKER_KEY, direction="out")
    finally:
        db.dispose()
    return (any(m["msg_type"] == "J" and m["poss_dup"] for m in out)
            and any(m["msg_type"] == "4" and b"\x01123=Y\x01" in m["raw"] for m in out))


def test_store_holds_no_password_and_state_is_private_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIXALLOC_TEST_BRKA_PW", PASSWORD)
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra='password_env = "FIXALLOC_TEST_BRKA_PW"')
    log = tmp_path / "daemon.log"
    old_umask = os.umask(0o022)
    try:
        with broker_sim(tmp_path, ports) as broker, oms_sim(tmp_path, ports) as oms:
            daemon = start_daemon(cfg, log)
            try:
                assert broker.engine.wait_logged_on(60), log.read_text()[-2000:]
                assert oms.engine.wait_logged_on(30)
                oms.send_order(BlotterOrder(cl_ord_id="SEC-1", book="SMA-CORE", symbol="AAPL",
                                            side="buy", qty=Decimal(10_000),
                                            price=Decimal(190)))
                assert oms.wait(lambda: oms.allocation_for("SEC-1") is not None, 30)
                # Resend still works over the masked store: the broker asks for everything
                # from 1; the gateway gap-fills the Logon and resends the J as PossDup.
                request = fix.Message()
                request.getHeader().setField(fix.BeginString("FIX.4.4"))
                request.getHeader().setField(fix.MsgType("2"))
                request.setField(7, "1")
                request.setField(16, "0")
                broker.engine.send(request)
                eventually(lambda: _resent(cfg), timeout=20,
                           description="the J resent from the masked store, Logon gap-filled")
                assert http_get(ports.http, "/healthz")[0] == 200
                assert stop_daemon(daemon) == 0
            finally:
                if daemon.poll() is None:
                    daemon.kill()
    finally:
        os.umask(old_umask)
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    leaks = []
    for path in state.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
        if path.is_file() and PASSWORD.encode() in path.read_bytes():
            leaks.append(path)
    assert leaks == []
    body = next((state / "fix_store" / "brokers").glob("*.body")).read_bytes()
    assert b"\x01554=" + b"*" * len(PASSWORD) + b"\x01" in body
