"""POST /orders: blocks a person hands to the gateway (the desk, gateway/fix/desk.py).

`fixalloc rebalance --send` uses it. Each block goes the way of an OMS's D: the same
checks (a bad one is rejected with the D's own reason), pre-allocations, approval
policies, allocation and J. A ClOrdID already used today answers with that order as it
stands, so a retried request never makes a second order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth.principals import Principal
from gateway.http_auth import Guard
from gateway.http_lifecycle import dispatcher_answer

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_ORDERS_PER_REQUEST = 1000
MAX_LINES = 100_000

Submit = Callable[[Sequence[dict[str, Any]], str], list[dict[str, Any]]]


class PreallocationLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_id: Annotated[str, Field(pattern=_ID)]
    qty: Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=8)]


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cl_ord_id: Annotated[str, Field(pattern=_ID)]
    book: Annotated[str, Field(pattern=_ID)]
    symbol: Annotated[str, Field(min_length=1, max_length=32)]
    side: Annotated[str, Field(pattern="^(buy|sell|sell_short)$")]
    qty: Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=8)]
    ord_type: Annotated[str, Field(pattern="^[12]$")] = "1"  # market or limit
    price: Annotated[Decimal | None, Field(gt=0, max_digits=20, decimal_places=8)] = None
    preallocations: Annotated[list[PreallocationLine], Field(max_length=MAX_LINES)] = []
    preallocation_reason: Annotated[str | None, Field(max_length=1000)] = None


class RunRecord(BaseModel):
    """What a rebalance run is recorded by (its run.json): stored with the request."""

    model_config = ConfigDict(extra="allow")
    engine: Annotated[str, Field(max_length=64)]
    model: Annotated[str, Field(max_length=128)]
    model_version: Annotated[str, Field(max_length=128)]
    rulebook_version: Annotated[str, Field(max_length=128)]
    inputs_hash: Annotated[str, Field(max_length=128)]
    output_hash: Annotated[str, Field(max_length=128)]


class OrdersRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orders: Annotated[list[OrderRequest], Field(min_length=1,
                                                max_length=MAX_ORDERS_PER_REQUEST)]
    reason: Annotated[str, Field(max_length=1000)] = ""
    run: RunRecord | None = None
    """The rebalance run these blocks come from (`fixalloc rebalance --send` sends it)."""


def add_order_endpoints(app: FastAPI, submit: Submit | None, guard: Guard) -> None:
    may_submit = Depends(guard.needs("submit_orders"))

    @app.post("/orders", summary="Hand block orders to the gateway (the desk): each is "
                                 "checked, routed and allocated like an OMS's")
    def orders(body: OrdersRequest, who: Principal = may_submit) -> dict[str, Any]:
        if submit is None:
            raise HTTPException(status_code=503, detail="the dispatcher is not running")
        ids = [o.cl_ord_id for o in body.orders]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise HTTPException(status_code=422,
                                detail=f"cl_ord_id used twice in one request: {repeated}")
        for o in body.orders:
            if o.ord_type == "2" and o.price is None:
                raise HTTPException(status_code=422,
                                    detail=f"{o.cl_ord_id}: a limit order needs a price")
            if o.preallocations:
                total = sum((line.qty for line in o.preallocations), Decimal(0))
                if total != o.qty:
                    raise HTTPException(status_code=422, detail=(
                        f"{o.cl_ord_id}: preallocations sum to {total}, not qty {o.qty}"))
        with guard.recording(who, "submit_orders", "orders.submit",
                             "orders:" + ",".join(ids[:20]) + ("..." if len(ids) > 20 else ""),
                             reason=body.reason or None) as note:
            if body.run is not None:
                # The run's versions and hashes go on record with the orders it produced.
                note["rebalance_run"] = body.run.model_dump(mode="json")
            with dispatcher_answer():
                results = submit([o.model_dump() for o in body.orders], who.actor())
            note["result"] = dict(Counter(r["status"] for r in results))
        return {"orders": results}
