"""Seeded synthetic books and rulebooks for benchmarks and tests (deterministic)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.model import Account, AllocationRequest, Security, Side, TaxLot
from engine.rulebook import Rulebook

SYMBOL = "SYN"
_SECTORS = ("Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials")
_COUNTRIES = ("US", "GB", "DE", "FR", "JP", "CA")
_TAGS = ("tobacco", "fossil_fuels", "gambling", "alcohol", "controversial_weapons", "nuclear")
_STRATEGIES = ("LCG", "DIV", "CORE", "ESG")


@dataclass(frozen=True, slots=True)
class SyntheticBook:
    request: AllocationRequest
    rulebook: Rulebook
    rules_per_account: Decimal


def securities() -> dict[str, Security]:
    secs = {
        SYMBOL: Security(SYMBOL, "Synthetic Corp", "Information Technology", "US",
                         frozenset({"large_cap"}), 100, None, Decimal("50.00")),
        "SYN.ADR": Security("SYN.ADR", "Synthetic Corp ADR", "Information Technology", "US",
                            frozenset(), 1, SYMBOL, Decimal("25.00")),
    }
    for i, tag in enumerate(_TAGS):
        sym = f"OTH{i}"
        secs[sym] = Security(sym, f"Other {i}", _SECTORS[i], _COUNTRIES[i], frozenset({tag}), 100,
                             None, Decimal(20 + i))
    return secs


def rulebook_mapping(n_books: int, rules_per_account: int, rnd: random.Random,
                     account_rules: dict[str, int]) -> dict[str, Any]:
    per_book = max(rules_per_account - 2, 0)
    restrictions: list[dict[str, Any]] = [
        {"id": "G-LONG-ONLY", "version": "1", "description": "Long only", "kind": "side",
         "forbid": ["sell_short"]},
        {"id": "G-MIN", "version": "1", "description": "Minimum one lot", "kind": "min_allocation",
         "min_qty": 100},
    ]
    for b in range(n_books):
        book = f"BOOK-{b:03d}"
        for k in range(per_book):
            rid = f"{book}-R{k:02d}"
            slot = k % 5
            rule: dict[str, Any] = {"id": rid, "version": str(1 + k % 3), "scope": {
                "books": [book]}, "description": f"Synthetic rule {k} of {book}"}
            if slot == 0:
                rule |= {"kind": "issuer_cap", "max_pct_nav": 5 + rnd.randint(0, 10)}
            elif slot == 1:
                strategy = rnd.choice(_STRATEGIES)
                sector = "Information Technology" if rnd.random() < 0.1 else rnd.choice(_SECTORS)
                rule |= {"kind": "cel", "exclude_when":
                         f"account.strategy == '{strategy}' && account.tier > 4"
                         f" && security.sector == '{sector}'"}
            else:
                # Most exclusions do not match the traded security, as in real books.
                key = rnd.choice(["esg_tags", "sectors", "countries", "issuers"])
                pool = {"esg_tags": _TAGS, "sectors": _SECTORS, "countries": _COUNTRIES[1:],
                        "issuers": tuple(f"Other {i}" for i in range(6))}[key]
                if rnd.random() < 0.02:
                    pool = {"esg_tags": ("large_cap",), "sectors": ("Information Technology",),
                            "countries": ("US",), "issuers": ("Synthetic Corp",)}[key]
                rule |= {"kind": "exclude", "match": {key: [rnd.choice(pool)]}}
            restrictions.append(rule)
    for acct, n in sorted(account_rules.items()):
        for k in range(n):
            restrictions.append({
                "id": f"{acct}-X{k}", "version": "1", "kind": "exclude",
                "description": f"Client {acct} excludes {_TAGS[k % len(_TAGS)]}",
                "match": {"esg_tags": [_TAGS[k % len(_TAGS)]]}, "scope": {"accounts": [acct]},
            })
    return {
        "name": "synthetic",
        "schemes": {"core": {"method": "pro_rata", "fallback": ["pari_passu", "equal"]}},
        "restrictions": restrictions,
    }


def build(n_accounts: int, rules_per_account: int, seed: int = 7,
          fill_ratio: Decimal = Decimal("0.8")) -> SyntheticBook:
    """A book of `n_accounts` with about `rules_per_account` restrictions each."""
    rnd = random.Random(seed)
    n_books = max(1, min(200, n_accounts // 500))
    secs = securities()
    accounts: list[Account] = []
    account_rules: dict[str, int] = {}
    statuses = ("active",) * 97 + ("frozen", "closed", "do_not_trade")
    for i in range(n_accounts):
        aid = f"ACC{i:07d}"
        nav = Decimal(rnd.randint(1_000, 50_000) * 1_000)
        intended = Decimal(rnd.randint(1, 50) * 100)
        pos: dict[str, Decimal] = {}
        lots: dict[str, tuple[TaxLot, ...]] = {}
        if rnd.random() < 0.2:
            q = Decimal(rnd.randint(1, 40) * 100)
            pos[SYMBOL] = q
            lots[SYMBOL] = (TaxLot(f"{aid}-L1", q, Decimal(rnd.randint(20, 80)),
                                   dt.date(2023, 1, 1) + dt.timedelta(days=rnd.randint(0, 500))),)
        if rnd.random() < 0.05:
            account_rules[aid] = 1
        accounts.append(Account(
            account_id=aid, book=f"BOOK-{i % n_books:03d}", status=rnd.choice(statuses),
            nav=nav, cash=nav / 4, positions=pos, lots=lots, tier=1 + i % 5,
            intended_qty=intended, target_weight=Decimal("0.02"), custodian="CUSTUS33XXX",
            prime_broker=f"PB0{1 + i % 3}", strategy=_STRATEGIES[i % 4],
            vehicle="SMA-WRAP1", scheme="core",
        ))
    rb = Rulebook.from_mapping(rulebook_mapping(n_books, rules_per_account, rnd, account_rules),
                               "synthetic")
    total = sum((a.intended_qty or Decimal(0) for a in accounts), Decimal(0))
    executed = (total * fill_ratio).to_integral_value() + 37  # an odd lot on purpose
    request = AllocationRequest(
        block_id=f"SYN-{seed}", symbol=SYMBOL, side=Side.BUY, executed_qty=executed,
        avg_px=Decimal("50.0125"), trade_date=dt.date(2024, 6, 3), accounts=tuple(accounts),
        securities=secs, decided_at=dt.datetime(2024, 6, 3, 20, 0, tzinfo=dt.UTC),
    )
    per = sum(len(rb.rules_for(a.account_id, a.book)) for a in accounts)
    return SyntheticBook(request, rb, Decimal(per) / max(n_accounts, 1))
