"""Reasons: one sentence per cause, citing the rule id and version behind it.

Sentences shared by many accounts are built once per decision and reused, so a book of
100,000 accounts does not format 100,000 identical strings.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal

from engine.eligibility import (
    ENGINE_RULE_VERSION,
    SYS_BUYING_POWER,
    SYS_HOLDINGS,
    SYS_STATUS,
    DecisionContext,
)
from engine.model import Account, Reason
from engine.rulebook import Rulebook, Scheme
from engine.status import CAP_EXCLUDED, EXCLUDED, NOT_PARTICIPATING
from engine.table import DecisionColumns

_STATUS_LABEL = {"do_not_trade": "flagged do-not-trade"}
SYS_METHOD = "SYS-METHOD"
SYS_ROUNDING = "SYS-ROUNDING"

METHOD_LABEL = {
    "pro_rata": "pro rata to intended quantity",
    "pari_passu": "pari passu by NAV",
    "target_weight": "in proportion to the shortfall to target weight",
    "tiered": "by priority tier",
    "equal": "in equal shares",
    "manual": "by the order's pre-allocation",
}


def _n(q: Decimal | int) -> str:
    return f"{q:,}"


class ReasonBook:
    def __init__(self, rulebook: Rulebook, ctx: DecisionContext, symbol: str) -> None:
        self.rulebook = rulebook
        self.ctx = ctx
        self.symbol = symbol
        self._cache: dict[object, Reason] = {}

    def _rule(self, i: int, code: str, text: str) -> Reason:
        r = self.rulebook.restrictions[i]
        return Reason(r.id, r.version, code, text)

    def exclusion(self, key: int | str, a: Account) -> Reason:
        if key == SYS_STATUS:
            label = _STATUS_LABEL.get(a.status, a.status)
            return Reason(SYS_STATUS, ENGINE_RULE_VERSION, "ACCOUNT_" + a.status.upper(),
                          f"The account is {label}; only active accounts receive allocations.")
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if isinstance(key, str):
            # A custom rule that raised: "CEL_ERROR:<index>:<message>".
            _tag, idx, err = key.split(":", 2)
            r = self.rulebook.restrictions[int(idx)]
            reason = Reason(r.id, r.version, "CUSTOM_RULE_ERROR",
                            f"Custom rule \"{r.expr}\" could not be evaluated ({err}); the account "
                            "is excluded so that a broken rule never lets a trade through.")
        else:
            r = self.rulebook.restrictions[key]
            if r.kind == "cel":
                reason = self._rule(key, "CUSTOM_RULE",
                                    f"{r.description} (custom rule \"{r.expr}\" holds for this "
                                    f"account and {self.symbol}).")
            else:
                code, detail = self.ctx.excluding[key]
                side = self.ctx.side.value.replace("_", " ")
                what = (f"{side} orders in {self.symbol} are not allowed ({detail})"
                        if code == "SIDE_FORBIDDEN"
                        else f"{self.symbol} is excluded because it matches {detail}")
                reason = self._rule(key, code, f"{r.description} — {what}.")
        self._cache[key] = reason
        return reason

    def cap(self, key: int | str, a: Account, shares: int) -> Reason:
        px = self.ctx.price
        if key == SYS_BUYING_POWER:
            return Reason(SYS_BUYING_POWER, ENGINE_RULE_VERSION, "BUYING_POWER",
                          f"Cash of {_n(a.cash)} buys at most {_n(shares)} shares at {px}; "
                          "the allocation is clipped to the buying power.")
        if key == SYS_HOLDINGS:
            return Reason(SYS_HOLDINGS, ENGINE_RULE_VERSION, "HOLDINGS",
                          f"The account holds {_n(a.position(self.symbol))} {self.symbol}; a "
                          "sell is clipped to the holding so that it never goes short.")
        assert isinstance(key, int)
        r = self.rulebook.restrictions[key]
        return self._rule(key, "ISSUER_CAP",
                          f"{r.description} — {r.max_pct_nav}% of NAV {_n(a.nav)} leaves room "
                          f"for {_n(shares)} shares at {px} after existing holdings of the "
                          "same issuer.")

    def minimum(self, mini: tuple[int, Decimal, int], got: int) -> Reason:
        r = self.rulebook.restrictions[mini[2]]
        parts = []
        if mini[0]:
            parts.append(f"{_n(mini[0])} shares")
        if mini[1]:
            parts.append(f"{_n(mini[1])} notional")
        return self._rule(mini[2], "BELOW_MINIMUM",
                          f"{r.description} — its share of {_n(got)} shares is below the "
                          f"minimum of {' and '.join(parts)}; it was dropped and the split "
                          "re-run over the other accounts.")

    def not_participating(self, method: str, why: str) -> Reason:
        key = ("np", method, why)
        if key not in self._cache:
            self._cache[key] = Reason(SYS_METHOD, ENGINE_RULE_VERSION, "NOT_PARTICIPATING",
                                      f"Not part of the split {METHOD_LABEL.get(method, method)}"
                                      f": {why or 'no positive weight'}.")
        return self._cache[key]

    def zero(self, method: str, lot: int) -> Reason:
        key = ("zero", method, lot)
        if key not in self._cache:
            self._cache[key] = Reason(SYS_ROUNDING, ENGINE_RULE_VERSION, "ROUNDED_TO_ZERO",
                                      f"Its share {METHOD_LABEL.get(method, method)} is smaller "
                                      f"than one round lot of {lot} and rounds down to zero.")
        return self._cache[key]

    def allocated(self, scheme: Scheme, method: str) -> Reason:
        key = ("ok", scheme.name, method)
        if key not in self._cache:
            self._cache[key] = Reason(
                f"SCHEME-{scheme.name}", self.rulebook.version[:12], "ALLOCATED",
                f"Allocated {METHOD_LABEL.get(method, method)} under scheme '{scheme.name}' at "
                "the block average price; every restriction that applies was passed.")
        return self._cache[key]

    @staticmethod
    def note(clipped: bool, extra_lot: bool, odd_lot: bool, *, held: bool = False) -> str:
        """How the account's quantity was rounded, from its flags."""
        note = "rounded down to a multiple of the lot size"
        if clipped:
            note = "clipped to its cap, rounded down to a whole lot"
        elif held:
            note += "; no room under its cap for the next share it was in line for"
        if extra_lot:
            note += "; +1 lot by largest remainder"
        if odd_lot:
            note += "; received the odd lot (largest remaining shortfall)"
        return note

    def rule_label(self, key: int | str) -> str:
        """'<rule id> (version <v>)' of a rule key: a restriction index, a built-in id or a
        custom-rule error key."""
        if isinstance(key, str) and key.startswith("CEL_ERROR:"):
            key = int(key.split(":", 2)[1])
        if isinstance(key, int):
            r = self.rulebook.restrictions[key]
            return f"{r.id} (version {r.version})"
        return f"{key} (version {ENGINE_RULE_VERSION})"

    def _binding(self, keys: Iterable[int | str]) -> str:
        counts = Counter(self.rule_label(k) for k in keys)
        return ", ".join(f"{label}: {_n(n)} account{'s' if n != 1 else ''}"
                         for label, n in sorted(counts.items()))

    def unallocated(self, qty: int, cols: DecisionColumns, methods: Sequence[str],
                    any_participant: bool) -> str:
        """Why `qty` shares stay unallocated, naming every rule that kept them."""
        if qty <= 0:
            return ""
        status = cols.status
        if not status:
            return "the request names no account"
        if all(c in (EXCLUDED, CAP_EXCLUDED) for c in status):
            keys = [*itertools.chain.from_iterable(cols.excluded.values()),
                    *cols.cap_excluded.values()]
            return ("no account is eligible: every account was excluded by a restriction ("
                    f"{self._binding(keys)})")
        if not any_participant and not cols.dropped:
            sitting_out = [SYS_METHOD] * status.count(NOT_PARTICIPATING)
            return (f"no eligible account has a positive weight under {', '.join(methods)} ("
                    f"{self._binding(sitting_out)})")
        if not any_participant:
            return ("every eligible account was below its minimum allocation ("
                    f"{self._binding(m[2] for _got, m in cols.dropped.values())})")
        return (f"every eligible account is at its cap; the remaining {_n(qty)} shares cannot "
                "be placed without breaking "
                f"{self._binding(key for key, _cap in cols.capped.values())}")
