"""Account books: a request's accounts in id order, prepared once per reference-data version.

Accounts are frozen reference data: the gateway hands the same tuple of `Account`s to every
block of a book until reference data reloads. Everything that depends only on that tuple —
the id order, duplicate check, schemes, the account part of the inputs hash, the version
under which workers hold it — is computed once and memoised on the tuple's identity (the
memo keeps the tuple alive, so an identity cannot be reused while it is cached). Any other
sequence gets a fresh book per call.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence

from engine.model import Account

_MAX_BOOKS = 32
_memo: OrderedDict[int, AccountBook] = OrderedDict()
_lock = threading.Lock()
_serial = itertools.count(1)


class AccountBook:
    __slots__ = ("_hash_bytes", "_ids_json", "_index", "accounts", "duplicates", "first", "ids",
                 "schemes", "sorted", "version")

    def __init__(self, accounts: Sequence[Account]) -> None:
        self.accounts = accounts
        self.sorted: tuple[Account, ...] = tuple(sorted(accounts, key=lambda a: a.account_id))
        self.ids: list[str] = [a.account_id for a in self.sorted]
        # Sorted, so the ids are unique exactly when they are strictly increasing.
        self.duplicates = not all(map(str.__lt__, self.ids, itertools.islice(self.ids, 1, None)))
        self.schemes: list[str] = sorted({a.scheme for a in accounts})
        self.first: Account | None = accounts[0] if accounts else None
        # Names the book wherever it is installed (see engine.partition); unique per process.
        self.version = f"book-{next(_serial)}-{len(self.ids)}"
        self._hash_bytes: bytes | None = None
        self._index: dict[str, int] | None = None
        self._ids_json: list[str] | None = None

    def ids_json(self) -> list[str]:
        """Account ids (id order) as JSON strings, as canonical JSON writes them."""
        if self._ids_json is None:
            encode = json.encoder.encode_basestring
            self._ids_json = [encode(i) for i in self.ids]
        return self._ids_json

    @property
    def index(self) -> dict[str, int]:
        """Account id -> position in id order."""
        if self._index is None:
            self._index = {a: i for i, a in enumerate(self.ids)}
        return self._index

    def hash_bytes(self) -> bytes:
        """The accounts' contribution to the inputs hash, in id order."""
        if self._hash_bytes is None:
            parts = []
            for a in self.sorted:
                lots = "" if not a.lots else repr(sorted(
                    (s, [(t.lot_id, str(t.quantity), str(t.cost_per_share),
                          t.acquired.isoformat()) for t in ls]) for s, ls in a.lots.items()))
                pos = "" if not a.positions else repr(sorted(
                    (s, str(q)) for s, q in a.positions.items()))
                parts.append(repr((a.account_id, a.book, a.status, str(a.nav), str(a.cash),
                                   a.tier, str(a.intended_qty), str(a.target_weight),
                                   a.custodian, a.prime_broker, a.strategy, a.vehicle,
                                   a.scheme, pos, lots)).encode())
            self._hash_bytes = b"".join(parts)
        return self._hash_bytes


def book_for(accounts: Sequence[Account]) -> AccountBook:
    """The (memoised, for tuples) book of `accounts`."""
    if not isinstance(accounts, tuple):
        return AccountBook(tuple(accounts))
    key = id(accounts)
    with _lock:
        book = _memo.get(key)
        if book is not None and book.accounts is accounts:
            _memo.move_to_end(key)
            return book
    book = AccountBook(accounts)
    with _lock:
        _memo[key] = book
        while len(_memo) > _MAX_BOOKS:
            _memo.popitem(last=False)
    return book
