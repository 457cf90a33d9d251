"""A raw FIX 4.4 client over a plain socket, for sending what a proper engine never would."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import simplefix


class RawFixClient:
    def __init__(self, port: int, *, sender: str = "OMS1", target: str = "FIXALLOC") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sender = sender
        self.target = target
        self.seq = 1
        self.parser = simplefix.FixParser()

    def send(self, msg_type: str, body: list[tuple[int, str | bytes]], *,
             seq: int | None = None,
             header: list[tuple[int, str | bytes]] | None = None) -> None:
        """Send one message; `header` adds header fields (PossDupFlag, OrigSendingTime...)."""
        msg = simplefix.FixMessage()
        msg.append_pair(8, "FIX.4.4", header=True)
        msg.append_pair(35, msg_type, header=True)
        msg.append_pair(49, self.sender, header=True)
        msg.append_pair(56, self.target, header=True)
        msg.append_pair(34, seq if seq is not None else self.seq, header=True)
        msg.append_utc_timestamp(52, datetime.now(UTC), precision=3, header=True)
        for tag, value in header or []:
            msg.append_pair(tag, value, header=True)
        for tag, value in body:
            msg.append_pair(tag, value)
        self.sock.sendall(msg.encode())
        if seq is None:
            self.seq += 1

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, msg_type: str, timeout: float = 10.0) -> simplefix.FixMessage:
        """The next message of this type; heartbeats and others on the way are skipped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.parser.get_message()
            if msg is not None:
                if msg.get(35) == msg_type.encode():
                    return msg
                continue
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.parser.append_buffer(data)
        raise AssertionError(f"no 35={msg_type} received within {timeout}s")

    def receive_any(self, timeout: float = 10.0) -> simplefix.FixMessage:
        """The next message of any type but Heartbeat/TestRequest."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.parser.get_message()
            if msg is not None:
                if msg.get(35) in (b"0", b"1"):
                    continue
                return msg
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.parser.append_buffer(data)
        raise AssertionError(f"no message received within {timeout}s")

    def logon(self) -> None:
        self.send("A", [(98, "0"), (108, "30")])
        self.receive("A")

    def close(self) -> None:
        self.sock.close()
