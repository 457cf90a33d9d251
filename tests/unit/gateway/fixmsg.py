"""Build raw FIX 4.4 strings with simplefix for golden tests (no session involved)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import simplefix

DATA = Path(__file__).resolve().parents[2] / "data" / "fix"


def raw(msg_type: str, body: Sequence[tuple[int, str | bytes]], *, sender: str = "BRKA",
        target: str = "FIXALLOC", seq: int = 2) -> str:
    msg = simplefix.FixMessage()
    msg.append_pair(8, "FIX.4.4", header=True)
    msg.append_pair(35, msg_type, header=True)
    msg.append_pair(49, sender, header=True)
    msg.append_pair(56, target, header=True)
    msg.append_pair(34, seq, header=True)
    msg.append_pair(52, "20261120-15:00:00.000", header=True)
    for tag, value in body:
        msg.append_pair(tag, value)
    # Bytes that are not UTF-8 become surrogate escapes, as the quickfix binding hands them over.
    return msg.encode().decode("utf-8", "surrogateescape")


def pairs(raw_text: str) -> list[tuple[int, str]]:
    parser = simplefix.FixParser()
    parser.append_buffer(raw_text.encode())
    msg = parser.get_message()
    assert msg is not None, "not a complete FIX message"
    return [(int(t), v.decode()) for t, v in msg.pairs]


def golden(name: str) -> list[tuple[int, str]]:
    """A golden file holds one FIX message with '|' separators."""
    text = (DATA / name).read_text(encoding="utf-8").strip().replace("|", "\x01") + "\x01"
    out = []
    for field in text.split("\x01"):
        if field:
            tag, value = field.split("=", 1)
            out.append((int(tag), value))
    return out
