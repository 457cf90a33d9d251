"""A throwaway PostgreSQL cluster for the test run: initdb in a temp dir, 127.0.0.1, a free port.

The server refuses to run as root, so as root the cluster is created and started as the
`postgres` system user that Debian's package creates. Nothing is left behind: the cluster
is stopped and its directory removed at the end of the session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.ports import free_port
from tests.support.eventually import eventually


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(f"{name} not found: install the postgresql package")
    return candidates[-1]


def _run_as(user: str | None, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL for a fresh database on a private PostgreSQL server."""
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="fixalloc-pg-"))
    data = root / "data"
    if user:
        shutil.chown(root, user=user)
        os.chmod(root, 0o700)
    port = free_port()
    _run_as(user, [_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "fixalloc", "-E", "UTF8"])
    log = root / "server.log"
    _run_as(
        user,
        [
            _bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off",
            "start",
        ],
    )
    try:
        url = f"postgresql+psycopg://fixalloc@127.0.0.1:{port}/postgres"

        def accepting() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        eventually(accepting, timeout=30, interval=0.1,
                   description=f"the test PostgreSQL server accepts on port {port}")
        yield url
    finally:
        subprocess.run(
            (["runuser", "-u", user, "--"] if user else [])
            + [_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database on the test server and return its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
