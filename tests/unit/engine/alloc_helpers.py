from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import engine

D = Decimal
TRADE_DATE = dt.date(2024, 6, 3)
DECIDED_AT = dt.datetime(2024, 6, 3, 20, 0, tzinfo=dt.UTC)


def securities() -> dict[str, engine.Security]:
    return {
        "XYZ": engine.Security("XYZ", "XYZ Corp", "Technology", "US", frozenset(), 100, None,
                               D("10")),
        "MO": engine.Security("MO", "Altria", "Consumer Staples", "US", frozenset({"tobacco"}),
                              100, None, D("45")),
        "BTI": engine.Security("BTI", "BAT ADR", "Consumer Staples", "US", frozenset(), 1,
                               "BATS.L", D("35")),
        "BATS.L": engine.Security("BATS.L", "British American Tobacco", "Consumer Staples",
                                  "GB", frozenset({"tobacco"}), 1, None, D("28")),
        "ODD": engine.Security("ODD", "Odd Co", "Industrials", "DE", frozenset(), 1, None,
                               D("5")),
    }


def account(account_id: str, **kw: Any) -> engine.Account:
    base: dict[str, Any] = {
        "book": "SMA-CORE", "nav": D("10000000"), "cash": D("10000000"),
        "intended_qty": D(1000), "custodian": "CUSTUS33XXX", "prime_broker": "PB01",
        "strategy": "LCG", "vehicle": "SMA-WRAP1",
    }
    base.update(kw)
    return engine.Account(account_id, **base)


def request(accounts: Sequence[engine.Account], qty: int | Decimal, *, symbol: str = "XYZ",
            side: engine.Side = engine.Side.BUY, px: str = "10", **kw: Any
            ) -> engine.AllocationRequest:
    return engine.AllocationRequest(
        block_id="BLK-1", symbol=symbol, side=side, executed_qty=D(qty), avg_px=D(px),
        trade_date=TRADE_DATE, accounts=tuple(accounts), securities=securities(),
        decided_at=DECIDED_AT, **kw,
    )


def rulebook(restrictions: Sequence[Mapping[str, Any]] = (),
             schemes: Mapping[str, Any] | None = None) -> engine.Rulebook:
    return engine.Rulebook.from_mapping(
        {"restrictions": list(restrictions), "schemes": dict(schemes or {})}, "test")


def by_id(decision: engine.AllocationDecision) -> dict[str, engine.AccountResult]:
    return {r.account_id: r for r in decision.results}


def qtys(decision: engine.AllocationDecision) -> dict[str, int]:
    return {line.account_id: int(line.qty) for line in decision.lines}
