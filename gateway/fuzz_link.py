"""The fuzzing peers' plumbing: one TCP connection with its threads, and the counters.

A `Link` has a reader thread that frames what the gateway sends and a writer thread that
drains a queue, so a peer never blocks on a send while the gateway waits for it to read.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.fuzz_wire import FrameReader


@dataclass
class PeerStats:
    sent: Counter[str] = field(default_factory=Counter)
    """Messages sent, by template."""
    mutations: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    session_rejects: Counter[str] = field(default_factory=Counter)
    business_rejects: Counter[str] = field(default_factory=Counter)
    reject_samples: dict[str, str] = field(default_factory=dict)
    er_rejected: int = 0
    dont_know: int = 0
    logouts: Counter[str] = field(default_factory=Counter)
    disconnects: int = 0
    logons: int = 0
    gap_fills: int = 0
    resets: int = 0
    stalls: int = 0
    frames_parsed: int = 0
    frames_garbled: int = 0
    fillers: int = 0
    abandoned_links: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "messages_sent": sum(self.sent.values()), "by_template": dict(self.sent),
                "by_mutation": dict(self.mutations), "received": dict(self.received),
                "session_rejects": dict(self.session_rejects),
                "business_rejects": dict(self.business_rejects),
                "reject_samples": dict(self.reject_samples), "er_rejected": self.er_rejected,
                "dont_know": self.dont_know, "logouts": sum(self.logouts.values()),
                "logout_texts": dict(self.logouts.most_common(8)),
                "disconnects": self.disconnects, "logons": self.logons,
                "gap_fills_sent": self.gap_fills, "resets_sent": self.resets,
                "stalls": self.stalls,
                "frames_parsed": self.frames_parsed, "frames_garbled": self.frames_garbled,
                "fillers": self.fillers, "abandoned_links": self.abandoned_links,
                "seconds": self.seconds,
            }


class Link:
    """One TCP connection: a reader thread framing the gateway's messages, a writer thread."""

    def __init__(self, sock: socket.socket, on_frame: Callable[[Link, bytes], None],
                 on_close: Callable[[Link], None], name: str) -> None:
        self.sock = sock
        self.closed = threading.Event()
        self.closed_by_us = False
        self._out: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._frames = FrameReader()
        self._on_frame = on_frame
        self._on_close = on_close
        self._name = name

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True, name=f"fuzz-{self._name}-read").start()
        threading.Thread(target=self._write, daemon=True, name=f"fuzz-{self._name}-write").start()

    def put(self, data: bytes) -> None:
        with self._cond:
            self._out.append(data)
            self._cond.notify()

    def backlog(self) -> int:
        with self._cond:
            return len(self._out)

    def wait_space(self, limit: int = 64, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._out) > limit and not self.closed.is_set():
                if not self._cond.wait(max(0.0, min(0.5, deadline - time.monotonic()))) \
                        and time.monotonic() > deadline:
                    return False
        return not self.closed.is_set()

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._out and not self.closed.is_set():
                    self._cond.wait(0.5)
                if self.closed.is_set():
                    return
                chunk = b"".join(self._out)
                self._out.clear()
                self._cond.notify_all()
            try:
                self.sock.sendall(chunk)
            except OSError:
                self._finish()
                return

    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            for frame in self._frames.feed(data):
                self._on_frame(self, frame)
        self._finish()

    def _finish(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with self._cond:
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._on_close(self)

    def close_gracefully(self, timeout: float = 2.0) -> None:
        """Half-close and wait for the gateway to close its side, then close.

        quickfix's acceptor gives a new connection a session still registered to the old
        one only after sleeping a whole second, so the peer waits for the old connection
        to be gone before it reconnects.
        """
        self.closed_by_us = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.closed.wait(timeout)
        self.close()

    def close(self) -> None:
        self.closed_by_us = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._finish()
