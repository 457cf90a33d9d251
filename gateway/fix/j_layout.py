"""A J's fields as plain data, and the two ways to make a quickfix message of them.

Setting a J's fields one call at a time cost about 10 us a field through the binding:
20 ms for a 172-line J, twice per block (broker and OMS), on the path from the last fill
to the J. The same fields written as FIX text and parsed by quickfix against the data
dictionary take about 1 ms. Both ways build from one layout (`Fields`), and the text way
is used only once `use_dictionary` has proved, on a sample J, that the parsed message
serialises byte for byte like the assembled one (a dictionary without our group layouts
would silently move fields out of their groups).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union, overload

import quickfix as fix
import structlog

from gateway.fix import tags as T
from gateway.fix.codec import group, new_message

log = structlog.get_logger("fixalloc.fix")

Field = tuple[int, Union[str, "Sequence[Fields]"]]
"""(tag, value), or (count tag, entries) for a repeating group."""
Fields = list[Field]


class Entries(Sequence[Fields]):
    """A group's entries made one at a time as they are written: a J to the OMS can hold
    100,000 lines, and their fields all at once would be about 100 MB for a moment."""

    def __init__(self, items: Sequence[Any], make: Callable[[Any], Fields]) -> None:
        self._items = items
        self._make = make

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Fields: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Fields]: ...
    def __getitem__(self, index: int | slice) -> Fields | Sequence[Fields]:
        if isinstance(index, slice):
            return [self._make(item) for item in self._items[index]]
        return self._make(self._items[index])

    def __iter__(self) -> Iterator[Fields]:
        return (self._make(item) for item in self._items)

SOH = "\x01"

_ALLOC_ORDER = [
    T.AllocAccount, T.AllocAcctIDSource, T.MatchStatus, T.AllocPrice, T.AllocQty,
    T.IndividualAllocID, T.ProcessCode, T.NoNestedPartyIDs, T.NotifyBrokerOfCredit,
    T.AllocHandlInst, T.AllocText, T.EncodedAllocTextLen, T.EncodedAllocText, T.Commission,
    T.CommType, T.CommCurrency, T.FundRenewWaiv, T.AllocAvgPx, T.AllocNetMoney,
    T.SettlCurrAmt, T.AllocSettlCurrAmt, T.SettlCurrency, T.AllocSettlCurrency,
    T.SettlCurrFxRate, T.SettlCurrFxRateCalc, T.AllocAccruedInterestAmt,
    T.AllocInterestAtMaturity, T.NoMiscFees, T.NoClearingInstructions, T.AllocSettlInstType,
    T.SettlDeliveryType, T.StandInstDbType, T.StandInstDbName, T.StandInstDbID,
    T.AllocStrategy, T.AllocVehicle,
]
_NESTED_ORDER = [T.NestedPartyID, T.NestedPartyIDSource, T.NestedPartyRole, T.NoNestedPartySubIDs]
_ORDERS_ORDER = [T.ClOrdID, T.OrderID, T.SecondaryOrderID, T.SecondaryClOrdID, T.ListID,
                 T.NoNested2PartyIDs, T.OrderQty, T.OrderAvgPx, T.OrderBookingQty]

GROUPS: dict[int, tuple[int, list[int]]] = {
    T.NoOrders: (T.ClOrdID, _ORDERS_ORDER),
    T.NoAllocs: (T.AllocAccount, _ALLOC_ORDER),
    T.NoNestedPartyIDs: (T.NestedPartyID, _NESTED_ORDER),
}
"""The groups a J's layout may hold: count tag -> (first tag, field order)."""

_state: dict[str, fix.DataDictionary | None] = {"dictionary": None}
_lock = threading.Lock()


def assemble(msg_type: str, fields: Fields) -> fix.Message:
    """The message built field by field (the reference; used without a proven dictionary)."""
    msg = new_message(msg_type)
    _set(msg, fields)
    return msg


def _set(target: fix.FieldMap, fields: Fields) -> None:
    for tag, value in fields:
        if isinstance(value, str):
            target.setField(tag, value)
            continue
        first, order = GROUPS[tag]
        # One group object per layout, cleared for each entry: addGroup copies it.
        grp = group(tag, first, order)
        for entry in value:
            grp.clear()
            _set(grp, entry)
            target.addGroup(grp)


def text(msg_type: str, fields: Fields) -> str | None:
    """The message as FIX text for quickfix to parse (BodyLength and CheckSum are set when
    it is sent); None when a value holds the field separator and cannot be written so."""
    parts = [f"8=FIX.4.4{SOH}9=0{SOH}35={msg_type}{SOH}"]
    if not _flatten(fields, parts):
        return None
    parts.append(f"10=000{SOH}")
    return "".join(parts)


def _flatten(fields: Fields, parts: list[str]) -> bool:
    for tag, value in fields:
        if isinstance(value, str):
            if SOH in value:
                return False
            parts.append(f"{tag}={value}{SOH}")
            continue
        parts.append(f"{tag}={len(value)}{SOH}")
        for entry in value:
            # One string per entry, not one per field: fewer objects alive at once.
            chunk: list[str] = []
            if not _flatten(entry, chunk):
                return False
            parts.append("".join(chunk))
    return True


def build(msg_type: str, fields: Fields) -> fix.Message:
    """The message, parsed from text when a proven dictionary is set, else assembled."""
    dictionary = _state["dictionary"]
    if dictionary is not None:
        raw = text(msg_type, fields)
        if raw is not None:
            return fix.Message(raw, dictionary, False)
    return assemble(msg_type, fields)


def use_dictionary(path: Path, sample: tuple[str, Fields]) -> bool:
    """Parse Js against the dictionary at `path` when it reproduces `sample` exactly.

    Returns whether it does; when not, Js keep being assembled field by field."""
    dictionary = fix.DataDictionary(str(path))
    msg_type, fields = sample
    raw = text(msg_type, fields)
    proven = raw is not None and (fix.Message(raw, dictionary, False).toString()
                                  == assemble(msg_type, fields).toString())
    with _lock:
        _state["dictionary"] = dictionary if proven else None
    if not proven:
        log.warning("fix.j_text_path_off", dictionary=str(path),
                    reason="the dictionary does not keep a sample J's groups as built")
    return proven


def forget_dictionary() -> None:
    with _lock:
        _state["dictionary"] = None
