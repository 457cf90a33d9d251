"""The allocation decision: what was decided, for whom, under which rules, and why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import canonical, table
from engine.model import AccountResult, AllocationLine, Side


@dataclass(frozen=True, slots=True)
class AllocationDecision:
    decision_id: str
    block_id: str
    symbol: str
    side: Side
    trade_date: dt.date
    decided_at: dt.datetime
    method: str
    method_params: Mapping[str, Any]
    rulebook_version: str
    inputs_hash: str
    executed_qty: Decimal
    allocated_qty: Decimal
    unallocated_qty: Decimal
    unallocated_reason: str
    avg_px: Decimal
    lot_size: int
    # Tuples, or engine.table.LazyTuple (built on first read) for decisions from allocate().
    lines: Sequence[AllocationLine]
    results: Sequence[AccountResult]

    def to_json(self) -> dict[str, Any]:
        return self.to_json_head() | {
            "lines": [line.to_json() for line in self.lines],
            "results": [r.to_json() for r in self.results],
        }

    def to_json_head(self) -> dict[str, Any]:
        """Everything but the per-account lines and results."""
        return {
            "decision_id": self.decision_id,
            "block_id": self.block_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "trade_date": self.trade_date.isoformat(),
            "decided_at": self.decided_at.isoformat(),
            "method": self.method,
            "method_params": dict(self.method_params),
            "rulebook_version": self.rulebook_version,
            "inputs_hash": self.inputs_hash,
            "executed_qty": self.executed_qty,
            "allocated_qty": self.allocated_qty,
            "unallocated_qty": self.unallocated_qty,
            "unallocated_reason": self.unallocated_reason,
            "avg_px": self.avg_px,
            "lot_size": self.lot_size,
        }

    def to_canonical_json(self) -> str:
        """Sorted keys, Decimals as strings: byte-identical for the same inputs and rulebook."""
        lines, results = self.lines, self.results
        if (isinstance(lines, table.LazyTuple) and lines.columns is not None
                and isinstance(results, table.LazyTuple) and results.columns is not None):
            # Write the per-account arrays straight from the columns; every other value
            # goes through canonical.dumps. Keys are sorted as json.dumps sorts them.
            values = {k: canonical.dumps(v) for k, v in self.to_json_head().items()}
            values["lines"] = table.lines_text(lines.columns, format(self.avg_px, "f"))
            values["results"] = table.results_text(results.columns)
            return "{" + ",".join(f"{canonical.dumps(k)}:{values[k]}"
                                  for k in sorted(values)) + "}"
        return canonical.dumps(self.to_json())
