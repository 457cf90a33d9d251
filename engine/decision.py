"""The allocation decision: what was decided, for whom, under which rules, and why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import canonical
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
    lines: tuple[AllocationLine, ...]
    results: tuple[AccountResult, ...]

    def to_json(self) -> dict[str, Any]:
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
            "lines": [line.to_json() for line in self.lines],
            "results": [r.to_json() for r in self.results],
        }

    def to_canonical_json(self) -> str:
        """Sorted keys, Decimals as strings: byte-identical for the same inputs and rulebook."""
        return canonical.dumps(self.to_json())
