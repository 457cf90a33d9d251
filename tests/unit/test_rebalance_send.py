"""A rebalance's blocks as the gateway's orders: one per block and book."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from engine.rebalance_blocks import Block
from gateway.rebalance_send import orders_for


def _block(pre: tuple[tuple[str, Decimal], ...], side: str = "buy") -> Block:
    return Block("RB-1234abcd-AAPL-BUY", "AAPL", side,
                 sum((q for _a, q in pre), Decimal(0)), pre, "rebalance to model m")


def test_one_book_one_order_under_the_block_id() -> None:
    pre = (("A1", Decimal(100)), ("A2", Decimal(50)))
    [order] = orders_for([_block(pre)], {"A1": "CORE", "A2": "CORE"})
    assert order == {
        "cl_ord_id": "RB-1234abcd-AAPL-BUY", "book": "CORE", "symbol": "AAPL", "side": "buy",
        "qty": "150", "ord_type": "1",
        "preallocations": [{"account_id": "A1", "qty": "100"},
                           {"account_id": "A2", "qty": "50"}],
        "preallocation_reason": "rebalance to model m"}


def test_a_block_over_two_books_is_one_order_per_book() -> None:
    pre = (("A1", Decimal(100)), ("B1", Decimal(30)), ("A2", Decimal(50)))
    orders = orders_for([_block(pre)], {"A1": "CORE", "A2": "CORE", "B1": "GROWTH"})
    assert [(o["cl_ord_id"], o["book"], o["qty"]) for o in orders] == [
        ("RB-1234abcd-AAPL-BUY-CORE", "CORE", "150"),
        ("RB-1234abcd-AAPL-BUY-GROWTH", "GROWTH", "30")]


@given(st.lists(st.tuples(st.sampled_from(["X", "Y", "Z"]), st.integers(1, 10_000)),
                min_size=1, max_size=30))
def test_every_account_quantity_goes_out_once_in_its_own_book(
        lines: list[tuple[str, int]]) -> None:
    pre = tuple((f"{book}{i}", Decimal(q)) for i, (book, q) in enumerate(lines))
    book_of = {a: a[0] for a, _q in pre}
    orders = orders_for([_block(pre)], book_of)
    sent = [(p["account_id"], Decimal(p["qty"]), o["book"])
            for o in orders for p in o["preallocations"]]
    assert sorted(sent) == sorted((a, q, book_of[a]) for a, q in pre)
    assert all(Decimal(o["qty"]) == sum(Decimal(p["qty"]) for p in o["preallocations"])
               for o in orders)
    assert len({o["cl_ord_id"] for o in orders}) == len(orders)
