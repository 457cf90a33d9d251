"""A large J's memory is its lines, not a field-order table per line.

quickfix gives every Group built from an order array a table as large as its highest
tag (our UDF 20102: about 80 KB); a J built with a new group per line kept one per line,
so a 100,000-account allocation peaked near 8 GB. Measured in a fresh interpreter so the
peak RSS is this build's alone.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource
from datetime import UTC, datetime
from decimal import Decimal
from gateway.fix.allocation_codec import JBlock, JLine, build_allocation_instruction
n = 5000
lines = [JLine(f"A-{i}", f"SMA{i:05d}", Decimal(100), Decimal("190.5"), "CUSTUS33XXX", "PB01",
               "CORE", "SMA-UMA") for i in range(n)]
block = JBlock(alloc_id="A", alloc_trans_type="0", alloc_type="1", cl_ord_id="C",
               broker_order_id="B", order_qty=Decimal(100 * n), side="buy", symbol="AAPL",
               quantity=Decimal(100 * n), avg_px=Decimal("190.5"), trade_date="2026-11-27",
               settl_date="2026-11-30", transact_time=datetime(2026, 11, 27, tzinfo=UTC))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
msg = build_allocation_instruction(block, lines)
assert msg.toString().count("\\x01" + "79=") == n
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_5000_line_j_costs_megabytes_not_gigabytes() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120)
    grown_mib = int(out.stdout.strip())
    # About 10 MiB now (the message and its string); 400 MiB and more with a table per line.
    assert grown_mib < 60, f"building the J grew the peak RSS by {grown_mib} MiB"
