"""Bytes a peer sends can refuse one message, never stop the daemon.

Before: a Logon with a Latin-1 Username and a wrong password, or a D with Latin-1 in Text,
made the daemon exit 75 (UnicodeEncodeError writing the wire log), and because the OMS
resends the D the daemon died again on every start. Now the wire log keeps exactly the
bytes that crossed the wire, and a message that cannot be taken (too large, over the rate
limit, not recordable) gets a session Reject naming the reason while the session goes on.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.persistence.store import Database
from tests.support.eventually import eventually
from tests.support.harness import (
    OMS_KEY,
    Gateway,
    Ports,
    broker_sim,
    http_get,
    start_daemon,
    stop_daemon,
    write_config,
)
from tests.support.oms_client import d_fields, raw_oms
from tests.support.raw_fix import RawFixClient

pytestmark = pytest.mark.fix


def _alive(proc: subprocess.Popen[bytes], port: int) -> bool:
    return proc.poll() is None and http_get(port, "/healthz")[0] == 200


def test_latin1_logon_and_order_text_do_not_stop_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIXALLOC_TEST_OMS_PW", "s3cret")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, oms_password_env="FIXALLOC_TEST_OMS_PW")
    log = tmp_path / "daemon.log"
    with broker_sim(tmp_path, ports):
        daemon = start_daemon(cfg, log)
        try:
            assert wait_ready_or_oms_down(ports), log.read_text()[-2000:]
            # 1. A Logon with a Latin-1 Username and a wrong password: refused, nothing more.
            intruder = RawFixClient(ports.oms)
            intruder.send("A", [(98, "0"), (108, "30"), (553, b"Jos\xe9"), (554, b"wr\xf6ng")])
            assert eventually(lambda: _logon_stored(cfg), timeout=10)
            intruder.close()
            assert _alive(daemon, ports.http), log.read_text()[-2000:]
            # 2. A D whose Text(58) is Latin-1, from a properly logged-on OMS.
            client = RawFixClient(ports.oms)
            client.send("A", [(98, "0"), (108, "30"), (554, "s3cret")])
            client.receive("A")
            client.seq = 2
            client.send("D", d_fields("LATIN-1", T58=b"caf\xe9 cr\xe8me"))
            er = client.receive("8")
            assert er.get(11) == b"LATIN-1"
            client.close()
            assert _alive(daemon, ports.http)
            assert stop_daemon(daemon) == 0
            # 3. A restart (the OMS would resend) comes up and stays up.
            daemon = start_daemon(cfg, log)
            assert wait_ready_or_oms_down(ports)
            assert _alive(daemon, ports.http)
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    db = Gateway(cfg, ports).db
    try:
        logons = db.wire_messages(session_id=OMS_KEY, direction="in", msg_type="A")
        # Exactly the bytes that crossed the wire, the password's value masked.
        assert b"\x01553=Jos\xe9\x01" in logons[0]["raw"]
        assert b"\x01554=***\x01" in logons[0]["raw"] and b"wr\xf6ng" not in logons[0]["raw"]
        assert "553=Jos\\xe9" in logons[0]["text"]  # the documented display form
        [d] = db.wire_messages(session_id=OMS_KEY, direction="in", msg_type="D")
        assert b"\x0158=caf\xe9 cr\xe8me\x01" in d["raw"]
        assert "EX_" not in log.read_text() and "wire_write_failed" not in log.read_text()
    finally:
        db.dispose()


def wait_ready_or_oms_down(ports: Ports) -> bool:
    """Up and serving: the broker session logs on; the OMS may not be connected yet."""
    return eventually(lambda: http_get(ports.http, "/status")[0] == 200, timeout=60) and \
        eventually(lambda: any(s["logged_on"] for s in
                               http_get(ports.http, "/status")[1]["sessions"]
                               if s["role"] == "broker"), timeout=30)


def _logon_stored(cfg: Path) -> bool:
    db = Gateway(cfg, Ports(0, 0, 0)).db
    try:
        return bool(db.wire_messages(session_id=OMS_KEY, direction="in", msg_type="A"))
    finally:
        db.dispose()


def test_oversized_message_is_refused_with_a_reject_and_kept_as_a_head(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, oms_extra="max_message_bytes = 65536")
    with raw_oms(tmp_path, cfg, ports) as (client, broker):
        client.send("D", d_fields("HUGE-1", T58="x" * 200_000))
        reject = client.receive("3", timeout=20)
        assert reject.get(45) == b"2" and reject.get(373) == b"99"
        assert b"exceeds the limit of 65536 bytes" in reject.get(58)
        client.send("D", d_fields("NEXT-1"))
        assert client.receive("8").get(11) == b"NEXT-1"
        assert [o.cl_ord_id for o in broker.orders.values()] != [] and \
            all(o.qty == 1000 for o in broker.orders.values())
    db = Gateway(cfg, ports).db
    try:
        huge = [m for m in db.wire_messages(session_id=OMS_KEY, direction="in", msg_type="D")
                if m["truncated"]]
        assert len(huge) == 1 and huge[0]["raw_len"] > 200_000 and len(huge[0]["raw"]) == 4096
        assert [e["kind"] for e in db.events("alert.message_too_large")]
        assert db.find_rejection(OMS_KEY, "HUGE-1", huge[0]["recorded_at"].date().isoformat()) \
            is None  # refused at the session level, never an order
    finally:
        db.dispose()


def test_messages_over_the_session_rate_are_refused_one_by_one(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, oms_extra="max_messages_per_second = 2")
    with raw_oms(tmp_path, cfg, ports) as (client, _broker):
        for i in range(12):
            client.send("D", d_fields(f"FLOOD-{i}", T38="100"))
        rejects = []
        answered = []
        deadline = time.monotonic() + 20
        while len(rejects) + len(answered) < 12 and time.monotonic() < deadline:
            msg = client.receive_any(timeout=5)
            if msg.get(35) == b"3":
                rejects.append(msg)
            elif (msg.get(35) == b"8" and msg.get(150) in (b"0", b"8", b"A")
                  and msg.get(11) not in [a.get(11) for a in answered]):
                answered.append(msg)
        assert rejects, "nothing was refused"
        assert all(b"limit of 2 messages per second" in r.get(58) for r in rejects)
        assert len(rejects) + len(answered) == 12


def test_a_message_the_database_refuses_is_rejected_alone(
    tmp_path: Path,
) -> None:
    """A store failure on one message (the database still answering) refuses that message.

    A trigger makes the database refuse one execution report; the broker gets a session
    Reject for it, the daemon stays up and the next fill is applied.
    """
    from decimal import Decimal

    from gateway.fix.sim.broker import FillPlan
    from gateway.fix.sim.oms import BlotterOrder
    from tests.support.harness import running

    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    db = Database(f"sqlite:///{tmp_path / 'state' / 'fixalloc.db'}")
    db.migrate()
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER poison BEFORE INSERT ON broker_reports "
                          "WHEN NEW.exec_id = 'POISON' BEGIN SELECT RAISE(ABORT, 'poison'); END"))
    db.dispose()
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=50)) as (broker, gw, oms):
        oms.send_order(BlotterOrder(cl_ord_id="P-1", book="SMA-CORE", symbol="AAPL",
                                    side="buy", qty=Decimal(10_000), price=Decimal(190)))
        assert oms.wait(lambda: oms.allocation_for("P-1") is not None, 30)
        order = next(iter(broker.orders.values()))
        broker.send_raw_report(order, exec_id="POISON", last_qty=Decimal(0),
                               last_px=Decimal(1))
        assert eventually(lambda: any("could not be recorded" in r for r in broker.rejects),
                          timeout=10)
        assert gw.node.db.events("alert.store_failed")
        assert os.getpid() and http_get(ports.http, "/healthz")[0] == 200


def test_identifier_that_cannot_be_echoed_gets_a_session_reject(tmp_path: Path) -> None:
    """A ClOrdID with bytes that are not UTF-8 could not be answered under its own id."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with raw_oms(tmp_path, cfg, ports) as (client, _broker):
        client.send("D", d_fields(b"C\xe9"))  # type: ignore[arg-type]
        reject = client.receive("3")
        assert (reject.get(371), reject.get(373)) == (b"11", b"5")
        client.send("D", d_fields("NEXT-1"))
        assert client.receive("8").get(11) == b"NEXT-1"
