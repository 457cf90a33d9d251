"""FIX session rules on a repeat or a stale message (FIX_ALLOCATION.md scenario 26).

A raw client logged on as the OMS sends what a careful engine never would: a PossDup
repeat without OrigSendingTime(122), one whose OrigSendingTime is later than its
SendingTime, and a message whose MsgSeqNum is below the expected one without PossDup.
Each must be answered at the session level and none may reach the dispatcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import simplefix

from tests.support.harness import Gateway, Ports, broker_sim, gateway_in_process, write_config
from tests.support.oms_client import d_fields
from tests.support.raw_fix import RawFixClient

pytestmark = pytest.mark.fix


@contextmanager
def _oms(tmp_path: Path) -> Iterator[tuple[RawFixClient, Gateway]]:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports) as gw:
        assert broker.engine.wait_logged_on(30)
        client = RawFixClient(ports.oms)
        try:
            client.logon()
            yield client, gw
        finally:
            client.close()


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def _cl_ord_ids(gw: Gateway) -> list[str]:
    return [o["oms_cl_ord_id"] for o in gw.node.db.load_orders()]


def _disconnected(client: RawFixClient, timeout: float = 10.0) -> bool:
    """True once the peer closed the socket (anything still buffered is read and dropped)."""
    client.sock.settimeout(timeout)
    try:
        while client.sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        return False
    return True


def _reject(msg: simplefix.FixMessage) -> tuple[bytes | None, bytes | None, bytes | None]:
    return msg.get(45), msg.get(373), msg.get(371)


def test_possdup_without_orig_sending_time_is_rejected_373_1(tmp_path: Path) -> None:
    with _oms(tmp_path) as (client, gw):
        client.send("D", d_fields("S26-A"))
        assert client.receive("8").get(11) == b"S26-A"
        repeat_seq = client.seq - 1
        client.send("D", d_fields("S26-A-REPEAT"), seq=repeat_seq, header=[(43, "Y")])
        reject = client.receive("3")
        assert _reject(reject) == (str(repeat_seq).encode(), b"1", b"122")
        # The session is still up: the next order is routed.
        client.send("D", d_fields("S26-A2"))
        assert client.receive("8").get(11) == b"S26-A2"
        assert "S26-A-REPEAT" not in _cl_ord_ids(gw)


def test_orig_sending_time_after_sending_time_is_rejected_373_10_and_logged_out(
    tmp_path: Path
) -> None:
    with _oms(tmp_path) as (client, gw):
        client.send("D", d_fields("S26-B"))
        assert client.receive("8").get(11) == b"S26-B"
        later = _stamp(datetime.now(UTC) + timedelta(minutes=5))
        client.send("D", d_fields("S26-B-REPEAT"), seq=client.seq - 1,
                    header=[(43, "Y"), (122, later)])
        reject = client.receive("3")
        assert reject.get(373) == b"10"
        client.receive("5")
        assert "S26-B-REPEAT" not in _cl_ord_ids(gw)


def test_seq_too_low_without_possdup_logs_out_disconnects_and_processes_nothing(
    tmp_path: Path
) -> None:
    with _oms(tmp_path) as (client, gw):
        client.send("D", d_fields("S26-C"))
        assert client.receive("8").get(11) == b"S26-C"
        client.send("D", d_fields("S26-C-LOW"), seq=client.seq - 1)
        logout = client.receive("5")
        assert b"MsgSeqNum too low" in (logout.get(58) or b"")
        assert _disconnected(client)
        assert _cl_ord_ids(gw) == ["S26-C"]
        stored = gw.node.db.wire_messages(direction="in", msg_type="D")
        # The stale D is kept in the wire log for the audit, but nothing acted on it.
        assert any(b"S26-C-LOW" in m["raw"] for m in stored)


def _ers_for(client: RawFixClient, wanted: set[bytes], timeout: float = 15.0) -> set[bytes]:
    """ClOrdIDs of the ERs received until every wanted one came (or the time ran out)."""
    seen: set[bytes] = set()
    try:
        while not wanted <= seen:
            seen.add(client.receive("8", timeout=timeout).get(11) or b"")
    except AssertionError:
        pass
    return seen


def test_sequence_gap_is_filled_by_resend_and_gap_fill_and_applied_once(tmp_path: Path) -> None:
    """Scenario 25: a gap draws ResendRequest(7=n, 16=0); the resent D (43=Y, 122) and a
    GapFill close it; a second repeat of the resent D changes nothing."""
    with _oms(tmp_path) as (client, gw):
        first_gap = client.seq
        sent_at = _stamp(datetime.now(UTC))
        client.send("D", d_fields("S25-B"), seq=first_gap + 1)
        resend = client.receive("2")
        assert (resend.get(7), resend.get(16)) == (str(first_gap).encode(), b"0")
        client.send("D", d_fields("S25-A"), seq=first_gap, header=[(43, "Y"), (122, sent_at)])
        assert {b"S25-A", b"S25-B"} <= _ers_for(client, {b"S25-A", b"S25-B"})

        # The same resent D once more: below the expected number with PossDup, ignored.
        client.send("D", d_fields("S25-A"), seq=first_gap, header=[(43, "Y"), (122, sent_at)])
        # A second gap, this time standing for admin messages: closed by a GapFill.
        client.seq = first_gap + 2
        client.send("D", d_fields("S25-C"), seq=client.seq + 2)
        resend = client.receive("2")
        assert (resend.get(7), resend.get(16)) == (str(client.seq).encode(), b"0")
        client.send("4", [(123, "Y"), (36, str(client.seq + 2))], seq=client.seq,
                    header=[(43, "Y"), (122, _stamp(datetime.now(UTC)))])
        assert b"S25-C" in _ers_for(client, {b"S25-C"})
        ids = _cl_ord_ids(gw)
        assert sorted(ids) == ["S25-A", "S25-B", "S25-C"], ids
