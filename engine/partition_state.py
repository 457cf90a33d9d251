"""What a process holds for its partitions: installed account books and open decisions.

An account book (the accounts of one request, in account-id order) is cut into contiguous
partitions and each slice is installed once per book version (`install_accounts`). A
decision's per-partition state (`PartState`) lives under its session id until `finish`.

Both are kept per *space*: a process pool may host one of its partitions in the calling
process, which also runs the in-process executor's partition of the same book, and an
in-process executor may hold several partitions. Each keeps its own space so that neither
books nor open decisions of one are seen by another.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from engine.eligibility import DecisionContext
from engine.errors import AllocationError
from engine.model import Account

T = TypeVar("T")
R = TypeVar("R")

MinSpec = tuple[int, Decimal, int]

# space -> book version -> (global offset, accounts)
_BOOKS: dict[str, OrderedDict[str, tuple[int, tuple[Account, ...]]]] = {"": OrderedDict()}
MAX_BOOKS = 8


class _Space(threading.local):
    # Per thread, so an in-process decision on another thread never sees a pool's space.
    name = ""


_SPACE = _Space()


def current_space() -> str:
    return _SPACE.name


def install_accounts(args: tuple[str, int, tuple[Account, ...]]) -> int:
    """Hold `accounts` (a contiguous slice of a book, starting at global index `lo`)."""
    version, lo, accounts = args
    books = _BOOKS.setdefault(_SPACE.name, OrderedDict())
    if version not in books:
        while len(books) >= MAX_BOOKS:
            books.popitem(last=False)
        books[version] = (lo, accounts)
    return len(accounts)


def installed_books() -> list[str]:
    return list(_BOOKS.get(_SPACE.name, ()))


def installed_book(version: str) -> tuple[int, tuple[Account, ...]]:
    books = _BOOKS.get(_SPACE.name)
    book = books.get(version) if books is not None else None
    if book is None:
        raise AllocationError(f"account book {version} is not installed in this process")
    return book


def run_in_space(space: str, fn: Callable[[T], R], arg: T) -> R:
    """`fn(arg)` against the books installed under `space` (not the default one)."""
    prev, _SPACE.name = _SPACE.name, space
    try:
        return fn(arg)
    finally:
        _SPACE.name = prev


def drop_space(space: str) -> None:
    """Forget every book installed under `space`, and its open decisions."""
    if space:
        _BOOKS.pop(space, None)
        for key in [k for k in _STATE if k[0] == space]:
            del _STATE[key]


class PartState:
    """One decision's view of one partition."""

    __slots__ = (
        "accounts", "alive", "alloc", "begun", "cand", "cap", "capzero", "ctx", "dropped", "el",
        "el_cap", "el_key", "el_min", "excl", "flags", "has_min", "heap", "integral", "jbits",
        "lo", "near", "near_odd", "pe", "pending", "popped", "pw", "pw_dec", "rank", "scan",
        "status", "thr", "version",
    )

    def __init__(self, version: str, lo: int, accounts: tuple[Account, ...],
                 ctx: DecisionContext) -> None:
        self.version = version
        self.lo = lo
        self.accounts = accounts
        self.ctx = ctx
        self.status = bytearray(len(accounts))
        self.excl: dict[int, tuple[int | str, ...]] = {}
        self.capzero: dict[int, int | str] = {}
        # Eligible accounts (local index) with their cap, the cap's rule key and minimum.
        self.el: list[int] = []
        self.el_cap: list[int | None] = []
        self.el_key: list[int | str | None] = []
        self.el_min: list[MinSpec | None] = []
        self.dropped: dict[int, int] = {}  # eligible position -> quantity it was offered
        # Participants (positive weight) of the current method: eligible position, weight,
        # cap, tie-break rank; `alive` is cleared when one is dropped below its minimum.
        self.pe: list[int] = []
        self.pw_dec: list[Decimal] = []
        self.integral = True
        self.begun = False
        self.pw: list[int] = []
        self.cap: list[int | None] = []
        self.rank: list[int] = []
        self.alive = bytearray()
        self.jbits = 1
        self.alloc: list[int] = []
        self.flags = bytearray()
        # Water-filling: capped participants by cap per unit of weight, as encoded ints
        # (key << jbits | participant), sorted lazily (a heap, and the prefix popped so far).
        self.heap: list[int] = []
        self.popped: list[int] = []
        self.scan = 0
        self.pending: list[int] = []
        # Lot rounding: candidates for a left-over lot (encoded, sorted) and active accounts
        # without room for a whole lot (with their left-over-lot key).
        self.cand: list[int] = []
        self.near: list[tuple[int, int]] = []
        # Active accounts without room for the odd lot: (split.odd_key, participant).
        self.near_odd: list[tuple[int, int, int]] = []
        # Smallest quantity that meets each participant's minimum (0: none).
        self.thr: list[int] = []
        self.has_min: list[int] = []


# (space, session id) -> state; bounded so that a caller that never finishes cannot grow it.
_STATE: OrderedDict[tuple[str, str], PartState] = OrderedDict()
_MAX_STATE = 8


def open_session(sid: str, st: PartState) -> None:
    while len(_STATE) >= _MAX_STATE:
        _STATE.popitem(last=False)
    _STATE[(_SPACE.name, sid)] = st


def session(sid: str) -> PartState:
    st = _STATE.get((_SPACE.name, sid))
    if st is None:
        raise AllocationError(f"decision session {sid} is not open in this process")
    return st


def close_session(sid: str) -> PartState:
    st = session(sid)
    del _STATE[(_SPACE.name, sid)]
    return st
