"""The two fuzzing counterparties: a raw OMS that connects to the gateway's OMSF port, and
a raw broker that listens where the gateway's BRKF session connects; plus the evidence
file writer (the last frames a peer sent, when the daemon crashed or a session stalled).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from gateway.fuzz_link import Link
from gateway.fuzz_peers import FuzzPeer
from gateway.fuzz_templates import BrokerOrder
from gateway.fuzz_wire import field as field_of


class OmsPeer(FuzzPeer):
    """Connects to the gateway's OMSF acceptor port."""

    role = "oms"

    def _open(self, stop: threading.Event) -> bool:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.settimeout(None)
        self._new_link(sock)
        with self.lock:
            self._send_logon()
        return self.logged_on.wait(10)


class BrokerPeer(FuzzPeer):
    """Listens on the port of the gateway's BRKF initiator session; answers its Logon."""

    role = "broker"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self._answered = False
        self._order_ids = 0

    def _open(self, stop: threading.Event) -> bool:
        self.listener.settimeout(1.0)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            with self.lock:
                self._answered = False
                self._new_link(sock)
            return self.logged_on.wait(10)
        return False

    def _on_logon(self, link: Link) -> None:
        with self.lock:
            if link is self.link and not self._answered:
                self._answered = True
                self._send_logon()
        self.logged_on.set()

    def _on_app(self, mtype: str, frame: bytes) -> None:
        ctx = self.ctx
        if mtype == "D":
            cl = field_of(frame, 11) or b""
            qty = (field_of(frame, 38) or b"0").split(b".")[0]
            with ctx.lock:
                if any(o.cl_ord_id == cl for o in ctx.orders[-500:]):
                    return
                self._order_ids += 1
                ctx.orders.append(BrokerOrder(
                    cl_ord_id=cl, order_id=f"FZO-{self._order_ids}".encode(),
                    symbol=field_of(frame, 55) or b"AAPL", side=field_of(frame, 54) or b"1",
                    qty=int(qty) if qty.isdigit() else 100,
                    price=field_of(frame, 44) or b"190"))
                del ctx.orders[:-2000]
        elif mtype == "F":
            with ctx.lock:
                ctx.cancels.append((field_of(frame, 11) or b"", field_of(frame, 41) or b""))
                del ctx.cancels[:-500]

    def close(self) -> None:
        super().close()
        self.listener.close()


def save_frames(peer: FuzzPeer, folder: Path, label: str) -> Path:
    """The peer's last frames as sent (.bin, concatenated) and described one per line (.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = peer.last_frames()
    base = folder / f"{label}-{peer.name}"
    base.with_suffix(".bin").write_bytes(b"".join(f[3] for f in frames))
    lines = [f"seed={peer.seed} peer={peer.name} index={i} template={t} mutations={','.join(k)} "
             f"bytes={len(d)} {d[:400]!r}" for i, t, k, d in frames]
    base.with_suffix(".txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return base.with_suffix(".txt")
