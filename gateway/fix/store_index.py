"""What quickfix already holds to send: the ids in a session's FileStore body.

A message handed to quickfix while its session is down is stored (its sequence number
taken) but not written to the socket, so the wire log does not have it; quickfix sends
it when the peer asks for a resend after the next logon. Recovery therefore asks both
"did it reach the wire?" and "is it in quickfix's store?" before sending a relay, a D or
a J again, or the peer would get it twice (the stored copy as PossDup and the new one).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from gateway.fix.wire_log import describe

_MESSAGE = re.compile(rb"8=FIX[^\x01]*\x01.*?\x0110=\d{3}\x01", re.DOTALL)


def stored_refs(body: Path) -> dict[str, Counter[str]]:
    """MsgType -> how many stored messages carry each ref id (ExecID, ClOrdID, AllocID).

    A count, not a set: the fragments of one J all carry its AllocID.
    """
    refs: dict[str, Counter[str]] = {}
    if not body.is_file():
        return refs
    for match in _MESSAGE.finditer(body.read_bytes()):
        msg_type, _seq, _dup, ref = describe(match.group(0))
        if ref is not None:
            refs.setdefault(msg_type, Counter())[ref] += 1
    return refs
