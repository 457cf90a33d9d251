"""The production unit confines the acceptors, runs unprivileged and stops restart loops."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.errors import EXIT_CONFIG

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "fixalloc.service"


def _directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_confines_sockets_and_privileges() -> None:
    """Acceptors bind every interface, so the unit denies all addresses but an allow-list."""
    d = _directives()
    assert d["IPAddressDeny"] == ["any"] and "localhost" in d["IPAddressAllow"]
    assert d["User"] == ["fixalloc"] and d["NoNewPrivileges"] == ["yes"]
    assert d["StateDirectory"] == ["fixalloc"] and d["ProtectSystem"] == ["strict"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    exec_start = d["ExecStart"][0]
    assert "run --config" in exec_start and "--state-dir /var/lib/fixalloc" in exec_start


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze() -> None:
    """systemd parses every directive; the only complaint allowed is the missing binary."""
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                            text=True, check=False)
    problems = [ln for ln in (result.stdout + result.stderr).splitlines()
                if ln.strip() and "is not executable" not in ln]
    assert problems == []
