"""Decision tables: per-account results and allocation lines kept as compact columns.

A decision over 100,000 accounts has 100,000 results, most of them alike. The engine keeps
them as columns (a status byte, a quantity and flags per account, reason keys only where
they differ) and builds the `AccountResult` / `AllocationLine` objects the first time they
are read; `check_decision` and the canonical JSON read the columns directly. Built objects
are kept, so reading twice costs nothing more and gives equal values.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar, overload

from engine import canonical
from engine.model import Account, AccountResult, AllocationLine, LotRelief, Reason
from engine.status import NO_QUANTITY, SHARED_REASON, STATUS_NAME

T = TypeVar("T")


class LazyTuple(Sequence[T]):
    """A read-only sequence built on first access; compares equal to the same tuple."""

    __slots__ = ("_build", "_items", "_lock", "_n", "columns")

    def __init__(self, n: int, build: Callable[[], tuple[T, ...]],
                 columns: DecisionColumns | None = None) -> None:
        self._n = n
        self._build = build
        self._items: tuple[T, ...] | None = None
        self._lock = threading.Lock()
        self.columns = columns

    def _all(self) -> tuple[T, ...]:
        items = self._items
        if items is None:
            with self._lock:
                items = self._items
                if items is None:
                    items = self._items = self._build()
                    assert len(items) == self._n
        return items

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[T, ...]: ...

    def __getitem__(self, i: int | slice) -> T | tuple[T, ...]:
        return self._all()[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyTuple):
            return self._all() == other._all()
        if isinstance(other, tuple):
            return self._all() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())

    def __reduce__(self) -> tuple[type[tuple[T, ...]], tuple[tuple[T, ...]]]:
        # Pickling or copying (dataclasses.asdict deep-copies) gives the plain tuple.
        return (tuple, (self._all(),))


@dataclass(frozen=True, slots=True)
class DecisionColumns:
    """The per-account outcome of a decision, in account-id order.

    Lines are not stored: an account has a line exactly when its quantity is not zero.
    """

    accounts: Sequence[Account]
    ids: Sequence[str]
    ids_unique: bool       # verified strictly increasing when the account book was built
    status: bytes          # engine.status codes
    qty: Sequence[int]     # shares (0 unless allocated or capped)
    flags: bytes           # engine.status flags (clipped, held, extra lot, odd lot)
    excluded: Mapping[int, tuple[int | str, ...]]
    cap_excluded: Mapping[int, int | str]
    capped: Mapping[int, tuple[int | str, int]]
    dropped: Mapping[int, tuple[int, tuple[int, Decimal, int]]]
    reliefs: Mapping[int, tuple[tuple[LotRelief, ...], str]]
    # Shared reasons and notes, by status / flags.
    reason: Callable[[int, int], tuple[Reason, ...]]
    note: Callable[[int], str]
    # Account ids as JSON strings (memoised per account book).
    ids_json: Callable[[], Sequence[str]]


_ZERO = Decimal(0)


def results_table(cols: DecisionColumns) -> LazyTuple[AccountResult]:
    def build() -> tuple[AccountResult, ...]:
        out = []
        reason, note, reliefs = cols.reason, cols.note, cols.reliefs
        accounts, qty, flags = cols.accounts, cols.qty, cols.flags
        notes: dict[int, str] = {}
        for i, code in enumerate(cols.status):
            aid = accounts[i].account_id
            reasons = reason(code, i)
            if code in NO_QUANTITY:
                out.append(AccountResult(aid, STATUS_NAME[code], _ZERO, reasons))
                continue
            f = flags[i]
            text = notes.get(f)
            if text is None:
                text = notes[f] = note(f)
            q = qty[i]
            if q and i in reliefs:
                lot_note = reliefs[i][1]
                text = f"{text}; {lot_note}" if text else lot_note
            out.append(AccountResult(aid, STATUS_NAME[code], Decimal(q) if q else _ZERO,
                                     reasons, text))
        return tuple(out)

    return LazyTuple(len(cols.status), build, cols)


def lines_table(cols: DecisionColumns, avg_px: Decimal) -> LazyTuple[AllocationLine]:
    def build() -> tuple[AllocationLine, ...]:
        accounts, qty, reliefs = cols.accounts, cols.qty, cols.reliefs
        return tuple(
            AllocationLine(accounts[i].account_id, Decimal(qty[i]), avg_px,
                           reliefs[i][0] if i in reliefs else ())
            for i in line_index(cols))

    return LazyTuple(len(cols.qty) - cols.qty.count(0), build, cols)


def line_index(cols: DecisionColumns) -> list[int]:
    """Accounts with a line (quantity not zero), ascending."""
    return list(itertools.compress(range(len(cols.qty)), cols.qty))


# A JSON string exactly as canonical.dumps (json.dumps, ensure_ascii=False) writes it.
_js: Callable[[str], str] = json.encoder.encode_basestring


def _reasons_text(reasons: tuple[Reason, ...]) -> str:
    """canonical.dumps([r.to_json() for r in reasons])"""
    return "[" + ",".join(
        f'{{"code":{_js(r.code)},"rule_id":{_js(r.rule_id)},'
        f'"rule_version":{_js(r.rule_version)},"text":{_js(r.text)}}}' for r in reasons) + "]"


def results_text(cols: DecisionColumns) -> str:
    """The canonical JSON of `[r.to_json() for r in results]`, written from the columns."""
    out: list[str] = []
    reason, note, reliefs = cols.reason, cols.note, cols.reliefs
    qty, flags = cols.qty, cols.flags
    ids = cols.ids_json()
    shared: dict[int, str] = {}
    notes: dict[int, str] = {}
    for i, code in enumerate(cols.status):
        # Allocated, rounded-to-zero and not-participating accounts share one reason.
        rj = shared.get(code)
        if rj is None:
            rj = _reasons_text(reason(code, i))
            if code in SHARED_REASON:
                shared[code] = rj
        status = STATUS_NAME[code]
        if code in NO_QUANTITY:
            out.append(f'{{"account_id":{ids[i]},"qty":"0","reasons":{rj},"rounding":"",'
                       f'"status":"{status}"}}')
            continue
        q = qty[i]
        if q and i in reliefs:
            text = note(flags[i])
            lot_note = reliefs[i][1]
            nj = _js(f"{text}; {lot_note}" if text else lot_note)
        else:
            f = flags[i]
            nj = notes.get(f) or notes.setdefault(f, _js(note(f)))
        out.append(f'{{"account_id":{ids[i]},"qty":"{q}","reasons":{rj},"rounding":{nj},'
                   f'"status":"{status}"}}')
    return "[" + ",".join(out) + "]"


def lines_text(cols: DecisionColumns, avg_px: str) -> str:
    """The canonical JSON of `[line.to_json() for line in lines]`, from the columns."""
    qty, reliefs = cols.qty, cols.reliefs
    ids = cols.ids_json()
    px = _js(avg_px)
    out = []
    for i in line_index(cols):
        lots = (canonical.dumps([lot.to_json() for lot in reliefs[i][0]]) if i in reliefs
                else "[]")
        out.append(f'{{"account_id":{ids[i]},"avg_px":{px},"lots":{lots},"qty":"{qty[i]}"}}')
    return "[" + ",".join(out) + "]"
