"""Fault injection for crash tests: the process kills itself (SIGKILL) at a named step.

`FIXALLOC_FAULT=STEP` kills the daemon the first time it reaches STEP, `STEP:N` the N-th
time. Unset (production), `point()` is one comparison with None. The steps sit between
the writes and the sends whose order the crash-recovery promises depend on:

  decision_stored        decision, allocation and lines committed; no J handed to quickfix
  broker_j_stored        the broker's J (its last fragment) stored by quickfix; its wire row
                         and the allocation's "sent" not yet committed (one commit)
  broker_j_sent          the broker's J handed to quickfix; "sent" recorded with its wire
                         row when the session is up, not yet otherwise
  broker_j_recorded      the broker's J recorded as sent; the OMS's J not yet handed over
  oms_j_stored           the OMS's J stored by quickfix; its wire row and its row's update
                         not yet committed (one commit)
  oms_j_sent             the OMS's J handed to quickfix; its row updated with its wire row
                         when the session is up, not yet otherwise
  ack_received           the broker's P taken off the inbox; not yet stored on the allocation
  relay_stored           a fill's relay stored by quickfix for resend; its wire record, the
                         order's row and the relay's mark not yet committed (one commit)
  relay_sent             an ER relay handed to quickfix; not yet marked relayed unless the
                         mark rode on its wire record (a plain fill on a session that is up)
  fill_stored            a fill committed by the FIX callback; not yet on the inbox
  recovery_redriving     recovery is re-driving stored work (after its first re-drive)
  confirmation_stored    an AK committed by the FIX callback; not yet on the inbox
  au_sent                an AU handed to quickfix; its confirmation not yet marked answered
  cross_stored           a live cross committed (both splits and the venue's reports); no
                         execution relayed to the OMS, nothing routed to the broker yet
  venue_j_recorded       a crossed part's J recorded on the crossing venue's session; the
                         venue's P accepting it not yet recorded
"""

from __future__ import annotations

import os
import signal
import sys

_SPEC = os.environ.get("FIXALLOC_FAULT") or None
_STEP, _, _NTH = (_SPEC or "").partition(":")
_TARGET = int(_NTH) if _NTH.isdigit() else 1
_seen = [0]  # arrivals at the named step (a list: mutated without `global`)

STEPS = ("decision_stored", "broker_j_stored", "broker_j_sent", "broker_j_recorded",
         "oms_j_stored", "oms_j_sent",
         "ack_received", "relay_stored", "relay_sent", "fill_stored", "recovery_redriving",
         "confirmation_stored", "au_sent", "cross_stored",
         "venue_j_recorded")


def point(step: str) -> None:
    """Die here if the environment names this step (and this is its N-th arrival)."""
    if _SPEC is None or step != _STEP:
        return
    _seen[0] += 1
    if _seen[0] == _TARGET:
        sys.stderr.write(f"fixalloc: fault injected at {step} (#{_seen[0]}): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
