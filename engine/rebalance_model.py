"""Rebalancing models: target weights per security, validated and versioned by content.

A model is built from a plain mapping (the gateway reads it from YAML, see
docs/rebalance.md). Validation errors name the element by path, e.g. ``targets.AAPL``, as
rulebook errors do, so the loader can map them back to a file and line. The version is the
sha256 of the canonical JSON of the normalised content: two files that say the same thing
have the same version.

Weights are percentages of the account's value, given as integers or quoted decimals
(never YAML floats); the security targets plus the cash target add up to exactly 100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from engine import canonical
from engine.errors import RulebookError
from engine.model import Account

REDISTRIBUTION_RULES = ("pro_rata", "cash")
_HUNDRED = Decimal(100)
_TOP_KEYS = ("name", "description", "assign", "targets", "cash", "drift", "min_trade",
             "round_lots", "redistribution")


class ModelError(RulebookError):
    """A model mapping is invalid; `path` names the offending element."""


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    version: str
    description: str
    # symbol -> target weight in percent of the account's value, symbols sorted
    targets: Mapping[str, Decimal]
    cash_target_pct: Decimal
    cash_buffer_pct: Decimal
    account_band_pct: Decimal
    position_band_pct: Decimal
    min_trade_shares: Decimal
    min_trade_notional: Decimal
    round_lots: bool
    redistribution: str
    schemes: frozenset[str]
    accounts: frozenset[str]
    content: Mapping[str, Any]

    def assigned(self, account: Account) -> bool:
        """Whether the model applies to `account` (named, or through its scheme)."""
        return account.account_id in self.accounts or account.scheme in self.schemes

    def canonical_json(self) -> str:
        return canonical.dumps(self.content)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<memory>") -> Model:
        """Validate `data` and build a model; raise ModelError naming the bad path."""
        del source  # kept for symmetry with Rulebook.from_mapping
        if not isinstance(data, Mapping):
            raise ModelError("", "a model must be a mapping")
        _no_unknown(data, _TOP_KEYS, "")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ModelError("name", "is required (a non-empty string)")
        assign = data.get("assign")
        if not isinstance(assign, Mapping):
            raise ModelError("assign", "is required: a mapping with schemes and/or accounts")
        _no_unknown(assign, ("schemes", "accounts"), "assign")
        schemes = _names(assign.get("schemes"), "assign.schemes")
        accounts = _names(assign.get("accounts"), "assign.accounts")
        if not schemes and not accounts:
            raise ModelError("assign", "names no scheme and no account")
        raw_targets = data.get("targets")
        if not isinstance(raw_targets, Mapping) or not raw_targets:
            raise ModelError("targets", "is required: a mapping of symbol to weight in percent")
        targets: dict[str, Decimal] = {}
        for sym, w in raw_targets.items():
            if not isinstance(sym, str) or not sym.strip():
                raise ModelError(f"targets.{sym}", "a symbol must be a non-empty string")
            targets[sym.strip()] = _pct(w, f"targets.{sym}")
        cash = _section(data, "cash", ("target_pct", "buffer_pct"))
        drift = _section(data, "drift", ("account_band_pct", "position_band_pct"))
        mini = _section(data, "min_trade", ("shares", "notional"))
        cash_target = _pct(cash.get("target_pct", 0), "cash.target_pct")
        buffer = _pct(cash.get("buffer_pct", 0), "cash.buffer_pct")
        if buffer > cash_target:
            raise ModelError("cash.buffer_pct", f"the cash buffer ({buffer}%) cannot exceed "
                                                f"the cash target ({cash_target}%)")
        total = sum(targets.values(), Decimal(0)) + cash_target
        if total != _HUNDRED:
            raise ModelError("targets", f"security targets plus the cash target must add up to "
                                        f"100, were {total}")
        round_lots = data.get("round_lots", True)
        if not isinstance(round_lots, bool):
            raise ModelError("round_lots", "must be true or false")
        redistribution = data.get("redistribution", "pro_rata")
        if redistribution not in REDISTRIBUTION_RULES:
            raise ModelError("redistribution", f"must be one of {list(REDISTRIBUTION_RULES)}, "
                                               f"was {redistribution!r}")
        description = data.get("description", "")
        content = {
            "name": name.strip(),
            "description": str(description or ""),
            "assign": {"schemes": sorted(schemes), "accounts": sorted(accounts)},
            "targets": dict(sorted(targets.items())),
            "cash": {"target_pct": cash_target, "buffer_pct": buffer},
            "drift": {"account_band_pct": _pct(drift.get("account_band_pct", 0),
                                               "drift.account_band_pct"),
                      "position_band_pct": _pct(drift.get("position_band_pct", 0),
                                                "drift.position_band_pct")},
            "min_trade": {"shares": _num(mini.get("shares", 0), "min_trade.shares"),
                          "notional": _num(mini.get("notional", 0), "min_trade.notional")},
            "round_lots": round_lots,
            "redistribution": redistribution,
        }
        version = canonical.sha256_hex(canonical.dumps(content))
        return cls(
            name=content["name"], version=version, description=content["description"],
            targets=content["targets"], cash_target_pct=cash_target, cash_buffer_pct=buffer,
            account_band_pct=content["drift"]["account_band_pct"],
            position_band_pct=content["drift"]["position_band_pct"],
            min_trade_shares=content["min_trade"]["shares"],
            min_trade_notional=content["min_trade"]["notional"],
            round_lots=round_lots, redistribution=redistribution,
            schemes=schemes, accounts=accounts, content=content,
        )


def _no_unknown(m: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    for key in m:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ModelError(where, f"unknown key {key!r}; expected one of {sorted(allowed)}")


def _section(data: Mapping[str, Any], key: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    raw = data.get(key) or {}
    if not isinstance(raw, Mapping):
        raise ModelError(key, "must be a mapping")
    _no_unknown(raw, allowed, key)
    return raw


def _names(v: Any, path: str) -> frozenset[str]:
    if v is None:
        return frozenset()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list | tuple):
        raise ModelError(path, "must be a list of names")
    out = set()
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ModelError(f"{path}[{i}]", "must be a non-empty string")
        out.add(item.strip())
    return frozenset(out)


def _num(v: Any, path: str) -> Decimal:
    if isinstance(v, bool | float):
        # YAML floats are binary; insist on a quoted or integer value to stay exact.
        raise ModelError(path, f"must be an integer or a quoted decimal, was {v!r}")
    if not isinstance(v, int | str | Decimal):
        raise ModelError(path, f"must be a number, was {type(v).__name__}")
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        raise ModelError(path, f"is not a number: {v!r}") from None
    if not d.is_finite() or d < 0:
        raise ModelError(path, f"must be a finite non-negative number, was {v!r}")
    return d


def _pct(v: Any, path: str) -> Decimal:
    d = _num(v, path)
    if d > _HUNDRED:
        raise ModelError(path, f"a percentage must be at most 100, was {v!r}")
    return d
