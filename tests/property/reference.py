"""A slow, plain reference of the allocation rules, written for the property tests.

It shares no code with the engine: it reads the rulebook mapping and the accounts directly,
works in exact fractions, and follows docs/engine.md ("Restrictions", "Methods", "Rounding")
step by step, without any of the engine's caching, partitioning or integer encodings. A
property test compares every generated decision with it, account by account.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import engine

# A custom rule's meaning, for the reference: (account, traded security's look-through
# chain, side) -> excluded, or the string "error" when the rule cannot be evaluated.
CelMeaning = Callable[[engine.Account, Sequence[engine.Security], engine.Side], "bool | str"]

SYS_VERSION = "engine-1"


@dataclass
class Expected:
    method: str | None
    status: dict[str, str] = field(default_factory=dict)
    qty: dict[str, int] = field(default_factory=dict)
    rules: dict[str, set[str]] = field(default_factory=dict)    # reason rule ids
    codes: dict[str, set[str]] = field(default_factory=dict)    # reason codes (exclusions)
    caps: dict[str, int | None] = field(default_factory=dict)   # eligible accounts' caps
    unallocated: int = 0
    binding: set[str] = field(default_factory=set)              # rules the reason must name
    odd_lot: str | None = None


def chain_of(symbol: str, securities: Mapping[str, engine.Security]) -> list[engine.Security]:
    out: list[engine.Security] = []
    cur: str | None = symbol
    while cur is not None and cur in securities and all(s.symbol != cur for s in out):
        out.append(securities[cur])
        cur = securities[cur].related_to
    return out


def _applies(rule: Mapping[str, Any], a: engine.Account) -> bool:
    scope = rule.get("scope") or {}
    books, accts = scope.get("books") or [], scope.get("accounts") or []
    if not books and not accts:
        return True
    return a.book in books or a.account_id in accts


def _matches(rule: Mapping[str, Any], chain: Sequence[engine.Security]) -> bool:
    match = rule.get("match") or {}
    looked = chain if rule.get("look_through", True) else chain[:1]
    for sec in looked:
        attrs = {"symbols": {sec.symbol}, "issuers": {sec.issuer}, "sectors": {sec.sector},
                 "countries": {sec.country}, "esg_tags": set(sec.esg_tags)}
        if any(set(v) & attrs[k] for k, v in match.items()):
            return True
    return False


def _floor_div(a: Fraction, b: Fraction) -> int:
    return math.floor(a / b)


def eligibility(req: engine.AllocationRequest, rules: Sequence[Mapping[str, Any]],
                meanings: Mapping[str, CelMeaning]
                ) -> dict[str, tuple[str, Any]]:
    """Per account: ("excluded", (ids, codes)) | ("cap_excluded", id) |
    ("eligible", (cap, cap id, minimum threshold, minimum id))."""
    chain = chain_of(req.symbol, req.securities)
    ultimate = chain[-1].issuer
    px = Fraction(req.avg_px)
    out: dict[str, tuple[str, Any]] = {}
    for a in req.accounts:
        mine = [r for r in rules if _applies(r, a)]
        ids: set[str] = set()
        codes: set[str] = set()
        if a.status != "active":
            ids.add("SYS-STATUS")
            codes.add("ACCOUNT_" + a.status.upper())
        for r in mine:
            kind = r["kind"]
            if kind == "exclude" and _matches(r, chain):
                ids.add(r["id"])
            elif kind == "side" and req.side.value in r["forbid"] and (
                    not r.get("match") or _matches(r, chain)):
                ids.add(r["id"])
                codes.add("SIDE_FORBIDDEN")
            elif kind == "cel":
                hit = meanings[r["id"]](a, chain, req.side)
                if hit is True or hit == "error":
                    ids.add(r["id"])
                    codes.add("CUSTOM_RULE" if hit is True else "CUSTOM_RULE_ERROR")
        if ids:
            out[a.account_id] = ("excluded", (ids, codes))
            continue
        cap: int | None = None
        cap_id: str | None = None
        if req.side is engine.Side.BUY:
            caps = [r for r in mine if r["kind"] == "issuer_cap"]
            if caps:
                tight = min(caps, key=lambda r: Fraction(Decimal(str(r["max_pct_nav"]))))
                exposure = Fraction(0)
                for s, q in a.positions.items():
                    if s in req.securities and chain_of(s, req.securities)[-1].issuer == ultimate:
                        ref = req.securities[s].price
                        exposure += Fraction(q) * (px if s == req.symbol or ref is None
                                                   else Fraction(ref))
                money = Fraction(Decimal(str(tight["max_pct_nav"]))) * Fraction(a.nav) / 100 \
                    - exposure
                cap, cap_id = (_floor_div(money, px) if money > 0 else 0), tight["id"]
            bp = _floor_div(Fraction(a.cash), px) if a.cash > 0 else 0
            if cap is None or bp < cap:
                cap, cap_id = bp, "SYS-BUYING-POWER"
        elif req.side is engine.Side.SELL:
            held = max(math.floor(a.position(req.symbol)), 0)
            cap, cap_id = held, "SYS-HOLDINGS"
        if cap is not None and cap <= 0:
            out[a.account_id] = ("cap_excluded", cap_id)
            continue
        threshold, min_id = 0, None
        for r in mine:
            if r["kind"] == "min_allocation":
                t = int(r.get("min_qty") or 0)
                notional = Fraction(Decimal(str(r.get("min_notional") or 0)))
                if notional > 0:
                    t = max(t, math.ceil(notional / px))
                threshold, min_id = t, r["id"]
        out[a.account_id] = ("eligible", (cap, cap_id, threshold, min_id))
    return out


def weight(method: str, a: engine.Account, req: engine.AllocationRequest) -> Fraction:
    if method == "pro_rata":
        return Fraction(a.intended_qty or 0)
    if method == "pari_passu":
        return Fraction(a.nav)
    if method == "equal":
        return Fraction(1)
    if method == "manual":
        return Fraction((req.preallocations or {}).get(a.account_id, 0))
    target = Fraction(a.target_weight or 0) * Fraction(a.nav)
    held = Fraction(a.position(req.symbol)) * Fraction(req.avg_px)
    if a.target_weight is None:
        return Fraction(0)
    return target - held if req.side is engine.Side.BUY else held - target


@dataclass
class Split:
    alloc: dict[str, int] = field(default_factory=dict)
    bound: set[str] = field(default_factory=set)      # clipped, or held by the cap
    odd_lot: str | None = None
    leftover: int = 0


def split(total: int, lot: int, parts: Sequence[tuple[str, Fraction, int | None]],
          rank: Mapping[str, int]) -> Split:
    """docs/engine.md "Rounding", steps 1-5, in fractions."""
    res = Split()
    if total <= 0 or not parts:
        res.leftover = max(total, 0)
        return res
    caps = {aid: cap for aid, _w, cap in parts}
    weights = {aid: w for aid, w, _cap in parts}
    # 1. Caps first: clip everyone whose share exceeds their cap, re-split, until stable.
    remaining = total
    active = [aid for aid, _w, _c in parts]
    while True:
        wsum = sum(weights[x] for x in active)
        over = [x for x in active
                if caps[x] is not None and remaining * weights[x] / wsum > caps[x]]  # type: ignore[operator]
        if not over:
            break
        for x in over:
            c = caps[x] or 0
            res.alloc[x] = c - c % lot
            res.bound.add(x)
            remaining -= res.alloc[x]
        active = [x for x in active if x not in over]
        if not active:
            break

    def room(x: str, q: int) -> bool:
        c = caps[x]
        return c is None or res.alloc[x] + q <= c

    def first_with_room(q: int) -> str | None:
        for x in sorted(caps, key=lambda y: rank[y]):
            if room(x, q):
                return x
        return None

    if not active:
        odd = remaining % lot
        res.leftover = remaining - odd
        if odd:
            taker = first_with_room(odd)
            if taker is None:
                res.leftover += odd
            else:
                res.alloc[taker] += odd
                res.odd_lot = taker
        return res
    wsum = sum(weights[x] for x in active)
    share = {x: remaining * weights[x] / wsum for x in active}
    # 2. Round down to the lot size.
    for x in active:
        res.alloc[x] = math.floor(share[x] / lot) * lot
    left = remaining - sum(res.alloc[x] for x in active)
    lots, odd = divmod(left, lot)
    # 3. Left-over lots, one each, by largest remainder, then tie-break; an account without
    # room is skipped, and held by its cap if a later one takes the lot.
    order = sorted(active, key=lambda x: (-(share[x] - res.alloc[x]), rank[x]))
    while lots:
        skipped: list[str] = []
        given = False
        for x in order:
            if not lots:
                break
            if room(x, lot):
                res.alloc[x] += lot
                lots -= 1
                given = True
                res.bound.update(skipped)
                skipped = []
            else:
                skipped.append(x)
        if not given:
            break
    odd += lots * lot
    # 4. The odd lot: largest remaining shortfall, then tie-break, among those with room.
    if odd:
        by_need = sorted(active, key=lambda x: (-(share[x] - res.alloc[x]), rank[x]))
        takers = [x for x in by_need if room(x, odd)]
        if takers:
            taker = takers[0]
            res.bound.update(by_need[:by_need.index(taker)])
            res.alloc[taker] += odd
            res.odd_lot = taker
        else:
            # Everyone is at a cap: only the part below a lot can go, first in tie-break
            # order with room; the rest stays unallocated (5.).
            res.bound.update(active)
            part = odd % lot
            res.leftover = odd - part
            taker = first_with_room(part) if part else None
            if taker is None:
                res.leftover += part
            else:
                res.alloc[taker] += part
                res.odd_lot = taker
    return res


def tiered(total: int, lot: int, members: Sequence[engine.Account],
           weights: Mapping[str, Fraction], caps: Mapping[str, int | None],
           rank: Mapping[str, int]) -> Split:
    """docs/engine.md "Methods", tiered: tiers in ascending order up to their demand."""
    out = Split()
    remaining = total
    tiers = sorted({a.tier for a in members})
    for tier in tiers:
        if remaining <= 0:
            break
        group = [a for a in members if a.tier == tier]
        demand: dict[str, int | None] = {}
        for a in group:
            want = int(a.intended_qty) if a.intended_qty is not None else None
            cap = caps[a.account_id]
            demand[a.account_id] = (want if cap is None else cap if want is None
                                    else min(want, cap))
        if any(d is None for d in demand.values()):
            give = remaining
        else:
            give = min(remaining, sum(d - d % lot for d in demand.values()))  # type: ignore[operator]
        res = split(give, lot, [(a.account_id, weights[a.account_id], demand[a.account_id])
                                for a in group], rank)
        out.alloc.update(res.alloc)
        for a in group:
            cap, want = caps[a.account_id], a.intended_qty
            # The cap, not the intention, set its demand, and it got it.
            if cap is not None and (want is None or cap < want) \
                    and res.alloc.get(a.account_id, 0) + lot > cap:
                out.bound.add(a.account_id)
        out.odd_lot = res.odd_lot or out.odd_lot
        remaining -= give - res.leftover
    if remaining > 0:
        ids = sorted(a.account_id for a in members)
        room = {x: (None if (c := caps[x]) is None else c - out.alloc.get(x, 0)) for x in ids}
        res = split(remaining, lot, [(x, weights[x], room[x]) for x in ids], rank)
        for x, q in res.alloc.items():
            out.alloc[x] = out.alloc.get(x, 0) + q
        out.bound |= res.bound
        out.odd_lot = res.odd_lot or out.odd_lot
        remaining = res.leftover
    out.leftover = remaining
    return out


def decide(req: engine.AllocationRequest, rules: Sequence[Mapping[str, Any]],
           meanings: Mapping[str, CelMeaning], scheme: Mapping[str, Any]) -> Expected:
    total = int(req.executed_qty)
    lot = req.securities[req.symbol].lot_size
    elig = eligibility(req, rules, meanings)
    ids = sorted(a.account_id for a in req.accounts)
    accounts = {a.account_id: a for a in req.accounts}
    eligible = [x for x in ids if elig[x][0] == "eligible"]
    methods = [req.method or ("manual" if req.preallocations else scheme.get("method",
                                                                              "pro_rata"))]
    methods += [m for m in scheme.get("fallback", []) if m not in methods]
    rotation = req.rotation_offset if scheme.get("tie_break") == "rotation" else 0
    n = len(eligible)
    rank = {x: ((i - rotation % n) % n if rotation else i) for i, x in enumerate(eligible)}
    exp = Expected(method=None)
    for x in ids:
        kind, info = elig[x]
        if kind == "excluded":
            exp.status[x], exp.rules[x], exp.codes[x] = "excluded", info[0], info[1]
        elif kind == "cap_excluded":
            exp.status[x], exp.rules[x] = "excluded", {info}
        else:
            exp.caps[x] = info[0]
    weights: dict[str, Fraction] = {}
    for m in methods:
        base = scheme.get("sub_method", "pro_rata") if m == "tiered" else m
        weights = {x: w for x in eligible if (w := weight(base, accounts[x], req)) > 0}
        if weights:
            exp.method = m
            break
    for x in eligible:
        if x not in weights:
            exp.status[x], exp.rules[x] = "not_participating", {"SYS-METHOD"}
    live = [x for x in eligible if x in weights]
    dropped: set[str] = set()
    res = Split()
    assigned: set[str] = set()
    while live and total > 0:
        caps = {x: elig[x][1][0] for x in live}
        if exp.method == "tiered":
            res = tiered(total, lot, [accounts[x] for x in live], weights, caps, rank)
        else:
            res = split(total, lot, [(x, weights[x], caps[x]) for x in live], rank)
        assigned = set(res.alloc)
        below = [x for x in live if x in assigned and res.alloc[x] < elig[x][1][2]]
        if not below:
            break
        dropped.update(below)
        live = [x for x in live if x not in below]
    else:
        res = Split()
    for x in dropped:
        exp.status[x], exp.rules[x] = "dropped", {elig[x][1][3]}
    for x in live:
        q = res.alloc.get(x, 0) if total > 0 else 0
        cap_id = elig[x][1][1]
        if x in res.bound:
            exp.status[x], exp.rules[x] = "capped", {cap_id}
        elif q == 0:
            exp.status[x], exp.rules[x] = "dropped", {"SYS-ROUNDING"}
        else:
            exp.status[x], exp.rules[x] = "allocated", {f"SCHEME-{scheme.get('name')}"}
        if q:
            exp.qty[x] = q
    exp.odd_lot = res.odd_lot if live and total > 0 else None
    exp.unallocated = total - sum(exp.qty.values())
    if exp.unallocated:
        if not eligible and not any(elig[x][0] == "eligible" for x in ids):
            exp.binding = set().union(*(exp.rules[x] for x in ids)) if ids else set()
        elif not live and not dropped:
            exp.binding = {"SYS-METHOD"}
        elif not live:
            exp.binding = {elig[x][1][3] for x in dropped}
        else:
            exp.binding = {elig[x][1][1] for x in live if x in res.bound}
    return exp
