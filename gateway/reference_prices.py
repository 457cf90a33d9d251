"""Reference prices for internal crossing: where a cross's independent market price comes from.

`PriceSource` is the one thing the crossing run asks of a provider: the current quote of a
symbol, or None. Two providers are here:

* `MemoryPrices`, fed one quote at a time with `update(quote)` (a push feed, an HTTP
  endpoint, a test); it keeps the newest quote per symbol, so an update that arrives late
  never replaces a fresher one, and it is safe to update from one thread while another
  reads;
* `load_price_file(path)`, a `MemoryPrices` filled from a CSV file
  (``symbol,last,bid,ask,as_of``): Decimals only, `as_of` an ISO 8601 time with its UTC
  offset, bid and ask both given or both empty. A bad row is refused with
  ``file:line: reason`` (`PriceFileError`, a `RefDataError`), and nothing is loaded.

The quote type is the engine's (`engine.crossing.Quote`): the engine takes quotes as plain
data and never calls a provider, so a run is reproducible from the quotes it recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from engine.crossing import PRICE_LIMIT, PRICE_PLACES, Quote, price_in_range
from gateway.refdata import RefDataError, csv_rows, read_text

__all__ = ["COLUMNS", "MemoryPrices", "PriceFileError", "PriceSource", "Quote",
           "load_price_file", "quotes_for"]

COLUMNS = ("symbol", "last", "bid", "ask", "as_of")


class PriceFileError(RefDataError):
    """A reference price file is invalid at a given line."""


class PriceSource(Protocol):
    def quote(self, symbol: str) -> Quote | None:
        """The current quote for `symbol`, or None when there is none."""
        ...


class MemoryPrices:
    """Quotes held in memory, newest per symbol; `version` describes where they came from."""

    def __init__(self, quotes: Iterable[Quote] = (), *, version: str = "") -> None:
        self._lock = threading.Lock()
        self._quotes: dict[str, Quote] = {}
        self.version = version
        for q in quotes:
            self.update(q)

    def update(self, quote: Quote) -> bool:
        """Keep `quote` unless a quote at least as recent is held; True if it was kept."""
        if not isinstance(quote, Quote):
            raise TypeError(f"expected a Quote, got {type(quote).__name__}")
        with self._lock:
            held = self._quotes.get(quote.symbol)
            if held is not None and held.as_of >= quote.as_of:
                return False
            self._quotes[quote.symbol] = quote
            return True

    def quote(self, symbol: str) -> Quote | None:
        with self._lock:
            return self._quotes.get(symbol)

    def symbols(self) -> list[str]:
        with self._lock:
            return sorted(self._quotes)


def quotes_for(source: PriceSource, symbols: Iterable[str]) -> dict[str, Quote]:
    """A snapshot of the quotes of `symbols` (those the source has), for the engine."""
    out: dict[str, Quote] = {}
    for s in sorted(set(symbols)):
        q = source.quote(s)
        if q is not None:
            out[s] = q
    return out


def load_price_file(path: str | Path) -> MemoryPrices:
    """Read a price CSV; its quotes' source is ``file:<name>``, its version the sha256 of
    the text (what a run records to say which prices it used)."""
    p = Path(path)
    try:
        text = read_text(p)
        rows = list(csv_rows(p, COLUMNS, text))
    except RefDataError as e:
        raise PriceFileError(e.file, e.line, e.reason) from None
    source = f"file:{p.name}"
    quotes: list[Quote] = []
    first: dict[str, int] = {}
    for line, row in rows:
        q = _quote(p, line, row, source)
        if q.symbol in first:
            raise PriceFileError(p, line, f"duplicate symbol {q.symbol!r} (first on line "
                                          f"{first[q.symbol]})")
        first[q.symbol] = line
        quotes.append(q)
    return MemoryPrices(quotes, version=hashlib.sha256(text.encode("utf-8")).hexdigest())


def _quote(p: Path, line: int, row: Mapping[str, str], source: str) -> Quote:
    symbol = row["symbol"]
    if not symbol:
        raise PriceFileError(p, line, "`symbol` is required")
    last = _price(p, line, row, "last")
    bid = _price(p, line, row, "bid") if row["bid"] else None
    ask = _price(p, line, row, "ask") if row["ask"] else None
    if (bid is None) != (ask is None):
        raise PriceFileError(p, line, "give both `bid` and `ask`, or leave both empty")
    if bid is not None and ask is not None and bid > ask:
        raise PriceFileError(p, line, f"`bid` {bid} is above `ask` {ask}")
    raw = row["as_of"]
    if not raw:
        raise PriceFileError(p, line, "`as_of` is required")
    try:
        as_of = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise PriceFileError(p, line, f"`as_of` is not an ISO 8601 date and time, was "
                                      f"{raw!r}") from None
    if as_of.utcoffset() is None:
        raise PriceFileError(p, line, f"`as_of` must carry its UTC offset (e.g. "
                                      f"2024-06-03T15:59:30Z), was {raw!r}")
    try:
        return Quote(symbol=symbol, last=last, bid=bid, ask=ask, as_of=as_of, source=source)
    except ValueError as e:  # the checks above should catch everything first
        raise PriceFileError(p, line, str(e)) from None


def _price(p: Path, line: int, row: Mapping[str, str], col: str) -> Decimal:
    raw = row[col]
    if raw == "":
        raise PriceFileError(p, line, f"`{col}` is required")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise PriceFileError(p, line, f"`{col}` is not a number, was {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise PriceFileError(p, line, f"`{col}` must be a positive number, was {raw!r}")
    if not price_in_range(value):
        raise PriceFileError(p, line, f"`{col}` must be below {PRICE_LIMIT:f} with at most "
                                      f"{PRICE_PLACES} decimal places, was {raw!r}")
    return value
