"""Reference prices: the CSV file provider (Decimals only, file:line: reason for a bad row)
and the in-memory provider a push feed updates."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from engine.crossing import Quote
from gateway.refdata import RefDataError
from gateway.reference_prices import (
    MemoryPrices,
    PriceFileError,
    PriceSource,
    load_price_file,
    quotes_for,
)

D = Decimal
HEADER = "symbol,last,bid,ask,as_of\n"
T0 = dt.datetime(2024, 6, 3, 15, 59, 30, tzinfo=dt.UTC)


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    p = tmp_path / "prices.csv"
    p.write_text(header + body, encoding="utf-8")
    return p


def test_a_price_file_loads_as_decimals(tmp_path: Path) -> None:
    p = write(tmp_path, "AAPL,190.25,190.24,190.26,2024-06-03T15:59:30Z\n"
                        "MSFT, 420.1 ,,,2024-06-03T11:59:30-04:00\n")
    prices = load_price_file(p)
    aapl = prices.quote("AAPL")
    assert aapl == Quote(symbol="AAPL", last=D("190.25"), bid=D("190.24"), ask=D("190.26"),
                         as_of=T0, source="file:prices.csv")
    msft = prices.quote("MSFT")
    assert msft is not None
    assert (msft.last, msft.bid, msft.ask, msft.as_of) == (D("420.1"), None, None, T0)
    assert isinstance(msft.last, Decimal)
    assert prices.quote("IBM") is None
    assert prices.symbols() == ["AAPL", "MSFT"]
    assert len(prices.version) == 64
    assert load_price_file(p).version == prices.version
    source: PriceSource = prices  # the protocol is structural
    assert quotes_for(source, ["MSFT", "IBM", "AAPL", "MSFT"]) == {"AAPL": aapl, "MSFT": msft}


def test_a_byte_order_mark_and_an_empty_file_are_fine(tmp_path: Path) -> None:
    p = tmp_path / "prices.csv"
    p.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"AAPL,1,,,2024-06-03T15:59:30Z\n")
    assert load_price_file(p).symbols() == ["AAPL"]
    assert load_price_file(write(tmp_path, "")).symbols() == []


@pytest.mark.parametrize(("body", "line", "reason"), [
    ("AAPL,abc,,,2024-06-03T15:59:30Z\n", 2, "`last` is not a number, was 'abc'"),
    ("AAPL,,,,2024-06-03T15:59:30Z\n", 2, "`last` is required"),
    ("AAPL,0,,,2024-06-03T15:59:30Z\n", 2, "`last` must be a positive number, was '0'"),
    ("AAPL,-1,,,2024-06-03T15:59:30Z\n", 2, "`last` must be a positive number"),
    ("AAPL,NaN,,,2024-06-03T15:59:30Z\n", 2, "`last` must be a positive number"),
    ("AAPL,Infinity,,,2024-06-03T15:59:30Z\n", 2, "`last` must be a positive number"),
    ("AAPL,1,1,,2024-06-03T15:59:30Z\n", 2, "give both `bid` and `ask`, or leave both empty"),
    ("AAPL,1,2,1,2024-06-03T15:59:30Z\n", 2, "`bid` 2 is above `ask` 1"),
    ("AAPL,1,x,2,2024-06-03T15:59:30Z\n", 2, "`bid` is not a number, was 'x'"),
    ("AAPL,1,1,2,\n", 2, "`as_of` is required"),
    ("AAPL,1,1,2,yesterday\n", 2, "`as_of` is not an ISO 8601 date and time, was 'yesterday'"),
    ("AAPL,1,1,2,2024-06-03T15:59:30\n", 2, "`as_of` must carry its UTC offset"),
    (",1,1,2,2024-06-03T15:59:30Z\n", 2, "`symbol` is required"),
    ("AAPL,1,1,2,2024-06-03T15:59:30Z,extra\n", 2, "more fields than the header"),
    ("AAPL,1,1,2\n", 2, "fewer fields than the header"),
    ("AAPL,1,,,2024-06-03T15:59:30Z\nMSFT,2,,,2024-06-03T15:59:30Z\n"
     "AAPL,3,,,2024-06-03T15:59:30Z\n", 4, "duplicate symbol 'AAPL' (first on line 2)"),
    ("AAPL,1,,,2024-06-03T15:59:30Z\n\nMSFT,1e999999999,,,2024-06-03T15:59:30Z\n", 4,
     "`last` must be below 1000000000000 with at most 12 decimal places"),
    ("AAPL,1,0.0000000000001,2,2024-06-03T15:59:30Z\n", 2, "`bid` must be below"),
])
def test_a_bad_row_is_refused_with_its_line(tmp_path: Path, body: str, line: int,
                                            reason: str) -> None:
    p = write(tmp_path, body)
    with pytest.raises(PriceFileError) as err:
        load_price_file(p)
    assert (err.value.file, err.value.line) == (str(p), line)
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{p}:{line}: ")
    assert isinstance(err.value, RefDataError)  # caught wherever reference data errors are


@pytest.mark.parametrize(("header", "reason"), [
    ("symbol,last,bid,as_of\n", "missing column(s): ask"),
    ("symbol,last,bid,ask,as_of,venue\n", "unknown column(s): venue"),
])
def test_a_bad_header_is_refused_on_line_1(tmp_path: Path, header: str, reason: str) -> None:
    with pytest.raises(PriceFileError) as err:
        load_price_file(write(tmp_path, "", header))
    assert (err.value.line, err.value.reason) == (1, reason)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot open"):
        load_price_file(tmp_path / "missing.csv")
    p = tmp_path / "prices.csv"
    p.write_bytes(HEADER.encode() + b"AAPL,1,,,2024-06-03T15:59:30Z\nM\xffSFT,1,,,x\n")
    with pytest.raises(PriceFileError) as err:
        load_price_file(p)
    assert err.value.line == 3 and "not valid UTF-8" in err.value.reason


def q(symbol: str, last: str, seconds: int) -> Quote:
    return Quote(symbol=symbol, last=D(last), as_of=T0 + dt.timedelta(seconds=seconds),
                 source="feed")


def test_the_memory_provider_keeps_the_newest_quote() -> None:
    prices = MemoryPrices()
    assert prices.update(q("AAPL", "1", 0)) is True
    assert prices.update(q("AAPL", "2", 5)) is True
    # A late update (older, or the same instant) never replaces what is held.
    assert prices.update(q("AAPL", "3", 4)) is False
    assert prices.update(q("AAPL", "4", 5)) is False
    held = prices.quote("AAPL")
    assert held is not None and held.last == 2
    with pytest.raises(TypeError):
        prices.update({"symbol": "AAPL"})  # type: ignore[arg-type]


def test_the_memory_provider_takes_updates_from_other_threads() -> None:
    prices = MemoryPrices()

    def feed(offset: int) -> None:
        for i in range(200):
            prices.update(q("AAPL", str(i + 1), 2 * i + offset))

    threads = [threading.Thread(target=feed, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = prices.quote("AAPL")
    assert held is not None and held.as_of == T0 + dt.timedelta(seconds=399)
