"""Bad input on the OMS session gets a precise answer, and the daemon keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.fix.sim.broker import BrokerSimulator
from tests.support.harness import Ports, broker_sim, gateway_in_process, http_get, write_config
from tests.support.oms_client import d_fields
from tests.support.raw_fix import RawFixClient

pytestmark = pytest.mark.fix

GOOD_D = d_fields("RAW-1")


@contextmanager
def _raw_oms(tmp_path: Path) -> Iterator[tuple[RawFixClient, BrokerSimulator, Ports]]:
    """The gateway with its broker up, and a raw client logged on to the OMS port."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports):
        assert broker.engine.wait_logged_on(30)
        client = RawFixClient(ports.oms)
        try:
            client.logon()
            yield client, broker, ports
        finally:
            client.close()


def _without(tag: int) -> list[tuple[int, str]]:
    return [(t, v) for t, v in GOOD_D if t != tag]


def _with(tag: int, value: str) -> list[tuple[int, str]]:
    return [(t, value if t == tag else v) for t, v in GOOD_D]


@pytest.mark.parametrize(("body", "ref_tag", "reason"), [
    (_without(11), "11", "1"),          # ClOrdID missing: required by the dictionary
    (_with(38, "lots"), "38", "6"),     # OrderQty not a number: incorrect data format
    (_with(38, "1e23"), "38", "6"),     # an exponent is not FIX float syntax
    (_with(54, "Z"), "54", "5"),        # Side out of range
    ([*GOOD_D, (9999, "x")], "9999", "0"),  # undefined tag -> invalid tag number
])
def test_malformed_order_gets_session_reject_naming_the_tag(
    tmp_path: Path, body: list[tuple[int, str]], ref_tag: str, reason: str
) -> None:
    """Reject(35=3) carries RefTagID and SessionRejectReason; a valid D still works after."""
    with _raw_oms(tmp_path) as (client, _broker, _ports):
        client.send("D", body)
        reject = client.receive("3")
        assert reject.get(371) == ref_tag.encode()
        assert reject.get(373) == reason.encode()
        assert reject.get(372) == b"D"
        client.send("D", GOOD_D)
        er = client.receive("8")
        assert er.get(11) == b"RAW-1" and er.get(39) in (b"0", b"A", b"1", b"2")


@pytest.mark.parametrize(("body", "text"), [
    (_without(1), "Account(1): required tag missing"),          # no book
    (_with(54, "6"), "Side(54): unsupported side '6'"),         # sell short exempt: not ours
    (_without(44), "Price(44) is required for a limit order"),
    (_with(38, "-5"), "OrderQty(38) must be positive, was -5"),
])
def test_order_we_cannot_act_on_gets_its_own_reject(
    tmp_path: Path, body: list[tuple[int, str]], text: str
) -> None:
    """A D that passes the dictionary but not our rules gets ER 39=8 with a precise Text."""
    with _raw_oms(tmp_path) as (client, broker, _ports):
        client.send("D", body)
        er = client.receive("8")
        assert (er.get(11), er.get(39), er.get(150)) == (b"RAW-1", b"8", b"8")
        assert er.get(58) == text.encode()
        assert broker.orders == {}


def test_garbage_bytes_and_unknown_message_types_do_not_stop_the_daemon(tmp_path: Path) -> None:
    """Garbled bytes are ignored, an unsupported type gets 35=j, and the gateway stays healthy."""
    with _raw_oms(tmp_path) as (client, _broker, ports):
        client.send_bytes(b"8=FIX.4.4\x019=5\x0135=D\x0110=000\x01garbage\x00\xff")
        client.send("E", [(66, "LIST-1"), (394, "1"), (68, "1"), (73, "0")])  # NewOrderList
        reject = client.receive("j")
        assert reject.get(372) == b"E" and reject.get(380) == b"3"
        client.send("D", GOOD_D)
        assert client.receive("8").get(11) == b"RAW-1"
        assert http_get(ports.http, "/healthz")[0] == 200
