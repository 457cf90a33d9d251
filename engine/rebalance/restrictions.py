"""The rulebook's verdicts for a rebalance, decided as `engine.eligibility` decides them for
allocation: exclusions (also look-through), side rules, custom rules, issuer caps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from engine import custom_rules
from engine.eligibility import DecisionContext, build_context, plan_for
from engine.model import Account, Reason, Security, Side
from engine.reasons import ReasonBook
from engine.rulebook import Rulebook

Scope = tuple[str, str | None]          # (book, account id when it has rules of its own)
Keys = tuple[int | str, ...]            # the rules that forbid a trade (see `verdict`)


class Restrictions:
    """Verdicts for (account, security, side), with what they share cached per run."""

    def __init__(self, rulebook: Rulebook, securities: Mapping[str, Security]) -> None:
        custom_rules.install(rulebook)
        self.rulebook = rulebook
        _rb, self.programs, self.memo_keys = custom_rules.compiled(rulebook.version)
        self.securities = securities
        self._ctx: dict[tuple[str, Side], tuple[DecisionContext, ReasonBook, Any]] = {}
        self._rules: dict[Scope, tuple[int, ...]] = {}
        self._plans: dict[tuple[Scope, str, Side], Any] = {}
        self._cel: dict[tuple[Any, ...], tuple[int | str, ...]] = {}

    def ctx(self, symbol: str, side: Side) -> tuple[DecisionContext, ReasonBook, Any]:
        got = self._ctx.get((symbol, side))
        if got is None:
            price = self.securities[symbol].price or Decimal(1)
            ctx = build_context(self.rulebook, symbol, side, price, self.securities)
            tkey = custom_rules.trade_key(self.rulebook.version, ctx.cel_security,
                                          ctx.cel_order)
            got = self._ctx[(symbol, side)] = (ctx, ReasonBook(self.rulebook, ctx, symbol),
                                               tkey)
        return got

    def rules(self, scope: Scope) -> tuple[int, ...]:
        """The rules of a scope, as `Rulebook.rules_for` gives them to its accounts."""
        got = self._rules.get(scope)
        if got is None:
            book, aid = scope
            got = self._rules[scope] = self.rulebook.rules_for(
                aid if aid is not None else _no_account(self.rulebook.account_rules), book)
        return got

    def plan(self, scope: Scope, symbol: str, side: Side) -> Any:
        """What the scope's rules mean for this trade (`engine.eligibility.plan_for`)."""
        pkey = (scope, symbol, side)
        plan = self._plans.get(pkey)
        if plan is None:
            plan = self._plans[pkey] = plan_for(self.rules(scope), self.ctx(symbol, side)[0],
                                                self.memo_keys)
        return plan

    def verdict(self, a: Account, scope: Scope, binding: dict[str, Any], symbol: str,
                side: Side) -> tuple[Keys, Any]:
        """(exclusion keys, plan): the rules that forbid this side, and the scope's plan."""
        plan = self.plan(scope, symbol, side)
        excl: Keys = plan.excl
        if plan.cel:
            ctx, _rb, tkey = self.ctx(symbol, side)
            ckey = ((scope, symbol, side), a.status, custom_rules.categorical(a)
                    ) if plan.cel_categorical else None
            hits = self._cel.get(ckey) if ckey is not None else None
            if hits is None:
                binding["position"] = int(a.position(symbol))
                hits = tuple(custom_rules.hits(plan.cel, binding, tkey, self.programs,
                                               self.memo_keys, ctx.cel_security, ctx.cel_order))
                if ckey is not None:
                    self._cel[ckey] = hits
            if hits:
                excl = (*excl, *hits)
        return excl, plan

    def shared_by_scope(self, scope: Scope, symbols: Sequence[str]) -> bool:
        """Whether buy verdicts on `symbols` depend only on the scope, the status and the
        categorical account fields (no custom rule reads anything else)."""
        for s in symbols:
            plan = self.plan(scope, s, Side.BUY)
            if plan.cel and not plan.cel_categorical:
                return False
        return True

    def read_by(self, symbol: str, side: Side) -> frozenset[int]:
        """The rules `engine.eligibility.plan_for` reads for this trade (it looks a rule up
        in these four and skips it otherwise), so any other rule in a scope leaves the
        scope's plan as it would be without it."""
        ctx = self.ctx(symbol, side)[0]
        return frozenset((*ctx.excluding, *ctx.caps, *ctx.minimums, *ctx.cel_rules))

    def reason(self, key: int | str, a: Account, symbol: str, side: Side) -> Reason:
        return self.ctx(symbol, side)[1].exclusion(key, a)

    def kind(self, key: int | str) -> str:
        if isinstance(key, int):
            return self.rulebook.restrictions[key].kind
        return "cel"  # a custom rule that could not be evaluated fails closed


def _no_account(account_rules: Mapping[str, Any]) -> str:
    """An account id with no rules of its own, to ask for the rules of a book alone."""
    probe = ""
    while probe in account_rules:
        probe += "\0"
    return probe
