"""The accounts table's figures, in exact arithmetic: fill rate and the gap to pro rata.

Quantities are Decimals as the record stores them. Every ratio is computed as a Fraction
(exact) and rounded once, half to even, to the places it is shown with, so the page, the
tests and a person with a calculator agree to the last digit.

* fill rate = allocated / intended, to 4 places (0.7500, shown as 75.00 %); None without
  an intended quantity;
* plain pro-rata share = executed x intended / sum of intended (over every account of the
  decision that has one): the split with no rule, cap or lot applied;
* difference from pro rata = allocated - that share, to 2 places (shares).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

RATE_PLACES = Decimal("0.0001")
QTY_PLACES = Decimal("0.01")


def to_decimal(x: Fraction, places: Decimal) -> Decimal:
    """An exact fraction rounded once, half to even, to `places`."""
    with localcontext() as ctx:
        ctx.prec = 60
        value = Decimal(x.numerator) / Decimal(x.denominator)
        return value.quantize(places, rounding=ROUND_HALF_EVEN)


def fill_rate(allocated: Decimal, intended: Decimal | None) -> Decimal | None:
    """allocated / intended to 4 places; None when there is no positive intended quantity."""
    if intended is None or intended <= 0:
        return None
    return to_decimal(Fraction(allocated) / Fraction(intended), RATE_PLACES)


def percent(rate: Decimal | None) -> Decimal | None:
    """A 4-place rate as a 2-place percentage (0.7500 -> 75.00): exact, no rounding."""
    return None if rate is None else (rate * 100).quantize(QTY_PLACES)


def total_intended(intended: Iterable[Decimal | None]) -> Decimal:
    """The sum of the positive intended quantities (the pro-rata denominator)."""
    return sum((q for q in intended if q is not None and q > 0), Decimal(0))


def pro_rata_share(executed: Decimal, intended: Decimal | None,
                   total: Decimal) -> Fraction | None:
    """The account's exact share of `executed` pro rata to intended quantity."""
    if intended is None or intended <= 0 or total <= 0:
        return None
    return Fraction(executed) * Fraction(intended) / Fraction(total)


def pro_rata_diff(allocated: Decimal, executed: Decimal, intended: Decimal | None,
                  total: Decimal) -> Decimal | None:
    """allocated minus the plain pro-rata share, to 2 places; None without a share."""
    share = pro_rata_share(executed, intended, total)
    if share is None:
        return None
    return to_decimal(Fraction(allocated) - share, QTY_PLACES)
