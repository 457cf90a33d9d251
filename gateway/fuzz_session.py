"""What quickfix's session layer makes of a frame: the fuzzing peers' model of it.

`expected_after` moves the gateway's expected MsgSeqNum past a frame exactly as quickfix
1.16 does for the cases the fuzz produces (a garbled frame consumes nothing; a parsed one
with the expected number is counted whether it is accepted or rejected; a SequenceReset is
applied, never counted; a Logon with ResetSeqNumFlag=Y starts again at 1; a too-high
number makes the gateway ask for the gap).
"""

from __future__ import annotations

from gateway.fuzz_wire import int_convert, parses, split_fields

GATEWAY_COMP_ID = b"FIXALLOC"


def frame_values(frame: bytes) -> dict[int, bytes]:
    """The first value of each tag of a frame (as quickfix's extractField splits it)."""
    values: dict[int, bytes] = {}
    for tag, value in split_fields(frame) or []:
        number = int_convert(tag)
        if number is not None:
            values.setdefault(number, value)
    return values


def expected_after(frame: bytes, expected: int) -> tuple[int, bool]:
    """(the gateway's expected MsgSeqNum after this frame, whether quickfix parses it)."""
    if not parses(frame):
        return expected, False
    values = frame_values(frame)
    seq = int_convert(values.get(34, b""))
    mtype = values.get(35)
    new_seq = int_convert(values.get(36, b""))
    if mtype == b"4" and values.get(123) != b"Y":
        # SequenceReset-Reset: no MsgSeqNum check at all, only forward.
        return (new_seq if new_seq is not None and new_seq > expected else expected), True
    if seq is None:
        return expected, True
    if mtype == b"A" and values.get(141) == b"Y":
        expected = 1
    if seq == expected and mtype == b"4":
        return (new_seq if new_seq is not None and new_seq > seq else expected), True
    if seq >= expected:
        return seq + 1, True  # too high: the gateway asks for the gap to be filled
    return expected, True
