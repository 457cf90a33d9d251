"""A bounded fuzz of the gateway's FIX sessions: the run `fixalloc bench fuzz` makes, smaller.

The daemon runs as its own process; a raw OMS and a raw broker on extra sessions send a few
thousand mutated messages (every byte value, long values, broken groups and types, bad
framing), then a normal block through the product's simulators must still be allocated.
The seed is fixed, so the messages are the same on every run (only the ids the peers learn
from the gateway's own traffic vary with timing).

Before our quickfix build (scripts/patch_quickfix.py) this run had to avoid sending after
a frame that ends a session: quickfix 1.16 then closed the socket twice, and the second
close() now and then hit a descriptor another thread had just opened (a SQLite connection:
"disk I/O error" from then on). It no longer needs to.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.fuzz import format_report, run_fuzz

pytestmark = pytest.mark.fix

MESSAGES = 3000


def test_fuzzed_sessions_leave_the_daemon_up_and_a_normal_block_allocates(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    result = run_fuzz(messages=MESSAGES, seed=20261129, state_dir=tmp_path)
    report = format_report(result)
    print(report, f"\n  test seconds {time.monotonic() - started:.1f}")  # -s, or on failure

    # Nothing a peer sent stopped the daemon, hung a session or raised in a callback.
    assert result["crashes"] == 0, report
    assert result["daemon_exit_code"] == 0, report
    assert result["hang"] is None and result["stalls"] == 0, report
    assert not result["threads_died"], report
    assert not result["daemon_exceptions"], report
    # ... and the gateway still trades: OMS sim -> gateway -> broker sim -> J, sum = filled.
    assert result["normal_order_allocated"], report
    normal = result["normal_order"]
    assert normal["allocated_qty"] == normal["filled"] == normal["j_quantity"] == "20000"

    # The fuzz reached the gateway: everything was sent over logged-on sessions, every byte
    # value went out inside field values, most frames passed the garble check and were
    # answered by the session layer (Rejects by reason) and by the application (ER 39=8 for
    # block orders it refused, BusinessMessageReject for message types it does not take,
    # DontKnowTrade for fills of no order).
    assert result["messages_sent"] == MESSAGES, report
    assert result["messages_sent_per_peer"] == {"OMSF": MESSAGES // 2, "BRKF": MESSAGES // 2}
    assert result["byte_values_covered"] == 256
    for name, peer in result["peers"].items():
        assert peer["frames_parsed"] > 3 * peer["frames_garbled"] > 0, (name, report)
        assert sum(peer["session_rejects"].values()) > MESSAGES // 20, (name, report)
    rejects = result["rejects_by_reason"]
    assert {"1", "4", "5", "6", "13"} <= set(rejects), report
    assert result["er_rejected"] > 0, report
    assert result["business_rejects_by_reason"].get("3", 0) > 0, report
    assert result["dont_know"] > 0, report
    mutations = result["messages_by_mutation"]
    for kind in ("none", "random_bytes", "long_value", "drop_field", "duplicate_field",
                 "reorder_fields", "bad_group_count", "wrong_type", "edge_number", "truncate",
                 "bad_body_length", "bad_checksum", "garbage_before"):
        assert mutations.get(kind, 0) > 0, (kind, report)
    # The broker peer received real child orders and the gateway allocated some of its
    # fills: Js went out to the fuzzing peers.
    assert result["peers"]["BRKF"]["received"].get("D", 0) > 0, report
    assert sum(p["received"].get("J", 0) for p in result["peers"].values()) > 0, report
