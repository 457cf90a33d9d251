"""Defects in quickfix 1.16.0's socket reader that a peer could reach, fixed by our build.

scripts/patch_quickfix.py patches them before the compile; each test here failed on the
stock build (found by `fixalloc bench fuzz`):

* a frame whose BodyLength(9) is not a number made quickfix process the previous frame of
  the same read a second time (its sequence number then "too low": the session dropped);
* a huge BodyLength, or bytes with no "8=" at all, were buffered without limit before any
  logon: an anonymous client could grow the daemon's memory at will.
"""

from __future__ import annotations

import importlib.metadata
import socket
import time
from pathlib import Path

import pytest
import simplefix

from gateway.fuzz import rss_mb
from tests.support.eventually import eventually
from tests.support.harness import (
    Ports,
    broker_sim,
    http_get,
    start_daemon,
    stop_daemon,
    write_config,
)
from tests.support.oms_client import raw_oms
from tests.support.raw_fix import RawFixClient

pytestmark = pytest.mark.fix


def test_the_installed_quickfix_is_the_patched_build() -> None:
    assert "+fixalloc" in importlib.metadata.version("quickfix")


def _frame(client: RawFixClient, msg_type: str, body: list[tuple[int, str]], *,
           body_length: bytes | None = None) -> bytes:
    msg = simplefix.FixMessage()
    msg.append_pair(8, "FIX.4.4", header=True)
    msg.append_pair(35, msg_type, header=True)
    msg.append_pair(49, client.sender, header=True)
    msg.append_pair(56, client.target, header=True)
    msg.append_pair(34, client.seq, header=True)
    msg.append_utc_timestamp(52, precision=3, header=True)
    for tag, value in body:
        msg.append_pair(tag, value)
    raw: bytes = msg.encode()
    client.seq += 1
    if body_length is not None:
        start = raw.index(b"\x019=") + 3
        raw = raw[:start] + body_length + raw[raw.index(b"\x01", start):]
    return raw


def test_an_unparseable_body_length_drops_that_frame_and_nothing_else(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with raw_oms(tmp_path, cfg, ports) as (client, _broker):
        good = _frame(client, "1", [(112, "FIRST")])
        bad = _frame(client, "1", [(112, "GARBLED")], body_length=b"abc")
        client.send_bytes(good + bad)  # one read: the stock build replayed `good` here
        assert client.receive("0").get(112) == b"FIRST"
        client.seq -= 1  # the garbled frame is dropped unread; its number is used again
        client.send("1", [(112, "AFTER")])
        assert client.receive("0").get(112) == b"AFTER"  # the session is still up
        with pytest.raises(AssertionError):
            client.receive("5", timeout=1)  # and no Logout came


def _pump(port: int, prefix: bytes, mib: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(prefix)
        chunk = b"x" * (1 << 20)
        for _ in range(mib):
            try:
                s.sendall(chunk)
            except OSError:
                return  # dropped by the daemon: as good as bounded


@pytest.mark.parametrize("prefix", [b"8=FIX.4.4\x019=2000000000\x01", b""],
                         ids=["huge-body-length", "no-begin-string"])
def test_an_anonymous_client_cannot_grow_the_daemon(tmp_path: Path, prefix: bytes) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    log = tmp_path / "daemon.log"
    with broker_sim(tmp_path, ports):
        daemon = start_daemon(cfg, log)
        try:
            eventually(lambda: http_get(ports.http, "/healthz")[0] == 200, timeout=60)
            before = rss_mb(daemon.pid)
            assert before is not None
            _pump(ports.oms, prefix, 96)
            time.sleep(1.0)
            after = rss_mb(daemon.pid)
            assert after is not None and after - before < 40, (before, after)
            assert http_get(ports.http, "/healthz")[0] == 200
            client = RawFixClient(ports.oms)  # and a real OMS still logs on
            client.logon()
            client.close()
        finally:
            assert stop_daemon(daemon) == 0, log.read_text()[-2000:]
