"""FIX bytes for the fuzzer: encode raw fields, and model what quickfix makes of them.

The fuzzer builds messages field by field (any bytes allowed) and needs to know which of
them the gateway's quickfix will frame and parse, so that it can keep its sequence
numbers right while sending garbled bytes. `ShadowParser` is a line-by-line model of
quickfix 1.16's `Parser::readFixMessage` fed with every byte sent on a connection, and
`parses` follows `Message::setString` + `validate` (field syntax, header order, BodyLength,
CheckSum): together they say which frames reach the session and which are dropped as
garbled, without consuming a sequence number.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

SOH = b"\x01"
BEGIN = b"FIX.4.4"

Field = tuple[int | bytes, bytes]
"""A tag (bytes for tags no integer can spell: "00055", "1a") and its raw value."""

DATA_TAGS = frozenset({89, 91, 93, 96, 213, 349, 351, 353, 355, 357, 359, 361, 363, 365,
                       446, 619, 622})
"""Tags of type DATA: quickfix reads their value by the preceding length field."""


def stamp(ts: datetime | None = None) -> bytes:
    return (ts or datetime.now(UTC)).strftime("%Y%m%d-%H:%M:%S.%f")[:-3].encode()


def checksum(data: bytes) -> int:
    return sum(data) % 256


def render(fields: list[Field]) -> bytes:
    return b"".join((tag if isinstance(tag, bytes) else str(tag).encode()) + b"=" + value + SOH
                    for tag, value in fields)


def encode(fields: list[Field], *, begin: bytes = BEGIN, body_length: bytes | None = None,
           check: bytes | None = None) -> bytes:
    """8=, 9= and 10= around `fields`; the length and checksum are right unless given."""
    body = render(fields)
    head = b"8=" + begin + SOH + b"9=" + (body_length if body_length is not None
                                          else str(len(body)).encode()) + SOH
    data = head + body
    return data + b"10=" + (check if check is not None
                            else f"{checksum(data):03d}".encode()) + SOH


def int_convert(raw: bytes) -> int | None:
    """quickfix's IntConvertor: optional '-', digits only, no overflow past int32."""
    text = raw[1:] if raw.startswith(b"-") else raw
    if not text or not text.isdigit() or not text.isascii() or len(text) > 10:
        return None
    value = -int(text) if raw.startswith(b"-") else int(text)
    return value if -(2**31) <= value < 2**31 else None


class ShadowParser:
    """quickfix's Parser::readFixMessage, byte for byte: what frames the peer will see."""

    def __init__(self) -> None:
        self.buf = b""
        self.parse_errors = 0

    def copy(self) -> ShadowParser:
        other = ShadowParser()
        other.buf = self.buf
        return other

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames: list[bytes] = []
        while True:
            frame = self._read()
            if frame is None:
                return frames
            if frame:
                frames.append(frame)

    def _read(self) -> bytes | None:
        """A frame, b"" after a parse error (buffer dropped), None when more is needed."""
        if len(self.buf) < 2:
            return None
        start = self.buf.find(b"8=")
        if start < 0:
            return None
        self.buf = self.buf[start:]
        length_at = self.buf.find(b"\x019=")
        if length_at < 0:
            return None
        length_at += 3
        end = self.buf.find(SOH, length_at)
        if end < 0:
            return None
        length = int_convert(self.buf[length_at:end])
        if length is None or length < 0:
            # MessageParseError: quickfix drops everything buffered (and, in the same
            # read, hands the session the previous message again: see the report).
            self.buf = b""
            self.parse_errors += 1
            return b""
        pos = end + 1 + length
        if len(self.buf) < pos:
            return None
        pos = self.buf.find(b"\x0110=", pos - 1)
        if pos < 0:
            return None
        pos = self.buf.find(SOH, pos + 4)
        if pos < 0:
            return None
        frame, self.buf = self.buf[:pos + 1], self.buf[pos + 1:]
        return frame

    def pending(self) -> bool:
        """A partial frame is buffered: the next bytes sent would be read as part of it."""
        return b"8=" in self.buf

    def completion(self, limit: int = 1 << 20) -> bytes | None:
        """Bytes that end the buffered partial frame as one garbled frame (None: too long)."""
        if not self.pending():
            return b""
        for filler in (b"\x0110=000\x01", b"\x019=0\x0110=000\x01",
                       b"\x01\x019=0\x0110=000\x01"):
            trial = self.copy()
            trial.feed(filler)
            if not trial.pending():
                return filler
        buf = self.buf[self.buf.find(b"8="):]
        at = buf.find(b"\x019=")
        end = buf.find(SOH, at + 3) if at >= 0 else -1
        length = int_convert(buf[at + 3:end]) if end >= 0 else None
        if length is None or length > limit:
            return None
        pad = max(0, end + 1 + length - len(buf))
        filler = b"x" * pad + b"\x0110=000\x01"
        trial = self.copy()
        trial.feed(filler)
        return None if trial.pending() else filler


def split_fields(frame: bytes) -> list[tuple[bytes, bytes]] | None:
    """quickfix's extractField over a frame: (tag, value) pairs, None if it would throw."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(frame):
        eq = frame.find(b"=", pos)
        if eq < 0:
            return None
        tag = int_convert(frame[pos:eq])
        if tag is None:
            return None
        soh = frame.find(SOH, eq + 1)
        if soh < 0 or tag in DATA_TAGS:
            return None  # a DATA field: its length decides; not modelled, call it garbled
        out.append((frame[pos:eq], frame[eq + 1:soh]))
        pos = soh + 1
    return out


def parses(frame: bytes) -> bool:
    """Whether quickfix parses this frame into a Message (else: garbled, dropped)."""
    fields = split_fields(frame)
    if fields is None or len(fields) < 4:
        return False
    tags = [int_convert(t) for t, _ in fields]
    if tags[:3] != [8, 9, 35]:
        return False
    if 10 not in tags:
        return False
    length = int_convert(fields[1][1])
    body = sum(len(t) + len(v) + 2 for (t, v), n in zip(fields, tags, strict=True)
               if n not in (8, 9, 10))
    total = sum(sum(t) + sum(v) + ord("=") + 1 for (t, v), n in zip(fields, tags, strict=True)
                if n != 10)
    check = int_convert(fields[tags.index(10)][1])
    return length == body and check == total % 256


def field(frame: bytes, tag: int) -> bytes | None:
    """The first value of `tag` in a well-formed frame (the gateway's output)."""
    match = re.search(rb"(?:^|\x01)" + str(tag).encode() + rb"=([^\x01]*)\x01", frame)
    return match.group(1) if match else None


class FrameReader:
    """Frames of a well-behaved sender (the gateway) from a byte stream."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while True:
            start = self.buf.find(b"8=")
            if start < 0:
                return out
            self.buf = self.buf[start:]
            at = self.buf.find(b"\x019=")
            end = self.buf.find(SOH, at + 3) if at >= 0 else -1
            if end < 0:
                return out
            length = int_convert(self.buf[at + 3:end])
            if length is None or length < 0:
                self.buf = self.buf[end:]
                continue
            stop = self.buf.find(b"\x0110=", end + length)
            close = self.buf.find(SOH, stop + 4) if stop >= 0 else -1
            if close < 0:
                return out
            out.append(self.buf[:close + 1])
            self.buf = self.buf[close + 1:]
