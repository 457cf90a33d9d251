"""Seeded mutations of a FIX message: field values, structure, then framing.

`Mutator.mutate` takes the header and body fields of a valid message and returns the
bytes to send with the names of the mutations applied. About one message in seven is
sent as it is; the rest get one to three field mutations (random bytes, very long values,
drop, duplicate, reorder, bad group counts, wrong types, edge decimals, empty values,
unknown tags, header damage), encoded with a correct BodyLength and CheckSum so they pass
the garble check; and about one in seven gets a framing mutation on top (truncation,
wrong BodyLength, wrong CheckSum, another BeginString, garbage in front) that quickfix
drops before the session.
"""

from __future__ import annotations

import random

from gateway.fuzz_wire import SOH, Field, encode, render

NUM_TAGS = frozenset({6, 7, 14, 16, 31, 32, 36, 38, 44, 45, 53, 80, 87, 88, 98, 102, 103,
                      108, 118, 151, 371, 373, 380, 381, 467, 626, 665, 666, 773, 776,
                      857, 863})
TIME_TAGS = frozenset({52, 60, 122})
DATE_TAGS = frozenset({75})
CHAR_TAGS = frozenset({21, 39, 40, 43, 54, 59, 71, 123, 127, 141, 150, 434, 528})
GROUP_TAGS = frozenset({73, 78, 124, 453, 539, 862})

BAD_NUMBERS = (
    b"abc", b"12a", b"1e5", b"1E+400", b"-1", b"0", b"9" * 40, b"1.5.5", b"NaN", b"Infinity",
    b" 100", b"100 ", b"+100", b".", b"-", b"0x10", "\u0661\u0660\u0660".encode(), b"1_000",
    b"0" * 25 + b"1", b"-0", b"1" + b"0" * 29, b"0." + b"0" * 40 + b"1", b"4294967296",
    b"2147483648", b"-9223372036854775809", b"1e-7", b"100.", b"1,000", b"\xef\xbc\x91",
)
EDGE_NUMBERS = (
    b"1" + b"0" * 29, b"9" * 30, b"-" + b"9" * 29, b"0." + b"0" * 27 + b"1",
    b"9" * 26 + b".999", b"99999999999999999999.9999999", b"0.0001", b"0.00001", b"1.00005",
    b"-0.0", b"2147483647", b"9223372036854775807", b"18446744073709551616", b"00000",
)
"""FIX decimals the gateway's syntax check lets through (at most 30 characters, no
exponent) that stress Decimal arithmetic: more digits than the 28 of the default context,
values below the 4-decimal quantum, integer limits."""
BAD_TIMES = (b"20261399-25:61:61", b"2026", b"20260101-00:00:00.0000000000",
             b"99991231-23:59:59", b"00000000-00:00:00", b"20260101T000000", b"now",
             b"20270229-12:00:00", b"19700101-00:00:00", b"20260101-00:00:60.999")
BAD_DATES = (b"2026-01-01", b"20261340", b"99999999", b"2026010", b"abcdefgh", b"00000000",
             b"20260230", b"-2026010")
BAD_CHARS = (b"ZZ", b"\x00", "\u00e9".encode(), b"9", b"a", b" ", b"11", b"\x7f", b"\xff")
BAD_STRINGS = (b" ", b"\x7f", b"X" * 65, b"a\tb", b"\x1b[31mred", "\u6f22\u5b57".encode(),
               b"\xff\xfe", b"~", b"FZD-1~C1", b"\xc3\x28", b"\xed\xa0\x80", b"%s%n%x")
UNKNOWN_TAGS: tuple[int | bytes, ...] = (9999, 5000, 20101, 20102, 20999, 1000000, 2147483647,
                                          b"2147483648", b"0", b"-5", b"00055", b"1a", 58, 11)
BAD_GROUP_COUNTS = (b"0", b"-1", b"999999", b"abc", b"", b"2147483647", b"1.5")

FIELD_MUTATIONS: dict[str, float] = {
    "random_bytes": 25, "long_value": 6, "drop_field": 10, "duplicate_field": 8,
    "reorder_fields": 8, "bad_group_count": 8, "wrong_type": 20, "empty_value": 5,
    "unknown_tag": 6, "header_field": 3, "edge_number": 6,
}
FRAMING_MUTATIONS: dict[str, float] = {
    "truncate": 28, "bad_body_length": 26, "bad_checksum": 26, "garbage_before": 16,
    "bad_begin_string": 4,
}


def _choose(rng: random.Random, weights: dict[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


class Mutator:
    """Applies mutations with a caller-supplied rng; counts the byte values it has sent."""

    def __init__(self, *, valid_share: float = 0.15, framing_share: float = 0.14,
                 header_mutations: bool = True) -> None:
        """`header_mutations=False` makes damage to the standard header (which ends the
        session: CompIDs, SendingTime, BeginString) rare, for a peer whose reconnect is
        slow (the broker waits for the gateway's ReconnectInterval)."""
        self.valid_share = valid_share
        self.framing_share = framing_share
        self.field_weights = dict(FIELD_MUTATIONS)
        self.framing_weights = dict(FRAMING_MUTATIONS)
        self.header_share = 0.08
        if not header_mutations:
            self.field_weights["header_field"] = 0.3
            self.framing_weights["bad_begin_string"] = 1
            self.header_share = 0.01
        self.byte_values: set[int] = set()

    def mutate(self, rng: random.Random, header: list[Field], body: list[Field]
               ) -> tuple[bytes, list[str]]:
        fields = header + body
        kinds: list[str] = []
        if rng.random() >= self.valid_share:
            for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
                kind = _choose(rng, self.field_weights)
                if len(fields) > 2:
                    getattr(self, kind)(rng, fields, min(len(header), len(fields) - 1))
                kinds.append(kind)
        if rng.random() < self.framing_share:
            kind = _choose(rng, self.framing_weights)
            kinds.append(kind)
            return getattr(self, kind)(rng, fields), kinds
        return encode(fields), kinds

    # -- field mutations (in place; header fields are the first `hdr`) --------------------

    @staticmethod
    def _body_index(rng: random.Random, fields: list[Field], hdr: int) -> int:
        if len(fields) <= hdr:
            return len(fields) - 1
        return rng.randrange(hdr, len(fields))

    def _random_value(self, rng: random.Random, size: int) -> bytes:
        value = bytearray(rng.randrange(256) for _ in range(size))
        cursor = rng.randrange(256)
        for step in range(3):  # and a run of three consecutive byte values
            value.insert(rng.randrange(len(value) + 1), (cursor + step) % 256)
        self.byte_values.update(value)
        return bytes(value)

    def random_bytes(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        i = rng.randrange(1, len(fields)) if rng.random() < self.header_share else \
            self._body_index(rng, fields, hdr)
        fields[i] = (fields[i][0], self._random_value(rng, rng.randint(1, 40)))

    def long_value(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        i = self._body_index(rng, fields, hdr)
        size = rng.choice((300, 1000, 4096, 20_000, 66_000, 70_000, 150_000))
        tag = fields[i][0]
        unit = b"9" if tag in NUM_TAGS or tag in GROUP_TAGS else rng.choice(
            (b"A", b"\xe9", b"\xf0\x9f\x92\xa5", b"ab"))
        fields[i] = (tag, (unit * (size // len(unit) + 1))[:size])

    def drop_field(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        i = rng.randrange(1, len(fields)) if rng.random() < self.header_share else \
            self._body_index(rng, fields, hdr)
        if len(fields) > 1:
            del fields[i]

    def duplicate_field(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        i = self._body_index(rng, fields, hdr)
        copy = fields[i]
        if rng.random() < 0.5:
            copy = (copy[0], self._random_value(rng, 3) if rng.random() < 0.3 else b"X" + copy[1])
        fields.insert(rng.randrange(hdr, len(fields) + 1), copy)

    def reorder_fields(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        body = fields[hdr:]
        way = rng.random()
        if way < 0.4:
            rng.shuffle(body)
            fields[hdr:] = body
        elif way < 0.7 and len(fields) > hdr + 1:
            a, b = rng.randrange(hdr, len(fields)), rng.randrange(hdr, len(fields))
            fields[a], fields[b] = fields[b], fields[a]
        elif way < 0.85 and len(fields) > hdr:
            # a body field into the header, or a header field into the body
            moved = fields.pop(rng.randrange(hdr, len(fields)))
            fields.insert(rng.randrange(1, hdr), moved)
        else:
            moved = fields.pop(rng.randrange(1, hdr))
            fields.insert(rng.randrange(hdr - 1, len(fields) + 1), moved)

    def bad_group_count(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        groups = [i for i, (tag, _) in enumerate(fields) if tag in GROUP_TAGS]
        if groups and rng.random() < 0.8:
            i = rng.choice(groups)
            raw = fields[i][1]
            count = int(raw) if raw.isdigit() and len(raw) < 9 else 1
            value = rng.choice((str(count + 1).encode(), str(max(0, count - 1)).encode(),
                                *BAD_GROUP_COUNTS))
            fields[i] = (fields[i][0], value)
            if rng.random() < 0.3:  # an entry more than counted, or an entry cut short
                fields.insert(i + 1, (79, b"FZ0003") if fields[i][0] == 78 else (11, b"X"))
            return
        tag = rng.choice((78, 453, 73, 539))
        entries: dict[int, list[Field]] = {78: [(79, b"FZ0001"), (80, b"100")],
                              453: [(448, b"PTY"), (447, b"D"), (452, b"1")],
                              73: [(11, b"FZD-1")], 539: [(524, b"X")]}
        entry = entries[tag]
        n = rng.choice((0, 1, 2, 3, 1000))
        at = self._body_index(rng, fields, hdr)
        fields[at:at] = [(tag, str(n).encode()), *entry * rng.choice((0, 1, 2))]

    def wrong_type(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        typed = [i for i, (tag, _) in enumerate(fields)
                 if i >= hdr or (tag in (34, 52) and rng.random() < 0.1)]
        i = rng.choice(typed) if typed else self._body_index(rng, fields, hdr)
        tag = fields[i][0]
        if tag in TIME_TAGS:
            value = rng.choice(BAD_TIMES)
        elif tag in DATE_TAGS:
            value = rng.choice(BAD_DATES)
        elif tag in CHAR_TAGS:
            value = rng.choice(BAD_CHARS)
        elif tag in NUM_TAGS or tag in GROUP_TAGS or tag == 34:
            value = rng.choice(BAD_NUMBERS)
        else:
            value = rng.choice(BAD_STRINGS + BAD_NUMBERS[:6])
        self.byte_values.update(value)
        fields[i] = (tag, value)

    def edge_number(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        numeric = [i for i, (tag, _) in enumerate(fields) if i >= hdr and tag in NUM_TAGS]
        i = rng.choice(numeric) if numeric else self._body_index(rng, fields, hdr)
        fields[i] = (fields[i][0], rng.choice(EDGE_NUMBERS))

    def empty_value(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        i = self._body_index(rng, fields, hdr)
        fields[i] = (fields[i][0], b"")

    def unknown_tag(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        tag = rng.choice(UNKNOWN_TAGS)
        value = rng.choice((b"1", b"X", b"FZ", self._random_value(rng, 4)))
        fields.insert(rng.randrange(1, len(fields) + 1), (tag, value))

    def header_field(self, rng: random.Random, fields: list[Field], hdr: int) -> None:
        way = rng.choice(("sender", "target", "stale", "future", "possdup", "msgtype",
                          "seqnum", "sub_id"))
        index = {tag: i for i, (tag, _) in reversed(list(enumerate(fields[:hdr])))}
        if way == "sender" and 49 in index:
            fields[index[49]] = (49, b"INTRUDER")
        elif way == "target" and 56 in index:
            fields[index[56]] = (56, b"NOTUS")
        elif way in ("stale", "future") and 52 in index:
            fields[index[52]] = (52, b"20200101-00:00:00.000" if way == "stale"
                                 else b"20991231-23:59:59.000")
        elif way == "possdup":
            fields.insert(hdr, (43, b"Y"))  # PossDupFlag without OrigSendingTime
        elif way == "msgtype" and 35 in index:
            fields[index[35]] = (35, rng.choice((b"", b"D", b"8", b"J", b"P", b"0", b"AAA")))
        elif way == "seqnum" and 34 in index:
            fields[index[34]] = (34, rng.choice((b"0", b"-1", b"", b"abc", b"99999999999")))
        else:
            fields.insert(hdr, (50, b"DESK\xff"))

    # -- framing mutations (return the bytes) ----------------------------------------------

    def truncate(self, rng: random.Random, fields: list[Field]) -> bytes:
        data = encode(fields)
        return data[:rng.randrange(1, len(data))]

    def bad_body_length(self, rng: random.Random, fields: list[Field]) -> bytes:
        right = len(render(fields))
        value = rng.choice((str(right + rng.randint(1, 40)).encode(),
                            str(max(0, right - rng.randint(1, 40))).encode(), b"0",
                            str(right + 5000).encode(), b"abc", b"-5", b"", b"99999999999",
                            str(right).encode() + b" "))
        return encode(fields, body_length=value)

    def bad_checksum(self, rng: random.Random, fields: list[Field]) -> bytes:
        data = encode(fields)
        right = int(data[-4:-1])
        value = rng.choice((f"{(right + rng.randint(1, 255)) % 256:03d}".encode(), b"abc",
                            b"1234", b"", b"-1", b"256", str(right).encode() + b"\x00"))
        return encode(fields, check=value)

    def garbage_before(self, rng: random.Random, fields: list[Field]) -> bytes:
        junk = self._random_value(rng, rng.randint(1, 200))
        if rng.random() < 0.3:
            junk += rng.choice((b"8=FIX.4.4", b"8=", b"\x019=12\x01", b"10=", b"58=x\x01",
                                b"8=FIX.4.4\x019=5\x0135=0\x01"))
        return junk + encode(fields)

    def bad_begin_string(self, rng: random.Random, fields: list[Field]) -> bytes:
        begin = rng.choice((b"FIX.4.2", b"FIXT.1.1", b"FIX.4.4 ", b"", b"FIX.4.4\xff"))
        return encode(fields, begin=begin)


def garbage_chunk(rng: random.Random, mutator: Mutator) -> bytes:
    """Bytes between messages that hold no message (sometimes a message's start)."""
    junk = mutator._random_value(rng, rng.randint(1, 300))
    return junk + (SOH if rng.random() < 0.5 else b"")
