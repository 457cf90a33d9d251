"""`fixalloc rebalance --send URL`: a rebalance's blocks handed to a running gateway.

The gateway routes one order per block and book (POST /orders: the desk, see
gateway/fix/desk.py), each carrying its accounts' quantities as a pre-allocation, so the
fills are allocated back to the accounts that asked for them, through the same checks and
approval policies as an OMS's block. A block whose accounts sit in several books becomes
one order per book (ClOrdID = block id + book), because a FIX order names one book.

Sending again is safe: the gateway answers a ClOrdID it has already taken today with that
order as it stands. So a request cut off by the network is retried, and a second run of
the same rebalance on the same day places nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from engine.rebalance_blocks import Block

# The gateway takes at most this many orders per request (gateway/http_orders.py).
BATCH = 200


class SendError(RuntimeError):
    """The gateway refused the request (not a block: the request itself)."""


def orders_for(blocks: Sequence[Block], book_of: Mapping[str, str]) -> list[dict[str, Any]]:
    """POST /orders bodies' entries: one market order per block and book."""
    out: list[dict[str, Any]] = []
    for b in blocks:
        by_book: dict[str, list[tuple[str, Decimal]]] = {}
        for account, qty in b.preallocations:
            by_book.setdefault(book_of[account], []).append((account, qty))
        for book, lines in sorted(by_book.items()):
            cl = b.block_id if len(by_book) == 1 else f"{b.block_id}-{book}"
            out.append({
                "cl_ord_id": cl, "book": book, "symbol": b.symbol, "side": b.side,
                "qty": str(sum((q for _a, q in lines), Decimal(0))), "ord_type": "1",
                "preallocations": [{"account_id": a, "qty": str(q)} for a, q in lines],
                "preallocation_reason": b.preallocation_reason[:1000],
            })
    return out


@retry(retry=retry_if_exception_type(httpx.TransportError), stop=stop_after_attempt(5),
       wait=wait_exponential(multiplier=0.2, max=3), reraise=True)
def _post(client: httpx.Client, body: Mapping[str, Any]) -> httpx.Response:
    return client.post("/orders", json=body)


def send(url: str, token: str | None, orders: Sequence[Mapping[str, Any]], *,
         reason: str, run: Mapping[str, Any] | None = None, timeout: float = 150.0
         ) -> list[dict[str, Any]]:
    """The gateway's answer for every order, in order; SendError if it refused a request.
    `run` (the run record) is stored by the gateway with each request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers: list[dict[str, Any]] = []
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
        for start in range(0, len(orders), BATCH):
            batch = list(orders[start:start + BATCH])
            resp = _post(client, {"orders": batch, "reason": reason,
                                  **({"run": dict(run)} if run is not None else {})})
            if resp.status_code != 200:
                try:
                    detail = resp.json().get("detail", resp.text)
                except ValueError:
                    detail = resp.text
                raise SendError(f"{url}/orders answered {resp.status_code}: {detail}")
            answers.extend(resp.json()["orders"])
    return answers
