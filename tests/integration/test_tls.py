"""TLS on both sides, on loopback, with throwaway certificates made by the test.

The OMS session is a TLS acceptor that requires a client certificate signed by the test
CA; the broker session is a TLS initiator that verifies the broker's certificate chain.
A block goes from the OMS to a J at the broker and back over TLS; an OMS presenting a
certificate from another CA, or plain text, never logs on.
"""

from __future__ import annotations

import socket
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from tests.support.certs import Pki, make_pki
from tests.support.eventually import eventually
from tests.support.harness import OMS_KEY, Ports, gateway_in_process, write_config

pytestmark = pytest.mark.fix


def _config(tmp_path: Path, ports: Ports, pki: Pki) -> Path:
    return write_config(
        tmp_path, ports,
        oms_extra=(f'tls = {{ cert_file = "{pki.server_cert}", key_file = "{pki.server_key}", '
                   f'ca_file = "{pki.ca}", require_client_cert = true }}'),
        broker_extra=f'tls = {{ ca_file = "{pki.ca}" }}')


def _broker(tmp_path: Path, ports: Ports, pki: Pki) -> BrokerSimulator:
    return BrokerSimulator(port=ports.broker, state_dir=tmp_path / "broker",
                           plan=FillPlan(fills=3, interval_ms=20),
                           tls={"ServerCertificateFile": str(pki.server_cert),
                                "ServerCertificateKeyFile": str(pki.server_key),
                                "CertificateVerifyLevel": "0"})


def _oms(tmp_path: Path, ports: Ports, cert: Path, key: Path, pki: Pki,
         name: str = "oms") -> OmsSimulator:
    return OmsSimulator(port=ports.oms, state_dir=tmp_path / name,
                        tls={"ClientCertificateFile": str(cert),
                             "ClientCertificateKeyFile": str(key),
                             "CertificationAuthoritiesFile": str(pki.ca)})


def test_block_to_j_over_tls_on_both_sides(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ports = Ports.free()
    cfg = _config(tmp_path, ports, pki)
    broker = _broker(tmp_path, ports, pki)
    broker.start()
    try:
        with gateway_in_process(cfg, ports) as gw:
            oms = _oms(tmp_path, ports, pki.client_cert, pki.client_key, pki)
            oms.start()
            try:
                assert oms.engine.wait_logged_on(30), "the OMS did not log on over TLS"
                assert broker.engine.wait_logged_on(30), "we did not log on to the broker"
                order = BlotterOrder(cl_ord_id="TLS-1", book="SMA-CORE", symbol="AAPL",
                                     side="buy", qty=Decimal(30_000), price=Decimal("190.50"))
                oms.send_order(order)
                assert oms.wait(lambda: oms.allocation_for("TLS-1") is not None, 30)
                # The broker's J goes out first, but the broker may book it after the OMS
                # has read its own copy: wait for it rather than assume the order.
                eventually(lambda: broker.allocations, timeout=30,
                           description="the broker booked its J")
                assert broker.allocations[0].quantity == 30_000
                # What crossed TLS is in the wire log in clear, as for any session.
                inbound = gw.node.db.wire_messages(session_id=OMS_KEY, direction="in",
                                                   msg_type="D")
                assert len(inbound) == 1 and b"\x0111=TLS-1\x01" in inbound[0]["raw"]
            finally:
                oms.stop()
    finally:
        broker.stop()


def test_oms_without_a_certificate_from_our_ca_never_logs_on(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ports = Ports.free()
    cfg = _config(tmp_path, ports, pki)
    broker = _broker(tmp_path, ports, pki)
    broker.start()
    try:
        with gateway_in_process(cfg, ports) as gw:
            stranger = _oms(tmp_path, ports, pki.stranger_cert, pki.stranger_key, pki,
                            name="stranger")
            stranger.start()
            try:
                assert not stranger.engine.wait_logged_on(4)
            finally:
                stranger.stop()
            # Plain text on the TLS port gets no Logon back either.
            with socket.create_connection(("127.0.0.1", ports.oms), timeout=5) as sock:
                sock.sendall(b"8=FIX.4.4\x019=60\x0135=A\x0134=1\x0149=OMS1\x0152=20261129-"
                             b"12:00:00\x0156=FIXALLOC\x0198=0\x01108=30\x0110=000\x01")
                sock.settimeout(3)
                try:
                    data = sock.recv(4096)
                except (TimeoutError, ConnectionResetError):
                    data = b""
                assert b"35=A" not in data
            assert gw.node.db.wire_messages(session_id=OMS_KEY, msg_type="A") == []
    finally:
        broker.stop()
