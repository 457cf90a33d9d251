"""Free loopback ports for the simulators, the fuzz run and the tests.

Port 0 would hand out a port from the kernel's ephemeral range, the same range outgoing
connections draw their source ports from: a quickfix initiator connecting elsewhere could
take the port between our choosing it and the server binding it. Ports are chosen below
that range instead, and never twice in one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_LOW, _DEFAULT_HIGH = 20_000, 32_767
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_HIGH + 1
    return first


def free_port() -> int:
    high = min(_DEFAULT_HIGH, _ephemeral_start() - 1)
    with _lock:
        for _ in range(1000):
            port = random.randint(_LOW, high)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port between {_LOW} and {high}")
