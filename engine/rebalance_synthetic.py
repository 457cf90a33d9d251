"""Seeded synthetic rebalancing inputs for the benchmark and tests (deterministic).

S securities (a few ADRs looking through to their issuer, ESG tags, round lots of 100 or
1), a model over all of them, N accounts holding roughly the model (some within the bands,
some far off, some with odd holdings, recent purchases and loss lots) and a rulebook with
exclusions, an issuer cap, a side rule, per-account exclusions and a custom rule.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.model import Account, Security, TaxLot
from engine.rebalance import RebalanceRequest
from engine.rebalance_model import Model
from engine.rulebook import Rulebook

TRADE_DATE = dt.date(2024, 6, 3)
_TAGS = ("tobacco", "fossil_fuels", "gambling", "alcohol", "controversial_weapons")
_SECTORS = ("Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials",
            "Information Technology")


@dataclass(frozen=True, slots=True)
class SyntheticRebalance:
    request: RebalanceRequest
    rulebook: Rulebook


def securities(n: int, rnd: random.Random) -> dict[str, Security]:
    out: dict[str, Security] = {}
    for i in range(n):
        sym = f"S{i:04d}"
        related = f"S{i - 1:04d}" if i % 50 == 49 else None  # an ADR of the previous one
        tags = frozenset({_TAGS[i % len(_TAGS)]}) if i % 40 == 7 else frozenset()
        out[sym] = Security(sym, f"Issuer {i}", _SECTORS[i % len(_SECTORS)], "US", tags,
                            100 if i % 4 else 1, related,
                            Decimal(rnd.randint(1_000, 50_000)) / 100)
    return out


def model_mapping(symbols: list[str]) -> dict[str, Any]:
    # Equal weights in basis points, the remainder to cash: exact decimals.
    n = len(symbols)
    each = Decimal(9_800 // n) / 100
    targets = {s: str(each) for s in symbols}
    cash = Decimal(100) - each * n
    return {
        "name": f"synthetic-{n}", "assign": {"schemes": ["core"]},
        "targets": targets, "cash": {"target_pct": str(cash), "buffer_pct": "0.5"},
        "drift": {"account_band_pct": "1", "position_band_pct": str(each / 4)},
        "min_trade": {"shares": 1, "notional": 500},
        "round_lots": True, "redistribution": "pro_rata",
    }


def rulebook_mapping(accounts: list[str], rnd: random.Random) -> dict[str, Any]:
    restrictions: list[dict[str, Any]] = [
        {"id": "G-NO-WEAPONS", "version": "1", "kind": "exclude",
         "description": "No controversial weapons",
         "match": {"esg_tags": ["controversial_weapons"]}},
        {"id": "G-ISSUER-5", "version": "1", "kind": "issuer_cap", "max_pct_nav": 5,
         "description": "No issuer above 5% of value"},
        {"id": "G-LONG-ONLY", "version": "1", "kind": "side", "forbid": ["sell_short"],
         "description": "Long only"},
        {"id": "G-NO-NEW-S0003", "version": "1", "kind": "side", "forbid": ["buy"],
         "match": {"symbols": ["S0003"]}, "description": "Winding down S0003"},
        {"id": "G-TIER5-NO-ENERGY", "version": "1", "kind": "cel",
         "exclude_when": "account.tier == 5 && security.sector == 'Energy'",
         "description": "Tier 5 accounts hold no energy"},
    ]
    for aid in accounts:
        if rnd.random() < 0.05:
            tag = rnd.choice(_TAGS)
            restrictions.append({"id": f"{aid}-NO-{tag.upper()}", "version": "1",
                                 "kind": "exclude", "scope": {"accounts": [aid]},
                                 "description": f"Client {aid} excludes {tag}",
                                 "match": {"esg_tags": [tag]}})
    return {"name": "synthetic-rebalance", "schemes": {"core": {
        "method": "pro_rata", "lot_relief": "hifo", "avoid_wash_sales": True}},
        "restrictions": restrictions}


def build(n_accounts: int, n_securities: int, seed: int = 7) -> SyntheticRebalance:
    rnd = random.Random(seed)
    secs = securities(n_securities, rnd)
    symbols = sorted(secs)
    model = Model.from_mapping(model_mapping(symbols))
    ids = [f"ACC{i:07d}" for i in range(n_accounts)]
    accounts: list[Account] = []
    for i, aid in enumerate(ids):
        value = Decimal(rnd.randint(500, 20_000) * 1_000)
        status = "active" if rnd.random() < 0.98 else "frozen"
        off = rnd.random() < 0.5  # half the accounts drifted far from the model
        positions: dict[str, Decimal] = {}
        lots: dict[str, tuple[TaxLot, ...]] = {}
        invested = Decimal(0)
        for k, sym in enumerate(symbols):
            if off and rnd.random() < 0.3:
                continue
            px = secs[sym].price
            assert px is not None
            w = model.targets[sym] * Decimal(rnd.randint(80, 120) if off else
                                             rnd.randint(97, 103)) / 100
            qty = int(value * w / 100 / px)
            if qty <= 0:
                continue
            q = Decimal(qty)
            positions[sym] = q
            invested += q * px
            if k % 3 == 0 and qty > 1:
                first = Decimal(qty // 2)
                lots[sym] = (
                    TaxLot(f"{aid}-{sym}-1", first, px * Decimal("0.7"), dt.date(2021, 3, 1)),
                    TaxLot(f"{aid}-{sym}-2", q - first, px * Decimal("1.2"),
                           TRADE_DATE - dt.timedelta(days=rnd.randint(5, 400))),
                )
            else:
                lots[sym] = (TaxLot(f"{aid}-{sym}-1", q, px * Decimal("0.9"),
                                    dt.date(2022, 1, 3)),)
        cash = max(value - invested, Decimal(0)) + (value / 10 if off else Decimal(0))
        accounts.append(Account(
            account_id=aid, book="SYN", status=status, nav=value, cash=cash,
            positions=positions, lots=lots, tier=1 + i % 5, scheme="core",
            strategy="CORE", vehicle="SMA"))
    rb = Rulebook.from_mapping(rulebook_mapping(ids, rnd), "synthetic-rebalance")
    req = RebalanceRequest(model, tuple(accounts), secs, TRADE_DATE)
    return SyntheticRebalance(req, rb)
