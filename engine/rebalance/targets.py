"""An account's targets after restrictions, redistribution and issuer caps (rule 2).

Most of it depends only on the buy verdicts, which accounts that agree on every field the
rules read share (a `BuyProfile`), and on the weight the restrictions free, which many
accounts share too: the target columns are made once per profile and freed weight, and an
account only adds what depends on its own holdings (side rules, issuer caps). Every value
is computed by the same operations on the same operands as rule 2 states them, so the
targets are the same to the last digit whoever shares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from operator import add, mul, truediv
from typing import TYPE_CHECKING

from engine.model import Account, Reason, Side
from engine.rebalance.restrictions import Keys, Scope
from engine.rebalance.rows import _PCT, _ZERO, _ZERO_PCT, TargetPct

if TYPE_CHECKING:
    from engine.rebalance.context import Run
    from engine.rebalance.universe import Universe

Verdict = tuple[Keys, tuple[Decimal, int] | None]
# (row index, symbol, why it may not be bought, whether only a side rule forbids it)
Blocked = tuple[int, str, Reason, bool]
Cap = tuple[int, Decimal, int]  # (row index, % of value, rule)
_MAX_COLUMNS = 16


class BuyProfile:
    """What the buy verdicts on the model's securities mean for the targets."""

    __slots__ = ("_columns", "base", "blocked", "blocked_at", "caps", "open", "side_rule",
                 "verdicts")

    def __init__(self, run: Run, a: Account, verdicts: dict[str, Verdict]) -> None:
        u = run.universe
        self.verdicts = verdicts
        self.blocked: dict[str, Reason] = {}
        self.blocked_at: list[Blocked] = []
        # Issuer caps by weight kind and cap, and those whose issuer has other instruments.
        self.caps: dict[tuple[int, str], list[Cap]] = {}
        shared: list[Cap] = []
        self.open: list[int] = []  # priced and not blocked: where freed weight goes
        for i, s in enumerate(u.symbols):
            if u.price[i] is None:
                continue
            excl, cap = verdicts[s]
            if excl:
                key = excl[0]
                reason = run.restr.reason(key, a, s, Side.BUY)
                self.blocked[s] = reason
                self.blocked_at.append((i, s, reason, run.restr.kind(key) == "side"))
            else:
                self.open.append(i)
                if cap is not None:
                    if s in run.shared_issuer:
                        shared.append((i, *cap))
                    else:
                        self.caps.setdefault((run.weight_kind[i], str(cap[0])), []).append(
                            (i, *cap))
        self.caps[(-1, "")] = shared
        self.side_rule = any(side for *_, side in self.blocked_at)
        price = dict(zip(u.symbols, u.price, strict=True))
        self.base = sum((t for s, t in run.targets.items()
                         if s not in self.blocked and price[s] is not None), _ZERO)
        self._columns: dict[str | None, TargetColumns] = {}

    def columns(self, run: Run, freed: Decimal) -> TargetColumns:
        """The model universe's targets before issuer caps, given the freed weight."""
        spread = freed > 0 and run.model.redistribution == "pro_rata" and self.base > 0
        # str() tells apart equal values of different exponents, which round differently.
        key = str(freed) if spread else None
        got = self._columns.get(key)
        if got is None:
            if len(self._columns) >= _MAX_COLUMNS:
                self._columns.pop(next(iter(self._columns)))
            got = self._columns[key] = TargetColumns(run, self, freed if spread else None)
        return got


class TargetColumns:
    """Per model symbol: the target (zero where blocked; a side rule's is the account's
    own), its row value (`target_pct`), and the issuer caps an account must check."""

    __slots__ = ("cap_checks", "target", "target_pct", "total")

    def __init__(self, run: Run, prof: BuyProfile, freed: Decimal | None) -> None:
        u = run.universe
        mp = u.model_pct
        # An open target gets freed weight pro rata: t + freed * t / base, per weight kind.
        kinds = run.weight_of_kind
        if freed is not None:
            kinds = list(map(add, kinds, map(truediv, map(mul, repeat(freed), kinds),
                                             repeat(prof.base))))
        kind_pct = [m if g == m else g.quantize(_PCT)
                    for g, m in zip(kinds, run.weight_of_kind, strict=True)]
        tgt = list(map(kinds.__getitem__, run.weight_kind))
        shown: dict[int, Decimal] = {}
        for i in u.unpriced:
            tgt[i] = _ZERO  # its weight, which is zero without a price
            shown[i] = mp[i]  # a row without a price shows the model weight
        for i, *_ in prof.blocked_at:
            tgt[i] = _ZERO
            shown[i] = mp[i] if mp[i] == _ZERO else _ZERO_PCT
        self.target = tgt
        self.target_pct = TargetPct(kind_pct, shown, run.weight_kind)
        self.total = None if prof.side_rule else sum(tgt, _ZERO)
        # A cap's headroom is the cap less the issuer's other holdings: with no other
        # instrument of the issuer that is exactly the cap, so only a target above it can
        # be clipped; an issuer with several instruments is checked per account.
        self.cap_checks = [c for (kind, _pct), caps in prof.caps.items()
                           if kind < 0 or kinds[kind] > caps[0][1] for c in caps]


@dataclass(slots=True)
class Targets:
    target: list[Decimal]               # per row symbol
    target_pct: TargetPct               # the rows' target_pct (model universe), shared
    target_patch: dict[int, Decimal]    # row index -> target_pct where the account's own
    total: Decimal | None               # sum of `target` in row order, when shared
    blocked: Mapping[str, Reason]       # why the account may not buy it
    must_sell: dict[str, Reason]        # excluded holdings
    capped: dict[str, tuple[Decimal, int]]


def account_targets(run: Run, a: Account, scope: Scope, u: Universe,
                    held: Mapping[str, Decimal], weight: Mapping[str, Decimal],
                    w_col: list[Decimal]) -> Targets:
    """Targets after restrictions and redistribution (pro rata over the open model
    targets, or left in cash), then issuer caps."""
    prof = run.profile(a, scope)
    entries, blocked = _blocked(run, a, scope, u, prof)
    freed = _ZERO
    own: dict[int, Decimal] = {}
    must_sell: dict[str, Reason] = {}
    mp = u.model_pct
    for i, s, reason, side in entries:
        t = mp[i]
        if side:
            # May not buy, may keep: at most its current weight.
            own[i] = tg = min(t, w_col[i]) if s in run.targets else _ZERO
            freed += t - tg
        else:
            freed += t
            if s in held:
                must_sell[s] = reason
    cols = prof.columns(run, freed)
    tgt = u.from_model(cols.target)
    capped: dict[str, tuple[Decimal, int]] = {}
    if cols.cap_checks:
        _clip_to_caps(run, u, cols, weight, w_col, own, capped)
    total = cols.total if u.model_at is None and not own else None
    patch: dict[int, Decimal] = {}
    if own:
        tgt = list(tgt) if tgt is cols.target else tgt
        for i, tg in own.items():
            tgt[i] = tg
            patch[i] = mp[i] if tg == mp[i] else tg.quantize(_PCT)
    return Targets(tgt, cols.target_pct, patch, total, blocked, must_sell, capped)


def _blocked(run: Run, a: Account, scope: Scope, u: Universe, prof: BuyProfile
             ) -> tuple[list[Blocked], Mapping[str, Reason]]:
    """What the account may not buy, in row order: the profile's, and holdings outside the
    model that a rule forbids buying."""
    if u.model_at is None:
        return prof.blocked_at, prof.blocked
    at = u.model_at
    entries = [(at[i], s, reason, side) for i, s, reason, side in prof.blocked_at]
    blocked = dict(prof.blocked)
    for i, s in enumerate(u.symbols):
        if s in run.targets or u.price[i] is None:
            continue
        excl, _cap = run.verdict(a, scope, s)
        if excl:
            reason = run.restr.reason(excl[0], a, s, Side.BUY)
            blocked[s] = reason
            entries.append((i, s, reason, run.restr.kind(excl[0]) == "side"))
    entries.sort(key=lambda e: e[0])
    return entries, blocked


def _clip_to_caps(run: Run, u: Universe, cols: TargetColumns, weight: Mapping[str, Decimal],
                  w_col: list[Decimal], own: dict[int, Decimal],
                  capped: dict[str, tuple[Decimal, int]]) -> None:
    """An issuer cap (% of value, less the account's other holdings of the same ultimate
    issuer) clips a target but never forces a sale on its own (a holding above the cap
    that the model would not sell is kept), but a sale the model asks for goes down to the
    cap. The clipped weight stays in cash."""
    exposure: dict[str | None, Decimal] | None = None
    at = u.model_at
    for j, pct, rule in cols.cap_checks:
        i = j if at is None else at[j]
        s = u.symbols[i]
        w = w_col[i]
        if s in run.shared_issuer:
            if exposure is None:
                exposure = _shared_exposure(run, weight)
            ex = exposure.get(run.issuer.get(s), _ZERO)
        else:  # the issuer's only instrument: its exposure is this weight, if any
            ex = _ZERO + w if w else _ZERO
        limit = pct - (ex - w)
        tg = cols.target[j]
        if tg > limit:
            limit = max(limit, _ZERO)
            own[i] = w if limit < w < tg else limit
            capped[s] = (pct, rule)


def _shared_exposure(run: Run, weight: Mapping[str, Decimal]) -> dict[str | None, Decimal]:
    """Weight per issuer with several instruments, summed in holding order."""
    exposure: dict[str | None, Decimal] = {}
    for h in filter(run.shared_issuer.__contains__, weight):
        w = weight[h]
        if w:
            issuer = run.issuer.get(h)
            exposure[issuer] = exposure.get(issuer, _ZERO) + w
    return exposure
