"""Block orders from a rebalance: the per-account trades aggregated per security and side,
each block carrying its pre-allocation (the accounts and quantities, with the reason), and
the canonical outputs a run is hashed and recorded by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import canonical
from engine.rebalance import REBALANCE_ENGINE_VERSION, RebalanceResult


@dataclass(frozen=True, slots=True)
class Block:
    block_id: str
    symbol: str
    side: str
    qty: Decimal
    # (account id, qty), in account-id order; sums to qty
    preallocations: tuple[tuple[str, Decimal], ...]
    preallocation_reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id, "symbol": self.symbol, "side": self.side,
            "qty": self.qty, "accounts": len(self.preallocations),
            "preallocations": [{"account_id": a, "qty": q} for a, q in self.preallocations],
            "preallocation_reason": self.preallocation_reason,
        }


def blocks(result: RebalanceResult) -> tuple[Block, ...]:
    """One block per (symbol, side) with a trade, sorted by symbol then side."""
    grouped: dict[tuple[str, str], list[tuple[str, Decimal]]] = {}
    for plan in result.accounts:  # account-id order
        for r in plan.rows:
            if r.qty > 0:
                grouped.setdefault((r.symbol, r.side), []).append((r.account_id, r.qty))
    out = []
    tag = result.inputs_hash[:8]
    for (symbol, side), pre in sorted(grouped.items()):
        qty = sum((q for _a, q in pre), Decimal(0))
        reason = (f"Rebalance to model '{result.model_name}' version "
                  f"{result.model_version[:12]} as of {result.trade_date.isoformat()}: each "
                  "account's quantity is the trade on its trade list (see its reason there).")
        out.append(Block(f"RB-{tag}-{symbol}-{side.upper()}", symbol, side, qty, tuple(pre),
                         reason))
    return tuple(out)


def trades_json(result: RebalanceResult) -> dict[str, Any]:
    """The trade list as a JSON-ready mapping (rows in account-id, then symbol order)."""
    return {
        "model": result.model_name, "model_version": result.model_version,
        "rulebook_version": result.rulebook_version,
        "trade_date": result.trade_date.isoformat(),
        "accounts": [p.to_json() for p in result.accounts],
        "rows": [r.to_json() for p in result.accounts for r in p.rows],
    }


def blocks_json(blocks_: tuple[Block, ...]) -> list[dict[str, Any]]:
    return [b.to_json() for b in blocks_]


def run_record(result: RebalanceResult, blocks_: tuple[Block, ...], *, trades_text: str,
               blocks_text: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a run is recorded by: its inputs' versions and the hash of each output."""
    rows = [r for p in result.accounts for r in p.rows]
    traded = [r for r in rows if r.qty > 0]
    codes: dict[str, int] = {}
    for r in rows:
        codes[r.reason.code] = codes.get(r.reason.code, 0) + 1
    record: dict[str, Any] = {
        "engine": REBALANCE_ENGINE_VERSION,
        "model": result.model_name, "model_version": result.model_version,
        "rulebook_version": result.rulebook_version,
        "trade_date": result.trade_date.isoformat(),
        "inputs_hash": result.inputs_hash,
        "trades_hash": canonical.sha256_hex(trades_text),
        "blocks_hash": canonical.sha256_hex(blocks_text),
        "accounts": len(result.accounts),
        "accounts_traded": sum(1 for p in result.accounts if p.traded),
        "rows": len(rows), "trades": len(traded), "blocks": len(blocks_),
        "reason_codes": dict(sorted(codes.items())),
    }
    record["output_hash"] = canonical.sha256_hex(record["trades_hash"] + record["blocks_hash"])
    if extra:
        record.update(extra)
    return record
