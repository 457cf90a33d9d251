"""The wire log's compression: exact round trips, and dictionaries that never change."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.persistence import wire_codec


def test_dictionary_v1_is_the_one_records_were_written_with() -> None:
    """Records compressed with version 1 can only be read with these exact bytes: an edit
    to the dictionary would make every stored message unreadable."""
    assert zlib.adler32(wire_codec.DICTIONARY_V1) == 0x6DC82EF4
    assert len(wire_codec.DICTIONARY_V1) == 2738


@given(st.binary(max_size=4000))
def test_any_bytes_come_back_exactly(raw: bytes) -> None:
    stored, compressed = wire_codec.pack(raw)
    assert wire_codec.unpack(stored, compressed) == raw
    assert len(stored) <= len(raw)
    assert compressed or stored == raw


def test_an_execution_report_takes_under_half_its_size() -> None:
    er = (b"8=FIX.4.4\x019=225\x0135=8\x0134=77\x0149=BRKB\x0152=20261130-14:02:11.902\x01"
          b"56=FIXALLOC\x016=101.250000\x0111=FA2026113011AA22BB33\x0114=5000\x01"
          b"17=BRK000912-X3\x0131=101.25\x0132=1500\x0137=BRK000912\x0138=20000\x0139=1\x01"
          b"54=2\x0155=IBM\x0160=20261130-14:02:11.900\x0175=20261130\x01150=F\x01"
          b"151=15000\x0110=201\x01")
    stored, compressed = wire_codec.pack(er)
    assert compressed and len(stored) * 2 < len(er)
    assert wire_codec.dictionary_id(stored) == zlib.adler32(wire_codec.DICTIONARY_V1)


def test_a_record_naming_an_unknown_dictionary_is_refused_not_misread() -> None:
    co = zlib.compressobj(6, zdict=b"some other dictionary of FIX text 35=8")
    stored = co.compress(b"8=FIX.4.4\x0135=8\x01") + co.flush()
    with pytest.raises(ValueError, match="unknown dictionary"):
        wire_codec.unpack(stored, True)
