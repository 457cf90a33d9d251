"""The statistics of `audit fairness`: per-account outcomes, the tests, the correction.

fairness.py loads each block's receipts (what an account received against its exact
share); this module sums them per account or group and asks whether what each received
is beyond what fair rounding explains (the method is in fairness.METHOD_TEXT).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

_EXACT_MAX = 2000  # Poisson-binomial pmf above this many blocks costs seconds: normal approx


@dataclass(frozen=True)
class Receipt:
    """One account in one block's allocation in force."""

    block: str
    trade_date: str
    account_id: str
    groups: Mapping[str, str]
    received: Decimal
    intended: Decimal | None  # None: not assessed (capped by a rule, or method not exact)
    lot: int
    extra_lot: bool
    odd_lot: bool
    entitlement: Decimal = Decimal(0)  # e = E - F
    p_extra: float = 0.0
    p_odd: float = 0.0
    variance: float = 0.0  # of `received` under the fair mechanism, shares^2
    price_bps: Decimal | None = None  # positive: better than the block average for it


@dataclass(frozen=True)
class Figures:
    key: str
    blocks: int
    assessed: int
    received: str
    intended: str
    fill_rate: float | None
    mean_deviation_pct: float | None
    extra_lots: int
    extra_lots_expected: float
    odd_lots: int
    odd_lots_expected: float
    residual_shares: str
    residual_due: str
    price_bps_mean: Decimal | None
    price_bps_max_abs: Decimal | None
    z_fill: float | None
    p_fill: float | None
    p_lots: float | None
    p_adjusted: float | None = None
    flagged: bool = False
    direction: str = ""
    reasons: tuple[str, ...] = ()


# ---- statistics ---------------------------------------------------------------------------

def poisson_binomial_pvalue(observed: int, probs: Sequence[float]) -> float:
    """Two-sided p-value of `observed` successes among independent Bernoulli(probs)."""
    import numpy as np  # scipy costs ~1 s to import: only when figures are computed
    from scipy import stats
    ps = np.asarray([p for p in probs if p > 0.0], dtype=float)
    if ps.size == 0:
        return 1.0 if observed == 0 else 0.0
    if observed > ps.size:
        return 0.0
    if np.all(np.abs(ps - ps[0]) < 1e-12) and ps[0] < 1.0:
        return float(stats.binomtest(observed, int(ps.size), float(ps[0])).pvalue)
    if ps.size > _EXACT_MAX:
        mean, var = float(ps.sum()), float((ps * (1 - ps)).sum())
        if var <= 0:
            return 1.0 if abs(observed - mean) < 0.5 else 0.0
        z = (abs(observed - mean) - 0.5) / math.sqrt(var)  # continuity-corrected
        return float(min(1.0, 2 * stats.norm.sf(max(z, 0.0))))
    pmf = stats.poisson_binom(ps).pmf(np.arange(ps.size + 1))
    # As binomtest does: every outcome at most as likely as the one observed.
    return float(min(1.0, pmf[pmf <= pmf[observed] * (1 + 1e-7)].sum()))


def adjust(pvalues: Sequence[float], correction: str = "holm") -> list[float]:
    """Holm step-down or Benjamini-Hochberg adjusted p-values, in the given order."""
    import numpy as np
    from scipy import stats
    if not pvalues:
        return []
    if correction == "bh":
        return [float(x) for x in stats.false_discovery_control(np.asarray(pvalues))]
    if correction != "holm":
        raise ValueError(f"unknown correction {correction!r}, expected holm or bh")
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass
class _Unit:
    """One account's (or one group's) outcome in one block."""

    received: Decimal = Decimal(0)  # by every member (capped ones too)
    assessed_received: Decimal = Decimal(0)  # by the members with an intended share
    intended: Decimal = Decimal(0)
    variance: float = 0.0
    assessed: bool = False
    extra: int = 0
    odd: int = 0
    p_extra: list[float] = field(default_factory=list)
    p_odd: float = 0.0
    residual: Decimal = Decimal(0)
    due: Decimal = Decimal(0)
    prices: list[Decimal] = field(default_factory=list)


def _units(receipts: Iterable[Receipt], key: str) -> dict[str, dict[str, _Unit]]:
    units: dict[str, dict[str, _Unit]] = defaultdict(lambda: defaultdict(_Unit))
    for r in sorted(receipts, key=lambda x: (x.block, x.account_id)):
        u = units[r.account_id if key == "account" else r.groups[key]][r.block]
        u.received += r.received
        if r.price_bps is not None:
            u.prices.append(r.price_bps)
        if r.intended is None:
            continue
        u.assessed = True
        u.assessed_received += r.received
        u.intended += r.intended
        u.variance += r.variance
        u.extra += r.extra_lot
        u.odd += r.odd_lot
        u.p_extra.append(r.p_extra)
        u.p_odd += r.p_odd
        u.residual += r.received - (r.intended - r.entitlement)
        u.due += r.entitlement
    return units


def _figures(key: str, blocks: Mapping[str, _Unit]) -> Figures:
    from scipy import stats

    done = [u for u in blocks.values() if u.assessed and u.intended > 0]
    received = sum((u.assessed_received for u in done), Decimal(0))
    intended = sum((u.intended for u in done), Decimal(0))
    devs = [float(u.assessed_received / u.intended) - 1 for u in done]
    var = sum(u.variance / float(u.intended) ** 2 for u in done)
    z = p_fill = None
    if done:
        if var > 0:
            z = sum(devs) / math.sqrt(var)
            p_fill = float(2 * stats.norm.sf(abs(z)))
        else:  # nothing to round: any deviation is beyond what rounding explains
            p_fill = 1.0 if all(abs(d) < 1e-12 for d in devs) else 0.0
    probs = [p for u in done for p in u.p_extra]
    extra = sum(u.extra for u in done)
    prices = [p for u in blocks.values() for p in u.prices]
    return Figures(
        key=key, blocks=len(blocks), assessed=len(done),
        received=str(sum((u.received for u in blocks.values()), Decimal(0))),
        intended=f"{intended:.2f}", fill_rate=float(received / intended) if intended else None,
        mean_deviation_pct=100 * sum(devs) / len(devs) if devs else None,
        extra_lots=extra, extra_lots_expected=sum(probs),
        odd_lots=sum(u.odd for u in done), odd_lots_expected=sum(u.p_odd for u in done),
        residual_shares=f"{sum((u.residual for u in done), Decimal(0)):.2f}",
        residual_due=f"{sum((u.due for u in done), Decimal(0)):.2f}",
        price_bps_mean=(sum(prices, Decimal(0)) / len(prices)).quantize(Decimal("0.0001"))
        if prices else None,
        price_bps_max_abs=max(abs(p) for p in prices) if prices else None,
        z_fill=z, p_fill=p_fill, p_lots=poisson_binomial_pvalue(extra, probs) if done else None)


def _judge(figures: list[Figures], alpha: float, correction: str) -> list[Figures]:
    """Correct the family's p-values and flag what is beyond chance (or off the average)."""
    pvals = [(i, name, p) for i, f in enumerate(figures)
             for name, p in (("fill rate", f.p_fill), ("extra lots", f.p_lots)) if p is not None]
    adjusted = adjust([p for *_, p in pvals], correction)
    best: dict[int, tuple[float | None, str]] = {}
    for (i, test, _p), p_adj in zip(pvals, adjusted, strict=True):
        if i not in best or p_adj < (best[i][0] or 0.0):
            best[i] = (p_adj, test)
    out = []
    for i, f in enumerate(figures):
        adj, name = best.get(i, (None, ""))
        reasons, direction = [], ""
        if adj is not None and adj < alpha:
            reasons.append(f"{name}: adjusted p={adj:.3g} < {alpha}")
            ahead = ((f.z_fill or 0.0) > 0 if name == "fill rate"
                     else f.extra_lots > f.extra_lots_expected)
            direction = "favoured" if ahead else "disfavoured"
        if f.price_bps_max_abs:
            reasons.append(f"price off the block average by up to {f.price_bps_max_abs:.2f} bps")
        out.append(replace(f, p_adjusted=adj, flagged=bool(reasons), direction=direction,
                           reasons=tuple(reasons)))
    return out
