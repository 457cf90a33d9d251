"""`fixalloc allocate`'s input: ORDER.json and FILLS.json, checked as the daemon checks a block.

The order is validated by `gateway.order_checks.check_block_order`, the function the
daemon's order intake (`gateway.intake`) runs on every block D, against the book's
settings: those of the gateway config's `[[books]]` entry with `--gateway-config`, else
`BookSettings` defaults (broker "DRY-RUN"). Keys the files do not define are refused, and
every error names the file, the line and the field:
``order.json:7: rotation_ofset: unknown key (did you mean 'rotation_offset'?)``.
The daemon's other intake checks (a duplicate ClOrdID, the trade date being today) concern
the FIX session, not the block, and do not apply to a dry run.
Numbers are read as Decimal (a JSON number, or a decimal string); identifiers are compared
in Unicode NFC form, as the reference-data loader reads them.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import engine
from engine.rulebook import METHODS
from gateway import located_json, refdata
from gateway.config import ORD_TYPES, TIME_IN_FORCE, BookSettings, Config
from gateway.ledger import AVG_PX_PLACES
from gateway.order_checks import BlockOrder, Rejection, check_block_order

ORDER_REQUIRED = ("block_id", "symbol", "side", "qty", "book", "trade_date")
ORDER_OPTIONAL = ("limit_px", "stop_px", "peg_offset", "ord_type", "time_in_force",
                  "preallocations", "preallocation_reason", "method", "rotation_offset",
                  "avg_px_precision")
FILL_KEYS = ("exec_id", "qty", "px")
AVG_PX_PRECISION_MAX = 8
DRY_RUN_BROKER = "DRY-RUN"
SIDES = {"buy": engine.Side.BUY, "sell": engine.Side.SELL, "sell_short": engine.Side.SELL_SHORT,
         "1": engine.Side.BUY, "2": engine.Side.SELL, "5": engine.Side.SELL_SHORT}
# The FIX field a check_block_order refusal starts with -> the ORDER.json key it is about.
_TAG_KEYS = {"40": "ord_type", "59": "time_in_force", "44": "limit_px", "99": "stop_px",
             "211": "peg_offset", "38": "qty", "80": "preallocations", "79": "preallocations",
             "58": "preallocation_reason"}


class InputError(ValueError):
    """Bad dry-run input: ``FILE:LINE: field: reason`` (the line when it is known)."""

    def __init__(self, file: str | Path, line: int | None, field: str | None,
                 reason: str) -> None:
        self.file, self.line, self.field, self.reason = str(file), line, field, reason
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


@dataclass(frozen=True)
class RefDataFiles:
    """Where the reference data and the rulebook are read from."""

    securities: Path
    accounts: Path
    positions: Path | None
    rules: Path

    @classmethod
    def in_dir(cls, folder: Path) -> RefDataFiles:
        """DIR/securities.csv, DIR/accounts.csv, DIR/positions.csv (if any), DIR/rules."""
        positions = folder / "positions.csv"
        return cls(folder / "securities.csv", folder / "accounts.csv",
                   positions if positions.exists() else None, folder / "rules")

    @classmethod
    def of_config(cls, config: Config) -> RefDataFiles:
        """The files the gateway config's [refdata] names, as the daemon resolves them."""
        rd = config.refdata
        return cls(config.resolve(rd.securities), config.resolve(rd.accounts),
                   config.resolve(rd.positions) if rd.positions else None,
                   config.resolve(rd.rules))


@dataclass(frozen=True)
class Fill:
    exec_id: str
    qty: Decimal
    px: Decimal
    line: int | None


def read_json(path: Path) -> Any:
    """Parse a JSON file keeping every key's line; errors as InputError with file:line."""
    try:
        text = refdata.read_text(path)  # UTF-8 (BOM accepted), NFC
    except refdata.RefDataError as e:
        raise InputError(path, e.line or None, None, e.reason) from None
    try:
        return located_json.loads(text)
    except located_json.JSONLocationError as e:
        raise InputError(path, e.line, e.key, e.reason) from None


def _line(node: Any, key: str | int | None = None) -> int | None:
    if isinstance(node, located_json.JSONObject):
        return node.line_of(key) if isinstance(key, str) else node.line
    if isinstance(node, located_json.JSONArray):
        if isinstance(key, int) and key < len(node.item_lines):
            return node.item_lines[key]
        return node.line
    return None


def _show(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def _plain(d: Decimal) -> Decimal:
    """1E+3 -> 1000: numbers go into the decision as they would print."""
    exponent = d.as_tuple().exponent
    return d.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else d


def _number(file: str, node: Any, key: str, field: str | None = None) -> Decimal:
    value = node[key]
    field = field or key
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise InputError(file, _line(node, key), field, f"must be a number, was {_show(value)}")
    try:
        d = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InputError(file, _line(node, key), field,
                         f"must be a number, was {_show(value)}") from None
    if not d.is_finite():
        raise InputError(file, _line(node, key), field, f"must be finite, was {_show(value)}")
    return _plain(d)


def _whole(file: str, node: Any, key: str, low: int, high: int | None, what: str) -> int:
    value = node[key]
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        n = int(value)
    if n is None or n < low or (high is not None and n > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise InputError(file, _line(node, key), key,
                         f"must be a whole number {span}{what}, was {_show(value)}")
    return n


def _text(file: str, node: Any, key: str, field: str | None = None) -> str:
    value = node[key]
    if not isinstance(value, str) or not value.strip():
        raise InputError(file, _line(node, key), field or key,
                         f"must be a non-empty string, was {_show(value)}")
    return unicodedata.normalize("NFC", value)


def _fix_code(file: str, node: Any, key: str, codes: dict[str, str]) -> str:
    """A FIX enum given by name (`limit`) or by its FIX value (`2`)."""
    value = node[key]
    if isinstance(value, str):
        if value.lower() in codes:
            return codes[value.lower()]
        if value in codes.values():
            return value
    accepted = ", ".join(f"{name} ({code})" for name, code in codes.items())
    raise InputError(file, _line(node, key), key,
                     f"must be one of {accepted}, was {_show(value)}")


def _keys(file: str, node: Any, allowed: tuple[str, ...], required: tuple[str, ...],
          what: str, prefix: str = "") -> None:
    """Refuse keys that are not `allowed` and report the first missing `required` key."""
    if not isinstance(node, dict):
        raise InputError(file, _line(node) or 1, what,
                         f"must be a JSON object, was {_show(node)}")
    for key in node:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = (f" (did you mean {close[0]!r}?)" if close
                    else f"; allowed: {', '.join(allowed)}")
            raise InputError(file, _line(node, key), prefix + key, f"unknown key{hint}")
    for key in required:
        if key not in node:
            raise InputError(file, _line(node) or None, prefix + key,
                             f"required {what} key is missing")


@dataclass(frozen=True)
class OrderInput:
    """ORDER.json, decoded and type-checked (the rules come from check_block_order)."""

    file: str
    node: Any
    block_id: str
    symbol: str
    side: engine.Side
    qty: Decimal
    book: str
    trade_date: dt.date
    ord_type: str
    time_in_force: str | None
    limit_px: Decimal | None
    stop_px: Decimal | None
    peg_offset: Decimal | None
    preallocations: tuple[tuple[str, Decimal], ...]
    prealloc_lines: tuple[int | None, ...]
    preallocation_reason: str | None
    method: str | None
    rotation_offset: int
    avg_px_precision: int

    def block_order(self) -> BlockOrder:
        return BlockOrder(
            book=self.book, symbol=self.symbol, side=self.side.value,
            order_qty=self.qty, ord_type=self.ord_type, price=self.limit_px,
            stop_px=self.stop_px, peg_offset=self.peg_offset,
            time_in_force=self.time_in_force, preallocations=self.preallocations,
            preallocation_reason=self.preallocation_reason)

    def error(self, key: str, reason: str, field: str | None = None) -> InputError:
        return InputError(self.file, _line(self.node, key) or None, field or key, reason)

    def refusal(self, rej: Rejection) -> InputError:
        """Place a check_block_order refusal on the ORDER.json key it is about."""
        text = rej.text
        if text.startswith(("unknown book", "book ")):
            return self.error("book", text)
        if text.startswith(("unknown symbol", "no reference price")):
            return self.error("symbol", text)
        account = re.match(r"AllocQty\(80\) for (.+) must be|AllocAccount\(79\) (.+) is pre",
                           text)
        named = [account.group(1) or account.group(2)] if account else []
        if text.startswith("pre-allocation names accounts"):
            named = text.rsplit(": ", 1)[1].split(", ")
        if named:
            twice = account is not None and account.group(2) is not None
            hits = [i for i, (a, _) in enumerate(self.preallocations) if a == named[0]]
            line = self.prealloc_lines[hits[-1] if twice else hits[0]] if hits else None
            return InputError(self.file, line or _line(self.node, "preallocations"),
                              f"preallocations.{named[0]}", text)
        tag = re.match(r"\w+\((\d+)\)", text)
        key = _TAG_KEYS.get(tag.group(1), "") if tag else ""
        if key == "preallocation_reason" and key not in self.node:
            return InputError(self.file, _line(self.node, "preallocations"), key, text)
        return self.error(key, text) if key else InputError(self.file, _line(self.node), None,
                                                            text)


def parse_order(file: str, node: Any) -> OrderInput:
    """Decode ORDER.json's keys and types; refuse unknown keys and missing ones."""
    _keys(file, node, ORDER_REQUIRED + ORDER_OPTIONAL, ORDER_REQUIRED, "order")

    def opt(key: str) -> Any:
        return node.get(key)

    side_raw = node["side"]
    side = SIDES.get(side_raw.lower()) if isinstance(side_raw, str) else None
    if side is None:
        raise InputError(file, _line(node, "side"), "side",
                         f"must be buy, sell or sell_short (FIX 1, 2, 5), was {_show(side_raw)}")
    raw_date = node["trade_date"]
    if not (isinstance(raw_date, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw_date)):
        raise InputError(file, _line(node, "trade_date"), "trade_date",
                         f"must be a date YYYY-MM-DD, was {_show(raw_date)}")
    try:
        trade_date = dt.date.fromisoformat(raw_date)
    except ValueError as e:
        raise InputError(file, _line(node, "trade_date"), "trade_date", str(e)) from None
    prices = {k: _number(file, node, k) if opt(k) is not None else None
              for k in ("limit_px", "stop_px", "peg_offset")}
    ord_type = (_fix_code(file, node, "ord_type", ORD_TYPES) if opt("ord_type") is not None
                else ORD_TYPES["limit" if prices["limit_px"] is not None else "market"])
    tif = (_fix_code(file, node, "time_in_force", TIME_IN_FORCE)
           if opt("time_in_force") is not None else None)
    pre: list[tuple[str, Decimal]] = []
    pre_lines: list[int | None] = []
    raw_pre = opt("preallocations")
    if raw_pre is not None:
        if not isinstance(raw_pre, dict) or not raw_pre:
            raise InputError(file, _line(node, "preallocations"), "preallocations",
                             "must map account ids to quantities (omit the key for no "
                             f"pre-allocation), was {'{}' if raw_pre == {} else _show(raw_pre)}")
        for account in raw_pre:
            acct = unicodedata.normalize("NFC", account)
            pre.append((acct, _number(file, raw_pre, account, f"preallocations.{acct}")))
            pre_lines.append(_line(raw_pre, account))
    reason = opt("preallocation_reason")
    if reason is not None:
        reason = _text(file, node, "preallocation_reason")
    method = opt("method")
    if method is not None:
        if method not in METHODS:
            raise InputError(file, _line(node, "method"), "method",
                             f"must be one of {', '.join(METHODS)}, was {_show(method)}")
        if pre and method != "manual":
            raise InputError(file, _line(node, "method"), "method",
                             f"{method} with pre-allocations: a pre-allocated block is split "
                             "by the manual method, as the daemon does; drop one of them")
    return OrderInput(
        file=file, node=node, block_id=_text(file, node, "block_id"),
        symbol=_text(file, node, "symbol"), side=side, qty=_number(file, node, "qty"),
        book=_text(file, node, "book"), trade_date=trade_date, ord_type=ord_type,
        time_in_force=tif, limit_px=prices["limit_px"], stop_px=prices["stop_px"],
        peg_offset=prices["peg_offset"], preallocations=tuple(pre),
        prealloc_lines=tuple(pre_lines), preallocation_reason=reason, method=method,
        rotation_offset=(_whole(file, node, "rotation_offset", 0, None, "")
                         if opt("rotation_offset") is not None else 0),
        avg_px_precision=(_whole(file, node, "avg_px_precision", 0, AVG_PX_PRECISION_MAX,
                                 " (decimal places of the average price)")
                          if opt("avg_px_precision") is not None else AVG_PX_PLACES),
    )


def parse_fills(file: str, node: Any) -> list[Fill]:
    """FILLS.json: a non-empty list of {exec_id, qty, px}; a repeated exec_id is applied
    once when its economics are the same and refused when they differ."""
    if not isinstance(node, list):
        raise InputError(file, _line(node) or 1, "fills",
                         f"must be a JSON list of fills, was {_show(node)}")
    if not node:
        raise InputError(file, _line(node) or 1, "fills", "the list is empty; omit --fills "
                         "to price the whole order qty at limit_px")
    fills: list[Fill] = []
    first: dict[str, Fill] = {}
    for i, item in enumerate(node):
        where = f"fills[{i}]"
        if not isinstance(item, dict):
            raise InputError(file, _line(node, i), where,
                             f"must be an object {{exec_id, qty, px}}, was {_show(item)}")
        _keys(file, item, FILL_KEYS, FILL_KEYS, "fill", f"{where}.")
        fill = Fill(_text(file, item, "exec_id", f"{where}.exec_id"),
                    _number(file, item, "qty", f"{where}.qty"),
                    _number(file, item, "px", f"{where}.px"), _line(node, i))
        if fill.qty <= 0 or fill.qty != fill.qty.to_integral_value():
            raise InputError(file, _line(item, "qty"), f"{where}.qty",
                             f"must be a positive whole number of shares, was {fill.qty}")
        if fill.px <= 0:
            raise InputError(file, _line(item, "px"), f"{where}.px",
                             f"must be positive, was {fill.px}")
        seen = first.get(fill.exec_id)
        if seen is None:
            first[fill.exec_id] = fill
            fills.append(fill)
        elif (seen.qty, seen.px) != (fill.qty, fill.px):
            at = f"line {seen.line}" if seen.line else "an earlier fill"
            raise InputError(file, _line(item, "exec_id"), f"{where}.exec_id",
                             f"{fill.exec_id!r} repeats {at} with other economics: qty "
                             f"{fill.qty} at {fill.px} here, qty {seen.qty} at {seen.px} there")
    return fills


def _book_settings(book: str, gateway_config: Config | None
                   ) -> tuple[BookSettings | None, tuple[str, ...]]:
    if gateway_config is None:
        return BookSettings(name=book, broker=DRY_RUN_BROKER), (book,)
    return gateway_config.book(book), tuple(b.name for b in gateway_config.books)


def _execution(order: OrderInput, fills: list[Fill] | None, fills_file: str
               ) -> tuple[Decimal, Decimal]:
    """Executed quantity and the average price, rounded once to the agreed precision."""
    if fills is None:
        if order.limit_px is None:
            raise order.error("limit_px", "required without --fills: the whole order qty is "
                                          "priced at limit_px")
        return order.qty, order.limit_px
    executed, notional = Decimal(0), Decimal(0)
    for i, f in enumerate(fills):
        executed += f.qty
        notional += f.qty * f.px
        if executed > order.qty:
            raise InputError(fills_file, f.line, f"fills[{i}].qty",
                             f"the fills total {executed} by here, above the order qty "
                             f"{order.qty}")
    # Rounded once (FIX_ALLOCATION 4.3.1), to the daemon's precision unless the order says.
    avg_px = (notional / executed).quantize(Decimal(1).scaleb(-order.avg_px_precision),
                                            rounding=ROUND_HALF_EVEN)
    return executed, avg_px


def read_fills(path: Path) -> list[Fill]:
    """FILLS.json, parsed and checked (a file holding null or [] is refused)."""
    return parse_fills(str(path), read_json(path))


def build_request(files: RefDataFiles, order: Any, fills: list[Fill] | None,
                  decided_at: dt.datetime, *, gateway_config: Config | None = None,
                  order_file: str = "ORDER.json", fills_file: str = "FILLS.json"
                  ) -> tuple[engine.AllocationRequest, engine.Rulebook]:
    """ORDER.json (decoded) and the fills (`read_fills`; None: no --fills) -> the request.

    Raises InputError, refdata.RefDataError (file:line in the CSV or YAML) on bad input.
    """
    spec = parse_order(order_file, order)
    securities = refdata.load_securities(files.securities)
    accounts = refdata.load_accounts(files.accounts, files.positions)
    rulebook = refdata.load_rulebook(files.rules)
    in_book = tuple(a for a in accounts if a.book == spec.book)
    book, known = _book_settings(spec.book, gateway_config)
    rejection = check_block_order(spec.block_order(), book, securities, in_book, known)
    if rejection is not None:
        raise spec.refusal(rejection)
    executed, avg_px = _execution(spec, fills, fills_file)
    method = spec.method
    if method is None and not spec.preallocations and book is not None:
        method = book.method  # as the daemon: the book's method, unless pre-allocated
    request = engine.AllocationRequest(
        block_id=spec.block_id, symbol=spec.symbol, side=spec.side, executed_qty=executed,
        avg_px=avg_px, trade_date=spec.trade_date, accounts=in_book, securities=securities,
        decided_at=decided_at, method=method,
        preallocations=dict(spec.preallocations) or None,
        preallocation_reason=spec.preallocation_reason, rotation_offset=spec.rotation_offset)
    return request, rulebook
