"""A raw OMS on the gateway's OMS port: block orders built field by field, any bytes allowed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from gateway.fix.sim.broker import BrokerSimulator
from tests.support.harness import Ports, broker_sim, gateway_in_process
from tests.support.raw_fix import RawFixClient


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H:%M:%S.000")


def d_fields(cl_ord_id: str | bytes = "RAW-1", **overrides: str | bytes | None
             ) -> list[tuple[int, str | bytes]]:
    """A valid limit buy of 1,000 AAPL for SMA-CORE; `T<tag>=` overrides or removes (None)."""
    fields: dict[int, str | bytes | None] = {
        11: cl_ord_id, 1: "SMA-CORE", 21: "1", 55: "AAPL", 54: "1", 60: now_stamp(),
        38: "1000", 40: "2", 44: "190"}
    for key, value in overrides.items():
        fields[int(key.lstrip("T"))] = value
    return [(tag, value) for tag, value in fields.items() if value is not None]


@contextmanager
def raw_oms(tmp_path: Path, config: Path, ports: Ports
            ) -> Iterator[tuple[RawFixClient, BrokerSimulator]]:
    """The gateway (in process) with its broker up, and a raw client logged on as OMS1."""
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(config, ports):
        assert broker.engine.wait_logged_on(30)
        client = RawFixClient(ports.oms)
        try:
            client.logon()
            yield client, broker
        finally:
            client.close()
