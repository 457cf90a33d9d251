"""The ledger's running sums are exactly the sums of its fills, whatever happened to them."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.ledger import FillLedger

_qty = st.integers(min_value=1, max_value=50_000).map(Decimal)
_px = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("9999.9999"), places=4)
_step = st.tuples(st.sampled_from(["fill", "fill", "fill", "bust", "correct"]), _qty, _px,
                  st.integers(min_value=0, max_value=40))


@given(st.lists(_step, max_size=60))
def test_running_sums_equal_the_fills_sums(steps: list[tuple[str, Decimal, Decimal, int]]
                                            ) -> None:
    ledger = FillLedger()
    for n, (kind, qty, px, pick) in enumerate(steps):
        if kind == "fill" or not ledger.fills:
            ledger.apply_fill(f"X{n}", qty, px)
        else:
            target = ledger.fills[pick % len(ledger.fills)][0]
            if kind == "bust":
                assert ledger.bust(target, f"B{n}")
            else:
                assert ledger.correct(target, f"C{n}", qty, px)
        assert ledger.cum_qty == sum((q for _, q, _ in ledger.fills), Decimal(0))
        assert ledger.notional == sum((q * p for _, q, p in ledger.fills), Decimal(0))
    rebuilt = FillLedger(fills=list(ledger.fills))
    assert (rebuilt.cum_qty, rebuilt.avg_px) == (ledger.cum_qty, ledger.avg_px)
