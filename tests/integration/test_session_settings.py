"""Session settings per counterparty: what differs between an OMS and a broker, or two OMSs.

Before, the reset flags were fixed to N, one SenderCompID and one dictionary served every
counterparty, and an OMS whose dictionary lacks our strategy/vehicle UDFs rejected our J.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.clock import NEW_YORK
from gateway.config import load_config
from gateway.fix import settings as qf_settings
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.ports import free_port
from tests.support.eventually import eventually
from tests.support.harness import (
    ROOT,
    Ports,
    broker_sim,
    gateway_in_process,
    write_config,
)
from tests.support.raw_fix import RawFixClient

pytestmark = pytest.mark.fix

STOCK = ROOT / "fix_specs" / "FIX44-stock.xml"


def _second_oms(port: int, stock: Path, window: tuple[str, str] = ("07:00:00", "19:30:00")
                ) -> str:
    return f"""
[[fix.oms]]
name = "OMS2"
target_comp_id = "OMS2"
port = {port}
sender_comp_id = "FIXALLOC2"
data_dictionary = "{stock}"
send_udfs = false
reset_on_logon = true
heartbeat_seconds = 7
start_time = "{window[0]}"
end_time = "{window[1]}"
time_zone = "America/New_York"
validate_user_defined_fields = false
"""


def test_every_session_gets_its_own_settings_block(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, sessions_extra=_second_oms(free_port(), STOCK))
    [acceptor, initiator] = qf_settings.engine_specs(load_config(cfg))
    blocks = acceptor.text.split("[SESSION]")[1:]
    oms1, oms2 = (dict(line.split("=", 1) for line in b.strip().splitlines()) for b in blocks)
    assert (oms1["SenderCompID"], oms2["SenderCompID"]) == ("FIXALLOC", "FIXALLOC2")
    assert oms2["DataDictionary"] == str(STOCK) and oms1["DataDictionary"].endswith("FIX44.xml")
    assert (oms1["ResetOnLogon"], oms2["ResetOnLogon"]) == ("N", "Y")
    assert (oms1["HeartBtInt"], oms2["HeartBtInt"]) == ("5", "7")
    assert oms2["ValidateUserDefinedFields"] == "N"
    # 07:00 and 19:30 New York time, in the UTC quickfix schedules with (EST or EDT).
    assert oms2["StartTime"] in ("11:00:00", "12:00:00")
    assert oms2["EndTime"] in ("23:30:00", "00:30:00")
    assert "BRKA" in initiator.text


def test_oms_without_our_udfs_gets_them_in_alloc_text_and_accepts_the_j(
    tmp_path: Path,
) -> None:
    """The OMS2 dictionary is the stock FIX 4.4 one: no AllocStrategy/AllocVehicle."""
    ports = Ports.free()
    port2 = free_port()
    # A session window around now: 07:00-19:30 New York refused every logon at night.
    now = datetime.now(NEW_YORK)
    window = ((now - timedelta(hours=1)).strftime("%H:%M:%S"),
              (now + timedelta(hours=2)).strftime("%H:%M:%S"))
    cfg = write_config(tmp_path, ports, sessions_extra=_second_oms(port2, STOCK, window))
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports):
        assert broker.engine.wait_logged_on(30)
        oms2 = OmsSimulator(port=port2, state_dir=tmp_path / "oms2", sender="OMS2",
                            target="FIXALLOC2", dictionary=STOCK)
        oms2.start()
        try:
            assert oms2.engine.wait_logged_on(30)
            oms2.send_order(BlotterOrder(cl_ord_id="O2-1", book="SMA-CORE", symbol="AAPL",
                                         side="buy", qty=Decimal(20_000),
                                         price=Decimal(190)))
            j = eventually(lambda: oms2.allocation_for("O2-1"), timeout=30,
                           description="OMS2 received its J")
            assert all(str(line.get("text", "")).startswith("STRAT=") for line in j.lines)
            assert oms2.session_rejects == []
        finally:
            oms2.stop()


def test_reset_on_logon_per_session(tmp_path: Path) -> None:
    """An OMS whose session resets on every Logon starts again at 1 (QuickFIX 2i/2k/2o)."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, oms_extra="reset_on_logon = true")
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports):
        assert broker.engine.wait_logged_on(30)
        for _ in range(2):
            client = RawFixClient(ports.oms)
            try:
                client.send("A", [(98, "0"), (108, "30"), (141, "Y")], seq=1)
                logon = client.receive("A")
                assert logon.get(34) == b"1" and logon.get(141) == b"Y"
            finally:
                client.close()
