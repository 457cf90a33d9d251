"""Start-up problems end in one clear line and a precise exit code, never a traceback."""

from __future__ import annotations

import re
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


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "config", "check", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                          check=False)


def test_config_check_runs_the_rulebook_load_that_run_runs(tmp_path: Path) -> None:
    """Before, `config check` said ok for a rules file with a YAML error that `run` refused."""
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "config" / "rules", rules)
    broken = rules / "20-account-restrictions.yaml"
    lines = broken.read_text().splitlines()
    lines.insert(3, "  - id: [unclosed")
    broken.write_text("\n".join(lines) + "\n")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, rules=rules)
    checked, ran = _check(cfg), _run(cfg)
    assert checked.returncode == ran.returncode == EXIT_CONFIG, checked.stdout
    assert re.search(rf"{re.escape(str(broken))}:\d+: ", checked.stderr), checked.stderr


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace('target_comp_id = "BRKA"', 'target_comp_id = "BRKA"\n'
                         'data_dictionary = "/nonexistent/FIX44.xml"'),
     "data dictionary /nonexistent/FIX44.xml not found"),
    (lambda t: t.replace('target_comp_id = "BRKA"', 'target_comp_id = "BRKA"\n'
                         'password_env = "FIXALLOC_TEST_UNSET_SECRET"'),
     "secret FIXALLOC_TEST_UNSET_SECRET is not set"),
    (lambda t: t.replace('target_comp_id = "OMS1"', 'target_comp_id = "OMS1"\n'
                         'tls = { cert_file = "/nonexistent/cert.pem" }'),
     "tls.cert_file /nonexistent/cert.pem not found"),
])
def test_config_check_refuses_what_run_would_refuse(
    tmp_path: Path, edit: object, expected: str
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    cfg.write_text(edit(cfg.read_text()))  # type: ignore[operator]
    checked = _check(cfg)
    assert checked.returncode == EXIT_CONFIG
    assert expected in checked.stderr


def test_config_check_says_ok_for_the_shipped_config() -> None:
    checked = _check(ROOT / "config" / "fixalloc.toml")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok:") and "FIX sessions" in checked.stdout
