"""Start-up problems end in one clear line and a precise exit code, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE
from tests.support.harness import ROOT, Ports, write_config

pytestmark = pytest.mark.fix


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(config),
                           "--log-format", "json"], capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT), check=False)


@pytest.mark.parametrize("which", ["oms", "http"])
def test_port_in_use_exits_1_with_the_reason(tmp_path: Path, which: str) -> None:
    """An occupied FIX or HTTP port stops start-up with exit 1 and a one-line reason."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0" if which == "oms" else "127.0.0.1", getattr(ports, which)))
        squatter.listen()
        result = _run(cfg)
    assert result.returncode == EXIT_FAILURE
    assert result.stderr.splitlines()[-1].startswith("fixalloc: could not start:")
    assert "Traceback" not in result.stderr


def test_bad_reference_data_exits_78_naming_file_and_line(tmp_path: Path) -> None:
    """A broken accounts file is a configuration error: exit 78, file:line: reason."""
    accounts = tmp_path / "accounts.csv"
    lines = (ROOT / "config" / "accounts.csv").read_text().splitlines()
    lines[3] = lines[3].replace(",active,", ",sleeping,", 1)
    accounts.write_text("\n".join(lines) + "\n")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    cfg.write_text(cfg.read_text().replace(str(ROOT / "config" / "accounts.csv"), str(accounts)))
    result = _run(cfg)
    assert result.returncode == EXIT_CONFIG
    assert f"{accounts}:4:" in result.stderr and "status" in result.stderr
