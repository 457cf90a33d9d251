"""Load reference data files into engine objects, refusing bad input with file:line: reason.

CSV files: securities, accounts, positions (tax lots), in UTF-8 (a byte-order mark is
accepted) and read in Unicode NFC form, so an id compares equal however it was typed.
YAML: the rulebook, one file or a directory of ``*.yaml`` files merged (books and schemes
by name, restrictions appended in file-name order). Rulebook errors found by the engine's
validation are mapped back to the YAML line through the parser's node marks.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import unicodedata
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

import engine


class RefDataError(ValueError):
    """A reference data file is invalid at a given line."""

    def __init__(self, file: str | Path, line: int, reason: str) -> None:
        self.file = str(file)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.file}:{line}: {reason}")


SECURITY_COLUMNS = ("symbol", "issuer", "sector", "country", "esg_tags", "lot_size",
                    "related_to", "price")
ACCOUNT_COLUMNS = ("account_id", "book", "status", "nav", "cash", "tier", "intended_qty",
                   "target_weight", "custodian", "prime_broker", "strategy", "vehicle", "scheme")
POSITION_COLUMNS = ("account_id", "symbol", "lot_id", "quantity", "cost_per_share", "acquired")


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (a leading byte-order mark is dropped), in Unicode NFC form.

    Identifiers are compared as NFC, so an id typed with a precomposed letter and one with
    a combining accent are the same id (and a repeat of it is refused). Normalising the
    whole text is the same as normalising each field: the CSV delimiters, quotes and line
    ends are starters that compose with nothing, and line numbers are unchanged.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RefDataError(path, 0, f"cannot open: {e.strerror}") from None
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skip + e.start
        line_start = data.rfind(b"\n", 0, at) + 1
        raise RefDataError(path, data.count(b"\n", 0, at) + 1,
                           f"not valid UTF-8 (byte 0x{data[at]:02x} at column "
                           f"{at - line_start + 1} of the line, byte offset {at} in the "
                           "file); save the file as UTF-8") from None
    return unicodedata.normalize("NFC", text)


def csv_rows(path: Path, columns: tuple[str, ...], text: str | None = None
            ) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) of a CSV whose header is exactly `columns` (in any order), values
    stripped; RefDataError names the file, the line and what is wrong. `text`: the file's
    text when the caller has read it already."""
    reader = csv.DictReader(io.StringIO(read_text(path) if text is None else text,
                                        newline=""))
    header = tuple(h.strip() for h in (reader.fieldnames or ()))
    missing = [c for c in columns if c not in header]
    if missing:
        raise RefDataError(path, 1, f"missing column(s): {', '.join(missing)}")
    unknown = [c for c in header if c not in columns]
    if unknown:
        raise RefDataError(path, 1, f"unknown column(s): {', '.join(unknown)}")
    reader.fieldnames = list(header)
    for row in reader:
        if None in row:
            raise RefDataError(path, reader.line_num, "more fields than the header")
        if any(v is None for v in row.values()):
            raise RefDataError(path, reader.line_num, "fewer fields than the header")
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items()}


def _nfc_note(ident: str) -> str:
    """Said with a repeated non-ASCII id, which may differ from its first use only in form."""
    return "" if ident.isascii() else "; ids are compared in Unicode NFC form"


def _dec(path: Path, line: int, row: Mapping[str, str], col: str, *, optional: bool = False,
         positive: bool = False) -> Decimal | None:
    raw = row[col]
    if raw == "":
        if optional:
            return None
        raise RefDataError(path, line, f"`{col}` is required")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise RefDataError(path, line, f"`{col}` is not a number, was {raw!r}") from None
    if not value.is_finite() or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise RefDataError(path, line, f"`{col}` must be {kind}, was {raw!r}")
    return value


def _req(path: Path, line: int, row: Mapping[str, str], col: str) -> str:
    if not row[col]:
        raise RefDataError(path, line, f"`{col}` is required")
    return row[col]


def _int(path: Path, line: int, row: Mapping[str, str], col: str, minimum: int) -> int:
    raw = row[col]
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise RefDataError(path, line, f"`{col}` must be an integer >= {minimum}, was {raw!r}")
    return int(raw)


def load_securities(path: str | Path) -> dict[str, engine.Security]:
    """Read the security master; `related_to` must name another row of the file."""
    p = Path(path)
    out: dict[str, engine.Security] = {}
    lines: dict[str, int] = {}
    for line, row in csv_rows(p, SECURITY_COLUMNS):
        sym = _req(p, line, row, "symbol")
        if sym in out:
            raise RefDataError(p, line, f"duplicate symbol {sym!r} (first on line {lines[sym]}"
                                        f"{_nfc_note(sym)})")
        tags = frozenset(t.strip() for t in row["esg_tags"].split(";") if t.strip())
        out[sym] = engine.Security(
            symbol=sym, issuer=_req(p, line, row, "issuer"), sector=_req(p, line, row, "sector"),
            country=_req(p, line, row, "country"), esg_tags=tags,
            lot_size=_int(p, line, row, "lot_size", 1), related_to=row["related_to"] or None,
            price=_dec(p, line, row, "price", optional=True, positive=True),
        )
        lines[sym] = line
    for sym, sec in out.items():
        if sec.related_to is not None and sec.related_to not in out:
            raise RefDataError(p, lines[sym], f"related_to {sec.related_to!r} is not a symbol "
                                              "in this file")
        seen = {sym}
        cur = sec.related_to
        while cur is not None:
            if cur in seen:
                raise RefDataError(p, lines[sym], f"related_to chain from {sym} loops at {cur}")
            seen.add(cur)
            cur = out[cur].related_to
    return out


def _load_lots(path: Path, known: set[str]) -> dict[str, dict[str, list[engine.TaxLot]]]:
    lots: dict[str, dict[str, list[engine.TaxLot]]] = {}
    ids: dict[tuple[str, str], int] = {}
    for line, row in csv_rows(path, POSITION_COLUMNS):
        acct = _req(path, line, row, "account_id")
        if acct not in known:
            raise RefDataError(path, line, f"unknown account {acct!r}")
        sym = _req(path, line, row, "symbol")
        lot_id = _req(path, line, row, "lot_id")
        if (acct, lot_id) in ids:
            raise RefDataError(path, line, f"duplicate lot {lot_id!r} for {acct} (first on line "
                                           f"{ids[acct, lot_id]}{_nfc_note(lot_id)})")
        ids[acct, lot_id] = line
        try:
            acquired = dt.date.fromisoformat(_req(path, line, row, "acquired"))
        except ValueError:
            raise RefDataError(path, line, f"`acquired` must be YYYY-MM-DD, was "
                                           f"{row['acquired']!r}") from None
        qty = _dec(path, line, row, "quantity", positive=True)
        cost = _dec(path, line, row, "cost_per_share")
        assert qty is not None and cost is not None
        lots.setdefault(acct, {}).setdefault(sym, []).append(
            engine.TaxLot(lot_id, qty, cost, acquired))
    return lots


def load_accounts(accounts_csv: str | Path, positions_csv: str | Path | None = None
                  ) -> tuple[engine.Account, ...]:
    """Read accounts and, if given, their tax lots (positions are the lots' sums)."""
    p = Path(accounts_csv)
    parsed: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for line, row in csv_rows(p, ACCOUNT_COLUMNS):
        acct = _req(p, line, row, "account_id")
        if acct in seen:
            raise RefDataError(p, line, f"duplicate account {acct!r} (first on line {seen[acct]}"
                                        f"{_nfc_note(acct)})")
        seen[acct] = line
        status = row["status"] or "active"
        if status not in engine.model.ACCOUNT_STATUSES:
            raise RefDataError(p, line, f"`status` must be one of "
                                        f"{sorted(engine.model.ACCOUNT_STATUSES)}, was {status!r}")
        tw = _dec(p, line, row, "target_weight", optional=True)
        if tw is not None and tw > 1:
            raise RefDataError(p, line, f"`target_weight` is a fraction of NAV (0..1), was {tw}")
        parsed.append((line, {
            "account_id": acct, "book": _req(p, line, row, "book"), "status": status,
            "nav": _dec(p, line, row, "nav"), "cash": _dec(p, line, row, "cash"),
            "tier": _int(p, line, row, "tier", 1) if row["tier"] else 1,
            "intended_qty": _dec(p, line, row, "intended_qty", optional=True),
            "target_weight": tw, "custodian": row["custodian"],
            "prime_broker": row["prime_broker"], "strategy": row["strategy"],
            "vehicle": row["vehicle"], "scheme": row["scheme"] or "default",
        }))
    lots: dict[str, dict[str, list[engine.TaxLot]]] = {}
    if positions_csv is not None:
        lots = _load_lots(Path(positions_csv), set(seen))
    out = []
    for _line, kw in parsed:
        acct_lots = {s: tuple(v) for s, v in sorted(lots.get(kw["account_id"], {}).items())}
        positions = {s: sum((t.quantity for t in v), Decimal(0)) for s, v in acct_lots.items()}
        out.append(engine.Account(positions=positions, lots=acct_lots, **kw))
    return tuple(out)


# ---- rulebook ---------------------------------------------------------------------------

def _compose(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RefDataError(path, 0, f"cannot read: {e.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise RefDataError(path, line, f"invalid YAML: {e.problem or e.context}") from None
    return data, node


def _index(node: yaml.Node, path: str, file: Path, out: dict[str, tuple[Path, int]]) -> None:
    """Record the line of every mapping key and sequence item by its rulebook path."""
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for k, v in node.value:
            key = str(k.value)
            if key in keys:
                raise RefDataError(file, k.start_mark.line + 1, f"duplicate key {key!r}")
            keys.add(key)
            sub = f"{path}.{key}" if path else key
            out[sub] = (file, k.start_mark.line + 1)
            _index(v, sub, file, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            out[sub] = (file, item.start_mark.line + 1)
            _index(item, sub, file, out)


def rule_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        if not files:
            raise RefDataError(p, 0, "no *.yaml rulebook files in this directory")
        return files
    if not p.exists():
        raise RefDataError(p, 0, "rulebook file does not exist")
    return [p]


def read_rulebook_mapping(path: str | Path
                          ) -> tuple[dict[str, Any], dict[str, tuple[Path, int]], list[Path]]:
    """Merge the YAML files into one mapping plus a path -> (file, line) locator."""
    lists = ("restrictions", "approval_policies")  # several files may each add items
    merged: dict[str, Any] = {key: [] for key in lists}
    where: dict[str, tuple[Path, int]] = {}
    files = rule_files(path)
    for f in files:
        data, node = _compose(f)
        if data is None:
            continue
        if not isinstance(data, dict) or node is None:
            raise RefDataError(f, 1, "a rulebook file must be a mapping at the top level")
        local: dict[str, tuple[Path, int]] = {}
        _index(node, "", f, local)
        offsets = {key: len(merged[key]) for key in lists}
        for key, value in data.items():
            if key in lists:
                if not isinstance(value, list):
                    raise RefDataError(f, local[key][1], f"{key} must be a list")
                merged[key].extend(value)
            elif key in ("books", "schemes") and isinstance(value, dict):
                section = merged.setdefault(key, {})
                for name, body in value.items():
                    if name in section:
                        raise RefDataError(f, local[f"{key}.{name}"][1],
                                           f"{key[:-1]} {name!r} is defined twice (also "
                                           f"{where[f'{key}.{name}'][0].name})")
                    section[name] = body
            elif key in merged:
                raise RefDataError(f, local[key][1], f"top-level key {key!r} is defined twice")
            else:
                merged[key] = value
        for sub, loc in local.items():
            key = sub
            for name in lists:
                if sub.startswith(f"{name}["):
                    idx, _, rest = sub[len(name) + 1:].partition("]")
                    key = f"{name}[{int(idx) + offsets[name]}]{rest}"
            where[key] = loc
    if not merged["approval_policies"]:
        del merged["approval_policies"]
    return merged, where, files


def load_rulebook(path: str | Path) -> engine.Rulebook:
    """Load and validate the rulebook; errors name the file and line of the bad element."""
    merged, where, files = read_rulebook_mapping(path)
    source = ",".join(str(f) for f in files)
    try:
        return engine.Rulebook.from_mapping(merged, source)
    except engine.RulebookError as e:
        # The element itself may be absent (a missing key): report its nearest parent.
        probe = e.path
        while probe and probe not in where:
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        file, line = where.get(probe, (files[0], 1))
        raise RefDataError(file, line, f"{e.path}: {e.reason}" if e.path else e.reason) from None
