"""How the wire log stores a message's bytes: zlib with a preset dictionary of FIX text.

An execution report is about 250 bytes; zlib alone makes it about 150, because such a
message is too short to repeat itself. Primed with a dictionary of typical messages
(header, an 8 in and out, a J's first lines, AK, AU, P, BH, D) the same report takes
about 100. A stored message is compressed when that makes it shorter and marked
`compressed`; the zlib stream names its dictionary by Adler-32 in its header (RFC 1950,
FDICT), so a reader needs no other column to know which dictionary to use.

The dictionaries are part of the record format: a stored message can only be read with the
exact bytes it was compressed with. Never edit one; add a new one, make it `CURRENT`, and
keep the old ones in `_BY_ID` for as long as records written with them are kept (the test
pins each one's checksum).
"""

from __future__ import annotations

import zlib

_V1_TEXT = (
    "8=FIX.4.4|9=57|35=0|34=690|49=BRKA|52=20261129-22:30:54.230|56=FIXALLOC|10=180|8=FIX"
    ".4.4|9=114|35=P|34=588|49=BRKA|52=20261129-22:29:54.386|56=FIXALLOC|60=20261129-22:2"
    "9:54.327|70=FA20261127DAE081BC43-J2|87=0|10=140|8=FIX.4.4|9=115|35=AU|34=651|49=FIXA"
    "LLOC|52=20261129-22:29:57.158|56=BRKA|60=20261127-21:42:03.815|75=20261127|664=CNF00"
    "1147|940=3|10=087|8=FIX.4.4|9=251|35=BH|34=549|49=FIXALLOC|52=20261129-22:29:54.236|"
    "56=BRKA|58=no Confirmation received for this allocation line|60=20261127-21:30:02.70"
    "6|70=FA20261127F0B60D83E2-J1|79=SMA0004|467=FA20261127F0B60D83E2-J1-00004|773=2|859="
    "FA20261127F0B60D83E2-J1-00004-R1|10=051|8=FIX.4.4|9=157|35=D|34=4|49=OMS1|52=2026112"
    "9-22:29:44.685|56=FIXALLOC|1=SMA-CORE|11=DAY-C-1795991384|21=1|38=10000|40=2|44=155."
    "50|54=1|55=JNJ|59=0|60=20261127-21:01:28.811|10=158|8=FIX.4.4|9=152|35=D|34=201|49=F"
    "IXALLOC|52=20261129-22:29:44.742|56=BRKA|11=FA20261127DAE081BC43|21=1|38=10000|40=2|"
    "44=155.50|54=1|55=JNJ|59=0|60=20261127-20:52:24.107|10=035|8=FIX.4.4|9=17607|35=J|34"
    "=20|49=FIXALLOC|52=20261129-22:29:54.315|56=OMS1|6=155.4300|53=10000|54=1|55=JNJ|60="
    "20261127-21:30:40.970|64=20261130|70=FA20261127DAE081BC43-J2|71=1|72=FA20261127DAE08"
    "1BC43-J1|73=1|11=DAY-C-1795991384|37=FA20261127DAE081BC43|38=10000|799=155.4300|800="
    "10000|75=20261127|78=100|79=SMA0001|661=99|80=100|467=FA20261127DAE081BC43-J2-00001|"
    "539=2|524=IRVTUS3NXXX|525=B|538=28|524=PB02|525=D|538=4|153=155.4300|154=15543.00|78"
    "0=0|20101=DIV|20102=SMA-WRAP2|79=SMA0005|661=99|80=100|467=FA20261127DAE081BC43-J2-0"
    "0002|539=2|524=SBOSUS33XXX|525=B|538=28|524=PB03|525=D|538=4|153=155.4300|154=15543."
    "00|780=0|20101=DIV|20102=SMA-UMA|79=SMA0006|661=99|80=100|467=FA20261127DAE081BC43-J"
    "2-00003|539=2|524=CUSTUS33XXX|525=B|538=28|524=PB01|525=D|538=4|153=155.4300|154=155"
    "43.00|780=0|20101=CORE|20102=SMA-WRAP1|79=SMA0009|661=99|80=100|467=FA20261127DAE081"
    "BC43-J2-00004|539=2|524=CUSTUS33XXX8=FIX.4.4|9=287|35=AK|34=688|49=BRKA|52=20261129-"
    "22:29:54.461|56=FIXALLOC|6=155.4300|54=1|55=JNJ|60=20261129-22:29:54.404|64=20261130"
    "|70=FA20261127DAE081BC43-J2|75=20261127|79=SMA0199|80=100|118=15543.00|381=15543.00|"
    "467=FA20261127DAE081BC43-J2-00100|664=CNF001147|665=4|666=0|773=2|862=1|528=A|863=10"
    "0|10=248|8=FIX.4.4|9=237|35=8|34=585|49=BRKA|52=20261129-22:29:53.089|56=FIXALLOC|6="
    "190.445000|11=FA20261127B4802EA91F~C1|14=20000|17=BRK000001-X946|37=BRK000001|38=300"
    "00|39=4|41=FA20261127B4802EA91F|54=1|55=AAPL|60=20261129-22:29:53.058|75=20261129|15"
    "0=4|151=0|10=179|8=FIX.4.4|9=262|35=8|34=19|49=FIXALLOC|52=20261129-22:29:53.095|56="
    "OMS1|1=SMA-CORE|6=190.445000|11=DAY-A-1795991381-CXL1|14=20000|17=FA20261127B4802EA9"
    "1F-E14|37=FA20261127B4802EA91F|38=30000|39=4|41=DAY-A-1795991381|54=1|55=AAPL|60=202"
    "61127-21:25:50.132|75=20261129|150=4|151=0|10=041|"
)
DICTIONARY_V1 = _V1_TEXT.replace("|", "\x01").encode("ascii")
"""Version 1, from the demo day's messages (their ids and times are only sample text)."""

CURRENT = DICTIONARY_V1
_BY_ID = {zlib.adler32(d): d for d in (DICTIONARY_V1,)}


def dictionary_id(stream: bytes) -> int | None:
    """The Adler-32 of the dictionary a zlib stream asks for, or None when it asks for none."""
    if len(stream) >= 6 and stream[1] & 0x20:
        return int.from_bytes(stream[2:6], "big")
    return None


def pack(raw: bytes) -> tuple[bytes, bool]:
    """The bytes to store and whether they are compressed (only when that is shorter)."""
    co = zlib.compressobj(6, zdict=CURRENT)
    packed = co.compress(raw) + co.flush()
    if len(packed) < len(raw):
        return packed, True
    return raw, False


def unpack(stored: bytes, compressed: bool) -> bytes:
    """The exact bytes that crossed the wire, from what `pack` (or an older writer) stored."""
    if not compressed:
        return stored
    wanted = dictionary_id(stored)
    if wanted is None:
        # Written before the dictionaries (migration 0007's plain zlib of large messages).
        return zlib.decompress(stored)
    zdict = _BY_ID.get(wanted)
    if zdict is None:
        raise ValueError(f"wire record compressed with unknown dictionary {wanted:#010x}")
    do = zlib.decompressobj(zdict=zdict)
    return do.decompress(stored) + do.flush()
