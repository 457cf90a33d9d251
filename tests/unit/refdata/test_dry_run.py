"""`fixalloc allocate` refuses what the daemon refuses, naming file, line and field (exit 2).

Each case once passed silently (or failed with a message naming no file): the tests drive
the CLI's `main`, `build_request` and the CSV loaders as a user or the daemon would.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway import engine_cli, refdata

CONFIG = Path(__file__).resolve().parents[3] / "config"
DECIDED = "2024-06-03T20:00:00+00:00"
BASE: dict[str, Any] = {"block_id": "B-1", "symbol": "AAPL", "side": "buy", "qty": 10000,
                        "book": "SMA-CORE", "limit_px": "190.00", "trade_date": "2024-06-03"}


def _dump(value: Any, indent: str = "") -> str:
    """JSON with one object key (or list item) per line, so each has a line of its own."""
    if isinstance(value, dict):
        inner = ",\n".join(f'{indent}  {json.dumps(k)}: {_dump(v, indent + "  ")}'
                           for k, v in value.items())
        return "{\n" + inner + f"\n{indent}}}"
    if isinstance(value, list):
        return "[\n" + ",\n".join(f"{indent}  {json.dumps(v)}" for v in value) + f"\n{indent}]"
    return json.dumps(value)


def write(path: Path, value: Any) -> Path:
    path.write_text(_dump(value) + "\n", encoding="utf-8")
    return path


def line(path: Path, needle: str) -> int:
    """The (only) line of `path` that contains `needle`."""
    hits = [n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if needle in text]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def allocate(capsys: pytest.CaptureFixture[str], order: Path, fills: Path | None = None,
             *extra: str, config: Path | None = CONFIG) -> tuple[int, str, str]:
    argv = ["allocate", "--order", str(order), "--decided-at", DECIDED, *extra]
    if config is not None:
        argv += ["--config", str(config)]
    if fills is not None:
        argv += ["--fills", str(fills)]
    rc = engine_cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def refused(capsys: pytest.CaptureFixture[str], order: Path, fills: Path | None = None,
            *extra: str, config: Path | None = CONFIG) -> str:
    """The one error line of a refused run (exit 2, nothing on stdout)."""
    rc, out, err = allocate(capsys, order, fills, *extra, config=config)
    assert (rc, out) == (2, ""), err
    assert err.count("\n") == 1
    return err


@pytest.mark.parametrize(("content", "reason"), [
    ("[]", "fills: the list is empty; omit --fills to price the whole order qty at limit_px"),
    ("null", "fills: must be a JSON list of fills, was null"),
])
def test_fills_file_without_fills_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             content: str, reason: str) -> None:
    """A fills file holding [] or null is an error; only an absent --fills prices at limit."""
    order = write(tmp_path / "order.json", BASE)
    fills = tmp_path / "fills.json"
    fills.write_text(content + "\n")
    assert refused(capsys, order, fills) == f"error: {fills}:1: {reason}\n"
    with pytest.raises(engine_cli.InputError, match=r"the list is empty"):
        engine_cli.build_request(CONFIG, dict(BASE), [], dt.datetime.fromisoformat(DECIDED))


def test_order_qty_zero_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """qty 0 once allocated nothing with exit 0; the daemon refuses OrderQty(38) 0."""
    order = write(tmp_path / "order.json", {**BASE, "qty": 0})
    at = line(order, '"qty"')
    assert refused(capsys, order) == (f"error: {order}:{at}: qty: "
                                      "OrderQty(38) must be positive, was 0\n")


@pytest.mark.parametrize(("key", "drop", "reason"), [
    ("rotation_ofset", None, "unknown key (did you mean 'rotation_offset'?)"),
    ("limit_prx", "limit_px", "unknown key (did you mean 'limit_px'?)"),
])
def test_unknown_order_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      key: str, drop: str | None, reason: str) -> None:
    """A misspelt order key is named with its line instead of being ignored."""
    fields = {k: v for k, v in BASE.items() if k != drop}
    order = write(tmp_path / "order.json", {**fields, key: "1"})
    assert refused(capsys, order) == f"error: {order}:{line(order, key)}: {key}: {reason}\n"


def test_unknown_fill_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`symbol` on a fill is refused at its line."""
    order = write(tmp_path / "order.json", BASE)
    fills = write(tmp_path / "fills.json", [
        {"exec_id": "X1", "qty": 100, "px": "190.00"},
        {"exec_id": "X2", "qty": 100, "px": "190.00", "symbol": "AAPL"}])
    fills.write_text(fills.read_text().replace(', "symbol"', ',\n "symbol"'))
    assert refused(capsys, order, fills) == (
        f"error: {fills}:{line(fills, 'symbol')}: fills[1].symbol: unknown key; allowed: "
        "exec_id, qty, px\n")


def test_repeated_exec_id_with_other_economics_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A repeat with other economics names both lines; an identical repeat is applied once."""
    order = write(tmp_path / "order.json", BASE)
    fills = write(tmp_path / "fills.json", [
        {"exec_id": "X1", "qty": 3000, "px": "190.00"},
        {"exec_id": "X2", "qty": 1000, "px": "190.25"},
        {"exec_id": "X1", "qty": 2000, "px": "190.00"}])
    assert refused(capsys, order, fills) == (
        f"error: {fills}:4: fills[2].exec_id: 'X1' repeats line 2 with other economics: "
        "qty 2000 at 190.00 here, qty 3000 at 190.00 there\n")
    write(fills, [{"exec_id": "X1", "qty": 3000, "px": "190.00"},
                  {"exec_id": "X1", "qty": 3000, "px": "190.00"}])
    rc, out, _ = allocate(capsys, order, fills)
    assert rc == 0 and json.loads(out)["executed_qty"] == "3000"


def test_negative_preallocation_is_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A negative pre-allocation that still sums to the qty was pro-rated; now refused."""
    order = write(tmp_path / "order.json", {
        **BASE, "preallocations": {"SMA0001": -100, "SMA0002": 10100},
        "preallocation_reason": "PM ticket 42"})
    assert refused(capsys, order) == (
        f"error: {order}:{line(order, 'SMA0001')}: preallocations.SMA0001: AllocQty(80) for "
        "SMA0001 must be a positive whole number of shares, was -100\n")


def test_preallocation_not_covering_the_qty_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pre-allocations must cover OrderQty exactly, as the daemon requires."""
    order = write(tmp_path / "order.json", {
        **BASE, "preallocations": {"SMA0001": 3000}, "preallocation_reason": "PM ticket 42"})
    assert refused(capsys, order) == (
        f"error: {order}:{line(order, 'preallocations')}: preallocations: AllocQty(80): "
        "pre-allocations sum to 3000, OrderQty is 10000\n")


@pytest.mark.parametrize("places", [-2, 9])
def test_avg_px_precision_out_of_range_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], places: int) -> None:
    """avg_px_precision -2 once rounded the average price to hundreds."""
    order = write(tmp_path / "order.json", {**BASE, "avg_px_precision": places})
    fills = write(tmp_path / "fills.json", [{"exec_id": "X1", "qty": 100, "px": "190.05"}])
    assert refused(capsys, order, fills) == (
        f"error: {order}:{line(order, 'avg_px_precision')}: avg_px_precision: must be a whole "
        f"number from 0 to 8 (decimal places of the average price), was {places}\n")


def test_rotation_offset_not_a_number_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rotation_offset "abc" named the field instead of `invalid literal for int()`."""
    order = write(tmp_path / "order.json", {**BASE, "rotation_offset": "abc"})
    assert refused(capsys, order) == (
        f"error: {order}:{line(order, 'rotation_offset')}: rotation_offset: must be a whole "
        "number >= 0, was 'abc'\n")


def test_repeated_json_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON keeps the last of two equal keys; the dry run names both lines instead."""
    order = write(tmp_path / "order.json", BASE)
    order.write_text(order.read_text().replace('"qty": 10000,', '"qty": 10000,\n  "qty": 100,'))
    first = line(order, '"qty": 10000')
    assert refused(capsys, order) == (f"error: {order}:{first + 1}: qty: repeated key "
                                      f"(first on line {first})\n")


@pytest.mark.parametrize(("fields", "key", "reason"), [
    ({"qty": 20_000_000}, "qty",
     "OrderQty(38) 20,000,000 exceeds the maximum of 10,000,000 for book SMA-CORE"),
    ({"ord_type": "market"}, "limit_px", "Price(44) is not allowed on a market order"),
    ({"ord_type": "stop"}, "ord_type",
     "OrdType(40) 3 (stop) is not accepted for book SMA-CORE; accepted: 1 (market), 2 (limit)"),
    ({"time_in_force": "gtc"}, "time_in_force",
     "TimeInForce(59) 1 (gtc) is not accepted for book SMA-CORE; accepted: 0 (day), 3 (ioc), "
     "4 (fok), 2 (at_the_open), 7 (at_the_close)"),
    ({"symbol": "NOPE"}, "symbol", "unknown symbol 'NOPE': not in the security master"),
])
def test_daemon_block_checks_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   fields: dict[str, Any], key: str, reason: str) -> None:
    """The dispatcher's check_block_order runs on the order, with the book's default limits."""
    order = write(tmp_path / "order.json", {**BASE, **fields})
    at = line(order, '"' + key + '"')
    assert refused(capsys, order) == f"error: {order}:{at}: {key}: {reason}\n"


def test_gateway_config_book_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--gateway-config validates against its [[books]] and reads its [refdata] files."""
    toml = CONFIG / "fixalloc.toml"
    order = write(tmp_path / "order.json", BASE)
    rc, out, err = allocate(capsys, order, None, "--gateway-config", str(toml), config=None)
    assert rc == 0, err
    assert allocate(capsys, order)[1] == out  # the same files, the same decision
    write(order, {**BASE, "book": "NOPE"})
    assert refused(capsys, order, None, "--gateway-config", str(toml)) == (
        f"error: {order}:{line(order, 'NOPE')}: book: unknown book 'NOPE' in Account(1); "
        "known books: SMA-CORE\n")
    bad = tmp_path / "gw.toml"
    bad.write_text(toml.read_text().replace('name = "SMA-CORE"',
                                            'name = "SMA-CORE"\nmax_order_qtty = 5'))
    err = refused(capsys, order, None, "--gateway-config", str(bad))
    assert err.startswith(f"error: {bad}:") and "max_order_qtty: unknown key" in err


def test_accounts_nfc_and_nfd_ids_are_one_account(tmp_path: Path) -> None:
    """The same id typed precomposed (NFC) and decomposed (NFD) is one id: the repeat is
    refused with file:line, and a lone NFD id is read in NFC form."""
    header = ",".join(refdata.ACCOUNT_COLUMNS)
    row = "{},B,active,100,100,1,100,,C,P,S,V,core"
    nfc, nfd = "SMA\u00e9", "SMAe\u0301"
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(f"{header}\n{row.format(nfc)}\n{row.format(nfd)}\n", encoding="utf-8")
    with pytest.raises(refdata.RefDataError) as err:
        refdata.load_accounts(accounts)
    assert str(err.value) == (f"{accounts}:3: duplicate account 'SMA\u00e9' (first on line 2; "
                              "ids are compared in Unicode NFC form)")
    accounts.write_text(f"{header}\n{row.format(nfd)}\n", encoding="utf-8")
    assert [a.account_id for a in refdata.load_accounts(accounts)] == [nfc]


def test_csv_with_byte_order_mark_loads(tmp_path: Path) -> None:
    """A UTF-8 BOM (as Excel writes) once gave `missing column account_id`."""
    header = ",".join(refdata.ACCOUNT_COLUMNS)
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(f"{header}\nA1,B,active,100,100,1,100,,C,P,S,V,core\n",
                        encoding="utf-8-sig")
    assert [a.account_id for a in refdata.load_accounts(accounts)] == ["A1"]


def test_latin1_csv_is_refused_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Latin-1 export gave a bare decode error; now file:line and the offending byte."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config, ignore=shutil.ignore_patterns("*.toml"))
    securities = config / "securities.csv"
    lines = securities.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "SOGN,Soci\u00e9t\u00e9 G\u00e9n\u00e9rale,Financials,FR,,100,,40.00\n"
    data = "".join(lines).encode("latin-1")
    securities.write_bytes(data)
    offset = data.index(b"\xe9")
    column = offset - data.rindex(b"\n", 0, offset)
    reason = (f"not valid UTF-8 (byte 0xe9 at column {column} of the line, byte offset "
              f"{offset} in the file); save the file as UTF-8")
    with pytest.raises(refdata.RefDataError) as err:
        refdata.load_securities(securities)
    assert str(err.value) == f"{securities}:3: {reason}"
    order = write(tmp_path / "order.json", BASE)
    assert refused(capsys, order, config=config) == f"error: {securities}:3: {reason}\n"
