"""What the HTTP-driven demo scenarios share: the daemon (`fixalloc run`) with a simulated
broker and OMS on 127.0.0.1, users with API tokens, and calls to the HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.demo import DemoFailed, stop_daemon
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import OmsSimulator
from gateway.persistence.store import Database


def api_call(port: int, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One request to the daemon's API (POST when there is a body); (0, None) if down."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method="GET" if data is None else "POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError):
        return 0, None


def demo_users(url: str, people: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Users with one role and an API token each, as `fixalloc users add` and `users token`
    make them."""
    from gateway.auth.users import UserStore

    db = Database(url)
    try:
        db.migrate()
        users = UserStore(db)
        tokens = {}
        for name, role in people:
            if users.get(name) is None:
                users.add(name, f"{name}-demo-password", [role], actor="demo")
            tokens[name] = users.create_token(name, "demo", actor="demo")
        return tokens
    finally:
        db.dispose()


@dataclass
class Stack:
    broker: BrokerSimulator
    oms: OmsSimulator
    daemon: subprocess.Popen[bytes]
    http_port: int


@contextmanager
def demo_stack(state: Path, cfg: Path, *, broker_port: int, oms_port: int, http_port: int,
               plan: FillPlan) -> Iterator[Stack]:
    """Broker simulator, daemon and OMS simulator, every session logged on; all stopped
    (the daemon by SIGTERM, so it drains) when the block ends."""
    broker = BrokerSimulator(port=broker_port, state_dir=state / "sim-broker", plan=plan)
    broker.start()
    log_file = (state / "fixalloc.log").open("w", encoding="utf-8")
    daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--log-format", "json"],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=str(state),
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    oms = OmsSimulator(port=oms_port, state_dir=state / "sim-oms")
    try:
        if not wait_for(lambda: daemon.poll() is not None
                        or api_call(http_port, "/readyz", "")[0] in (200, 503), 60) \
                or daemon.poll() is not None:
            raise DemoFailed(f"daemon did not start; see {log_file.name}")
        oms.start()
        if not wait_for(lambda: api_call(http_port, "/readyz", "")[0] == 200, 30):
            raise DemoFailed("sessions did not log on within 30 s")
        yield Stack(broker, oms, daemon, http_port)
    finally:
        stop_daemon(daemon)
        oms.stop()
        broker.stop()
        log_file.close()
