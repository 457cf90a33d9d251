"""Per-account status codes and flags: the vocabulary of a decision's compact columns.

Partitions write them (`engine.partition_split.finish`); the coordinator, the decision
tables and the invariant checks read them. A byte per account keeps 100,000 results cheap to
pickle across a pipe.
"""

from __future__ import annotations

# Status codes.
EXCLUDED = 1        # a restriction excludes it (reasons: rule keys)
CAP_EXCLUDED = 2    # a cap leaves room for nothing
DROPPED_MIN = 3     # below its minimum allocation, dropped before the re-run
ZERO = 4            # took part but rounded down to zero
NOT_PARTICIPATING = 5
ALLOCATED = 6
CAPPED = 7

STATUS_NAME = {EXCLUDED: "excluded", CAP_EXCLUDED: "excluded", DROPPED_MIN: "dropped",
               ZERO: "dropped", NOT_PARTICIPATING: "not_participating",
               ALLOCATED: "allocated", CAPPED: "capped"}
# Statuses that never carry a quantity or a rounding note.
NO_QUANTITY = frozenset({EXCLUDED, CAP_EXCLUDED, DROPPED_MIN, NOT_PARTICIPATING})
# Statuses whose reason is the same sentence for every account of a decision.
SHARED_REASON = frozenset({ZERO, NOT_PARTICIPATING, ALLOCATED})

# Flags.
CLIPPED = 1         # its share exceeded its cap: it got the cap in whole lots
EXTRA_LOT = 2
ODD_LOT = 4
IN_ALLOC = 8        # the split assigned it a quantity (possibly zero); only these are
                    # checked against their minimum
HELD = 16           # its cap left no room for a left-over lot or the odd lot that it was
                    # next in line for, so a later account took it
BOUND = CLIPPED | HELD  # either way the cap decided its quantity: status CAPPED
