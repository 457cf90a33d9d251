"""The symbols of an account's rows, in order, with what the run knows of each: the
model's symbols for every account, plus any holding outside the model."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from engine.model import Security

_ZERO = Decimal(0)
_MAX_EXTENDED = 64


class Universe:
    """Row symbols in order, with the model weight and the reference price of each."""

    __slots__ = ("index", "model_at", "model_pct", "price", "symbols", "unpriced")

    def __init__(self, symbols: list[str], targets: Mapping[str, Decimal],
                 securities: Mapping[str, Security], model: Universe | None = None) -> None:
        self.symbols = tuple(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.model_pct = [targets.get(s, _ZERO) for s in self.symbols]
        self.price: list[Decimal | None] = [
            securities[s].price if s in securities else None for s in self.symbols]
        self.unpriced = tuple(i for i, p in enumerate(self.price) if p is None)
        # Where each of the model universe's symbols is in this one (None: it is that one).
        self.model_at: list[int] | None = (
            None if model is None else [self.index[s] for s in model.symbols])

    def from_model(self, column: list[Decimal]) -> list[Decimal]:
        """A model-universe column in this universe's order (zero for other holdings)."""
        if self.model_at is None:
            return column
        out = [_ZERO] * len(self.symbols)
        for j, i in enumerate(self.model_at):
            out[i] = column[j]
        return out


class Universes:
    """The model's universe and those of accounts holding more, with what depends only on
    the model and the security master."""

    def __init__(self, targets: Mapping[str, Decimal], securities: Mapping[str, Security]
                 ) -> None:
        self.targets = targets
        self.securities = securities
        self.model = Universe(sorted(targets), targets, securities)
        # The price a holding is valued at (none counts as zero) and whether it has weight.
        self.value_price = {s: sec.price or _ZERO for s, sec in securities.items()}
        self.weighted = frozenset(s for s, sec in securities.items() if sec.price)
        # Model weights take few distinct values: arithmetic on a weight is done once per
        # value (str tells apart equal values of different exponents, which differ).
        kinds: dict[str, int] = {}
        self.weight_kind = [kinds.setdefault(str(t), len(kinds)) for t in self.model.model_pct]
        self.weight_of_kind = [_ZERO] * len(kinds)
        for t, kind in zip(self.model.model_pct, self.weight_kind, strict=True):
            self.weight_of_kind[kind] = t
        self._extended: dict[tuple[str, ...], Universe] = {}

    def of(self, held: Mapping[str, Decimal]) -> Universe:
        """The row symbols of an account holding `held`: the model's unless it holds more."""
        if held.keys() <= self.targets.keys():
            return self.model
        extra = tuple(sorted(held.keys() - self.targets.keys()))
        got = self._extended.get(extra)
        if got is None:
            if len(self._extended) >= _MAX_EXTENDED:
                self._extended.pop(next(iter(self._extended)))
            got = self._extended[extra] = Universe(
                sorted((*self.targets, *extra)), self.targets, self.securities, self.model)
        return got

    def weighted_symbols(self, held: Mapping[str, Decimal]) -> list[str]:
        """The holdings that have a weight (a price that is not zero), in holding order."""
        if held.keys() <= self.weighted:
            return list(held)
        return [s for s in held if s in self.weighted]
