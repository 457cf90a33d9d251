"""Free loopback ports for the simulators, the fuzz run and the tests.

Port 0 would hand out a port from the kernel's ephemeral range, the same range outgoing
connections draw their source ports from: a quickfix initiator connecting elsewhere could
take the port between our choosing it and the server binding it. Ports are chosen below
that range instead, and never twice in one process.

Several processes that choose ports at once (parallel test workers) would still draw the
same port now and then, and one of them finds it taken when its server restarts.
FIXALLOC_PORT_SLICE="i/n" gives such a process the i-th of n disjoint slices of the range.
"""

from __future__ import annotations

import os
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


def _range() -> tuple[int, int]:
    low, high = _LOW, min(_DEFAULT_HIGH, _ephemeral_start() - 1)
    text = os.environ.get("FIXALLOC_PORT_SLICE", "")
    if not text:
        return low, high
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise RuntimeError(f"FIXALLOC_PORT_SLICE={text!r}: expected i/n, e.g. 0/2") from None
    if not 0 <= index < count:
        raise RuntimeError(f"FIXALLOC_PORT_SLICE={text!r}: i must be in 0..n-1")
    width = (high - low + 1) // count
    return low + index * width, low + (index + 1) * width - 1


def free_port() -> int:
    low, high = _range()
    with _lock:
        for _ in range(1000):
            port = random.randint(low, high)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port between {low} and {high}")
