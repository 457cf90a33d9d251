"""What every account of one run shares: the model's symbols in row order with their prices
and weights, issuers, lot sizes, reason sentences, and the buy-side restrictions of
accounts that agree on every field the rules read.

Everything here is decided once per run (or once per group of accounts) so that the work
per account is its own arithmetic only; none of it changes a result, only when it is made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal, localcontext
from typing import Any

from engine import custom_rules
from engine.eligibility import DECIMAL_CONTEXT, ultimate_issuer
from engine.errors import AllocationError
from engine.model import Account, Reason, Security, Side
from engine.rebalance.restrictions import Keys, Restrictions, Scope
from engine.rebalance.rows import _ZERO, REBALANCE_ENGINE_VERSION, SYS_REBALANCE
from engine.rebalance.targets import BuyProfile, Verdict
from engine.rebalance.trades import round_note
from engine.rebalance.universe import Universe, Universes
from engine.rebalance_model import Model
from engine.rulebook import DEFAULT_SCHEME, Rulebook, Scheme


class Run:
    """What every account of one run shares: model, prices, reason sentences."""

    def __init__(self, model: Model, rulebook: Rulebook, securities: Mapping[str, Security],
                 trade_date: dt.date) -> None:
        self.model = model
        self.rulebook = rulebook
        self.securities = securities
        self.trade_date = trade_date
        self.restr = Restrictions(rulebook, securities)
        self.rule_id = f"MODEL-{model.name}"
        self.rule_version = model.version[:12]
        self.targets = dict(model.targets)
        self.issuer: dict[str, str] = {}
        for sym in securities:
            try:
                self.issuer[sym] = ultimate_issuer(sym, securities)
            except AllocationError:  # pragma: no cover - the loader checks related_to
                self.issuer[sym] = securities[sym].issuer
        members: dict[str, int] = {}
        for iss in self.issuer.values():
            members[iss] = members.get(iss, 0) + 1
        # Symbols whose issuer has other instruments: their cap headroom depends on those.
        self.shared_issuer = frozenset(s for s, iss in self.issuer.items() if members[iss] > 1)
        self.lot = {s: sec.lot_size if model.round_lots else 1 for s, sec in securities.items()}
        # Pieces of the trade sentences that depend on the security only.
        self.at_price = {s: f" {s} at {sec.price}" for s, sec in securities.items()}
        self.lot_note = {s: round_note(lot) for s, lot in self.lot.items()}
        with localcontext(DECIMAL_CONTEXT):
            # A buy's quantity is floor_to(diff * value / 100 / px, lot). When the first
            # product is below 99% of lot * px * 100 the quotient is below one lot, so the
            # quantity is zero: with a positive price each division rounds by less than one
            # part in 10**33 (and rounding is monotone), far less than the 1% margin.
            self.no_lot_below = {s: self.lot[s] * p * 99 if p > 0 else _ZERO
                                 for s, sec in securities.items()
                                 if (p := sec.price) is not None}
        self.universes = Universes(self.targets, securities)
        self.universe = self.universes.model
        self.weight_kind = self.universes.weight_kind
        self.weight_of_kind = self.universes.weight_of_kind
        self.value_price = self.universes.value_price
        self.weighted = self.universes.weighted
        self.priced_targets = [s for s, p in zip(self.universe.symbols, self.universe.price,
                                                  strict=True) if p is not None]
        self._shared: dict[Any, Reason] = {}
        self._profiles: dict[Any, BuyProfile] = {}
        self._shareable: dict[Scope, bool] = {}
        self._read_by: dict[int, list[str]] | None = None
        self._binding: tuple[Account, dict[str, Any]] | None = None

    # -- per account ----------------------------------------------------------------------

    def universe_for(self, held: Mapping[str, Decimal]) -> Universe:
        return self.universes.of(held)

    def scope(self, a: Account) -> Scope:
        return (a.book, a.account_id if a.account_id in self.rulebook.account_rules else None)

    def binding(self, a: Account) -> dict[str, Any]:
        """The account as custom rules see it (made when a rule first needs it)."""
        if self._binding is None or self._binding[0] is not a:
            self._binding = (a, custom_rules.account_binding(a, ""))
        return self._binding[1]

    def scheme(self, a: Account) -> Scheme:
        if a.scheme in self.rulebook.schemes:
            return self.rulebook.schemes[a.scheme]
        book_scheme = self.rulebook.content.get("books", {}).get(a.book, {}).get("scheme")
        if book_scheme:
            return self.rulebook.schemes[book_scheme]
        return self.rulebook.schemes.get("default", DEFAULT_SCHEME)

    def verdict(self, a: Account, scope: Scope, symbol: str) -> Verdict:
        """Buy-side exclusion keys and the tightest issuer cap for one security."""
        excl, plan = self.restr.verdict(a, scope, self.binding(a), symbol, Side.BUY)
        cap: tuple[Decimal, int] | None = plan.cap
        return excl, cap

    def sell_exclusions(self, a: Account, scope: Scope, symbol: str) -> Keys:
        return self.restr.verdict(a, scope, self.binding(a), symbol, Side.SELL)[0]

    # -- shared by accounts -----------------------------------------------------------------

    def profile(self, a: Account, scope: Scope) -> BuyProfile:
        """The buy verdicts on the model's securities and what they mean for targets, shared
        by accounts that agree on every field the rules read (scope, status and the
        categorical fields) when custom rules read nothing else."""
        key = (scope, a.status, custom_rules.categorical(a))
        got = self._profiles.get(key)
        if got is None:
            got = BuyProfile(self, a, self._buy_verdicts(a, scope))
            # An account's own scope has no other account to share with.
            if scope[1] is None and self._shared_by_scope(scope):
                self._profiles[key] = got
        return got

    def _buy_verdicts(self, a: Account, scope: Scope) -> dict[str, Verdict]:
        book, aid = scope
        if aid is not None and self._shared_by_scope((book, None)):
            # An account with rules of its own sees its book's verdicts except where one of
            # its own rules is read (plan_for ignores the others), so only those are decided.
            base = self.profile(a, (book, None)).verdicts
            out = dict(base)
            for s in self._read_by_any(self.rulebook.account_rules[aid]):
                out[s] = self.verdict(a, scope, s)
            return out
        return {s: self.verdict(a, scope, s) for s in self.priced_targets}

    def _shared_by_scope(self, scope: Scope) -> bool:
        got = self._shareable.get(scope)
        if got is None:
            got = self._shareable[scope] = self.restr.shared_by_scope(scope, self.priced_targets)
        return got

    def _read_by_any(self, rules: tuple[int, ...]) -> list[str]:
        """The model securities (in order) whose buy plan reads any of `rules`."""
        if self._read_by is None:
            self._read_by = {}
            for s in self.priced_targets:
                for i in self.restr.read_by(s, Side.BUY):
                    self._read_by.setdefault(i, []).append(s)
        hit = {s for i in rules for s in self._read_by.get(i, ())}
        return [s for s in self.priced_targets if s in hit]

    # -- reasons ----------------------------------------------------------------------------

    def model_reason(self, code: str, text: str) -> Reason:
        return Reason(self.rule_id, self.rule_version, code, text)

    def shared(self, key: Any, make: Callable[[], Reason]) -> Reason:
        got = self._shared.get(key)
        if got is None:
            got = self._shared[key] = make()
        return got

    def sys(self, code: str, text: str) -> Reason:
        return self.shared(("sys", code, text),
                           lambda: Reason(SYS_REBALANCE, REBALANCE_ENGINE_VERSION, code, text))
