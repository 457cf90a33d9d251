"""POST /prices, GET /prices: reference prices pushed by a feed, for internal crossing.

A feed (running under the operations machine token) pushes timestamped quotes; each
becomes an `engine.crossing.Quote` with source ``http:<source>`` in the node's
`MemoryPrices`, which keeps the newest per symbol: a quote older than the one held is
ignored and counted, so a feed that replays or races itself never moves a price back.

Prices are Decimals end to end. FastAPI reads JSON with `json.loads`, which turns
``190.1234567890123456789`` into a float (190.12345678901235) before any check could see
the digits that were sent, so this route reads JSON numbers as Decimals instead
(`_ExactDecimalRoute`); strings are Decimals as well.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from engine.crossing import PRICE_LIMIT, PRICE_PLACES, Quote, price_in_range
from gateway.auth.principals import Principal
from gateway.http_auth import Guard
from gateway.reference_prices import MemoryPrices

MAX_QUOTES_PER_REQUEST = 10_000
# 10,000 quotes at their longest, pretty-printed, stay well under this.
MAX_BODY_BYTES = 8 * 1024 * 1024
_SOURCE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


def _plain(v: Decimal) -> Decimal:
    # "1E+3" and "190.2500000000000000" are the prices 1000 and 190.25 (pydantic counts
    # decimal places by value); the engine's range check reads the exponent as written.
    # At most 24 significant digits here, so normalize() (28 digits) rounds nothing.
    exponent = v.as_tuple().exponent
    if isinstance(exponent, int) and (exponent > 0 or not price_in_range(v)):
        v = Decimal(format(v.normalize(), "f"))
    if not price_in_range(v):
        raise ValueError(f"must be below {PRICE_LIMIT:f} with at most {PRICE_PLACES} "
                         f"decimal places")
    return v


def _text_time(v: Any) -> Any:
    # pydantic would also take a number as Unix seconds: a feed sends ISO 8601 text.
    if not isinstance(v, str):
        raise ValueError("as_of must be an ISO 8601 date and time with its UTC offset "
                         "(e.g. 2026-11-30T15:59:30Z), as a string")
    return v


Price = Annotated[Decimal, Field(gt=0, lt=PRICE_LIMIT, decimal_places=PRICE_PLACES,
                                 allow_inf_nan=False), AfterValidator(_plain)]


class QuoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Annotated[str, Field(min_length=1, max_length=32)]
    last: Price
    bid: Price | None = None
    ask: Price | None = None
    as_of: Annotated[AwareDatetime, BeforeValidator(_text_time)]
    """ISO 8601 with its UTC offset (a time without one is refused)."""

    @model_validator(mode="after")
    def _bid_ask(self) -> QuoteIn:
        if (self.bid is None) != (self.ask is None):
            raise ValueError(f"{self.symbol}: give both bid and ask, or neither")
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError(f"{self.symbol}: bid {self.bid} is above ask {self.ask}")
        return self


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quotes: Annotated[list[QuoteIn], Field(min_length=1, max_length=MAX_QUOTES_PER_REQUEST)]
    source: Annotated[str, Field(pattern=_SOURCE)] = "push"
    """The feed's name; the quotes' source is ``http:<source>``."""

    @field_validator("quotes")
    @classmethod
    def _one_quote_per_symbol(cls, quotes: list[QuoteIn]) -> list[QuoteIn]:
        # Which of two quotes for a symbol wins would depend on their order: refuse both.
        twice = sorted(s for s, n in Counter(q.symbol for q in quotes).items() if n > 1)
        if twice:
            raise ValueError(f"symbol given twice in one request: {twice}")
        return quotes


class _ExactDecimalRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # NaN and Infinity become Decimals too, which the price fields then refuse by
            # name (allow_inf_nan=False) rather than as a body that is not JSON.
            self._json = json.loads(await self.body(), parse_float=Decimal,
                                    parse_constant=Decimal)
        return self._json


class _ExactDecimalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            try:
                return await handler(_ExactDecimalRequest(request.scope, request.receive))
            except RequestValidationError as exc:
                # FastAPI's own answer writes each refused input as a float: 1.00...01 as
                # 1.0, and NaN not at all (a 500). The input goes back as it was sent.
                return JSONResponse(status_code=422, content={"detail": jsonable_encoder(
                    exc.errors(), custom_encoder={Decimal: _text})})

        return exact


def _text(v: Decimal) -> str:
    return format(v, "f")


def _shown(q: Quote) -> dict[str, Any]:
    # FastAPI would write a Decimal as a float: prices go out as the strings they are.
    return {k: _text(v) if isinstance(v, Decimal) else v for k, v in q.to_json().items()}


FUTURE_TOLERANCE = timedelta(seconds=60)
"""How far ahead of the gateway's clock a quote may be stamped. Held, a quote from the
future would stay the newest and make every real quote after it look older (ignored)."""


def add_price_endpoints(app: FastAPI, prices: MemoryPrices | None, guard: Guard,
                        now: Callable[[], datetime] | None = None) -> None:
    router = APIRouter(route_class=_ExactDecimalRoute)
    may_push = Depends(guard.needs("push_prices"))

    def held() -> MemoryPrices:
        if prices is None:
            raise HTTPException(status_code=503,
                                detail="reference prices are not kept on this gateway")
        return prices

    @router.post("/prices", max_body_size=MAX_BODY_BYTES,
                 summary="Push reference prices for internal crossing: the newest quote per "
                         "symbol is kept, an older one is ignored and counted")
    def push(body: PushRequest, who: Principal = may_push) -> dict[str, Any]:
        store = held()
        source = f"http:{body.source}"
        try:
            # Every quote is built before any is kept: a refused request changes nothing.
            quotes = [Quote(symbol=q.symbol, last=q.last, bid=q.bid, ask=q.ask,
                            as_of=q.as_of, source=source) for q in body.quotes]
        except ValueError as exc:  # the model's checks should refuse everything first
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        limit = (now() if now else datetime.now(UTC)) + FUTURE_TOLERANCE
        ahead = [q.symbol for q in quotes if q.as_of > limit]
        if ahead:
            raise HTTPException(status_code=422, detail=(
                f"as_of is more than {FUTURE_TOLERANCE.seconds} s ahead of the gateway's "
                f"clock for {', '.join(ahead[:10])}; a quote from the future would hide "
                "every real one after it"))
        symbols = [q.symbol for q in quotes]
        with guard.recording(who, "push_prices", "prices.push",
                             "prices:" + ",".join(symbols[:20])
                             + ("..." if len(symbols) > 20 else "")) as note:
            kept = sorted(q.symbol for q in quotes if store.update(q))
            note["result"] = {"source": source, "accepted": len(kept),
                              "ignored_older": len(quotes) - len(kept)}
        return {"accepted": len(kept), "ignored_older": len(quotes) - len(kept),
                "symbols": kept}

    @router.get("/prices", summary="The reference prices held now, by symbol",
                dependencies=[Depends(guard.needs("view"))])
    def show() -> dict[str, Any]:
        store = held()
        quotes = [q for q in (store.quote(s) for s in store.symbols()) if q is not None]
        return {"count": len(quotes), "quotes": [_shown(q) for q in quotes]}

    app.include_router(router)
