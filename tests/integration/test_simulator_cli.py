"""`fixalloc sim broker` and `fixalloc sim oms --blotter` as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import ROOT, Ports, gateway_in_process, write_config

pytestmark = pytest.mark.fix


def test_blotter_orders_are_filled_and_allocated_through_the_simulator_commands(
    tmp_path: Path,
) -> None:
    """Two blotter rows become two Js; the OMS command exits 0 once both are allocated."""
    blotter = tmp_path / "blotter.csv"
    blotter.write_text(
        "cl_ord_id,book,symbol,side,qty,ord_type,price,time_in_force\n"
        "BL-1,SMA-CORE,AAPL,buy,40000,2,190.50,0\n"
        "BL-2,SMA-CORE,MSFT,buy,12000,1,,0\n", encoding="utf-8")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    broker = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "broker", "--port", str(ports.broker),
         "--fills", "3", "--interval-ms", "20", "--state-dir", str(tmp_path / "b")],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with gateway_in_process(cfg, ports):
            oms = subprocess.run(
                [sys.executable, "-m", "gateway", "sim", "oms", "--port", str(ports.oms),
                 "--blotter", str(blotter), "--timeout", "60", "--state-dir",
                 str(tmp_path / "o")],
                cwd=str(ROOT), capture_output=True, text=True, timeout=120, check=False)
    finally:
        broker.send_signal(signal.SIGTERM)
        broker_out, _ = broker.communicate(timeout=30)
    assert oms.returncode == 0, oms.stdout + oms.stderr
    j_lines = [ln for ln in oms.stdout.splitlines() if ln.startswith("J ")]
    assert len(j_lines) == 2
    assert any("qty=40000" in ln for ln in j_lines) and any("qty=12000" in ln for ln in j_lines)
    assert oms.stdout.count("exec_type=F") == 6
    assert broker.returncode == 0 and "listening on port" in broker_out
