"""Real components on 127.0.0.1 for integration tests: the gateway, a broker and an OMS.

Nothing is mocked: the gateway runs its real quickfix sessions (in this process, or as a
subprocess for crash tests), and the counterparties are the product's own simulators.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.config import load_config
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import OmsSimulator
from gateway.node import Node
from gateway.persistence.store import Database
from gateway.ports import free_port
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
BROKER_KEY = "FIX.4.4:FIXALLOC->BRKA"
OMS_KEY = "FIX.4.4:FIXALLOC->OMS1"


@dataclass
class Ports:
    oms: int
    broker: int
    http: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def write_config(tmp: Path, ports: Ports, *, database_url: str = "", extra: str = "",
                 oms_password_env: str | None = None, broker_extra: str = "",
                 rules: Path | None = None, http_extra: str = "",
                 refdata_dir: Path | None = None, watch: bool = False, oms_extra: str = "",
                 fix_extra: str = "", gateway_extra: str = "", sessions_extra: str = "") -> Path:
    """The gateway's TOML for one OMS (OMS1) and one broker (BRKA) on these ports.

    `*_extra` strings are TOML lines added to that section; `sessions_extra` may add whole
    [[fix.oms]] / [[fix.brokers]] tables after the two standard sessions.
    """
    db_line = f'database_url = "{database_url}"' if database_url else ""
    oms_pw = f'password_env = "{oms_password_env}"' if oms_password_env else ""
    text = f"""
[gateway]
state_dir = "{tmp / 'state'}"
{db_line}
sqlite_synchronous = "NORMAL"
{gateway_extra}

[http]
port = {ports.http}
{http_extra}

[fix]
data_dictionary = "{ROOT / 'fix_specs' / 'FIX44.xml'}"
reconnect_seconds = 1
heartbeat_seconds = 5
{fix_extra}

[[fix.oms]]
name = "OMS1"
target_comp_id = "OMS1"
port = {ports.oms}
{oms_pw}
{oms_extra}

[[fix.brokers]]
name = "BRKA"
target_comp_id = "BRKA"
port = {ports.broker}
{broker_extra}
{sessions_extra}

[refdata]
securities = "{(refdata_dir or CONFIG) / 'securities.csv'}"
accounts = "{(refdata_dir or CONFIG) / 'accounts.csv'}"
positions = "{(refdata_dir or CONFIG) / 'positions.csv'}"
rules = "{rules or CONFIG / 'rules'}"
watch = {"true" if watch else "false"}

[[books]]
name = "SMA-CORE"
broker = "BRKA"
{extra}
"""
    path = tmp / "fixalloc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def http_get(port: int, path: str, *, method: str = "GET",
             headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    """One request; `body` (JSON-serialisable) is sent as application/json."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=data,
        headers={**(headers or {}), **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read()
            ctype = resp.headers.get("content-type", "")
            return resp.status, json.loads(body) if "json" in ctype else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError):
        return 0, None


@dataclass
class Gateway:
    config_path: Path
    ports: Ports
    node: Node | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Database:
        cfg = load_config(self.config_path)
        return Database(cfg.database_url)


@contextmanager
def broker_sim(tmp: Path, ports: Ports, plan: FillPlan | None = None,
               dictionary: Path | None = None, post_trade: Any = None
               ) -> Iterator[BrokerSimulator]:
    sim = BrokerSimulator(port=ports.broker, state_dir=tmp / "broker", plan=plan,
                          dictionary=dictionary, post_trade=post_trade)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@contextmanager
def oms_sim(tmp: Path, ports: Ports, password: str | None = None, *,
            dictionary: Path | None = None, ack_allocations: bool = False,
            clock: Clock | None = None) -> Iterator[OmsSimulator]:
    sim = OmsSimulator(port=ports.oms, state_dir=tmp / "oms", password=password,
                       dictionary=dictionary, ack_allocations=ack_allocations, clock=clock)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@contextmanager
def gateway_in_process(config_path: Path, ports: Ports, clock: Clock | None = None
                       ) -> Iterator[Gateway]:
    node = Node(load_config(config_path), clock)
    node.start()
    try:
        yield Gateway(config_path, ports, node=node)
    finally:
        node.stop()


@contextmanager
def running(tmp: Path, ports: Ports, config_path: Path, plan: FillPlan | None = None, *,
            dictionary: Path | None = None, post_trade: Any = None
            ) -> Iterator[tuple[BrokerSimulator, Gateway, OmsSimulator]]:
    """Broker simulator, gateway (in process) and OMS simulator, all logged on."""
    with broker_sim(tmp, ports, plan, dictionary, post_trade) as broker, \
            gateway_in_process(config_path, ports) as gw, oms_sim(tmp, ports) as oms:
        assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30), \
            "FIX sessions did not log on"
        yield broker, gw, oms


def start_daemon(config_path: Path, log: Path, *, fault: str | None = None,
                 args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`fixalloc run` as its own process; `fault` names a FIXALLOC_FAULT step to die at;
    `args` are added to the command line (e.g. --clock-start)."""
    out = log.open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FIXALLOC_FAULT", None)
    if fault:
        env["FIXALLOC_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_path),
         "--log-format", "json", *args],
        stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
    )


def stop_daemon(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def wait_ready(port: int, timeout: float = 60) -> bool:
    return bool(eventually(lambda: http_get(port, "/readyz")[0] == 200, timeout=timeout,
                           interval=0.1, description="GET /readyz answered 200"))
