"""The crossing policy: whether a rebalance may cross opposite interest between the firm's own
accounts internally, at what price, how much, and which accounts never cross.

It lives in the rulebook (`crossing:`), so it is versioned, reloaded and stored with it. A
rulebook without the key has no policy (nothing crosses) and keeps the version it had
before crossing existed: the key enters the rulebook's canonical content only when present.

    crossing:
      enabled: true
      description: Cross opposite rebalance interest at the NBBO midpoint
      price_rule: midpoint            # or last
      max_price_age_seconds: 60       # an older quote refuses the cross
      max_share_of_order: "0.5"       # at most half of either block crosses
      excluded_accounts:
        when: "account.vehicle == 'SMA-ERISA'"   # CEL, as a `kind: cel` restriction's
        accounts: [SMA0042]                      # and/or by id
      live_window_seconds: 5          # live blocks wait this long for opposite interest

`excluded_accounts.when` is CEL over the same `account` fields a custom restriction reads
(`engine.custom_rules.ACCOUNT_FIELDS`) plus `order.side` and `order.symbol` (the side the
account would cross on), type-checked when the rulebook loads so that a typo is refused
with its path instead of silently keeping every account out (an expression that fails at
run time excludes the account: fail closed). Commission on crossed shares is always zero;
it is not a setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.cel_check import validated
from engine.cel_types import T
from engine.custom_rules import ACCOUNT_FIELDS, ORDER_FIELDS
from engine.errors import RulebookError

PRICE_RULES = ("last", "midpoint")
# What an exclusion expression may read: the account, and the side it would cross on.
SCHEMA: Mapping[str, Mapping[str, T]] = {"account": ACCOUNT_FIELDS, "order": ORDER_FIELDS}

_KEYS = ("enabled", "description", "price_rule", "max_price_age_seconds",
         "max_share_of_order", "excluded_accounts", "live_window_seconds")
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class CrossingPolicy:
    enabled: bool
    price_rule: str                     # one of PRICE_RULES
    max_price_age_seconds: int
    max_share_of_order: Decimal = _ONE  # in (0, 1]
    exclude_when: str | None = None     # CEL over SCHEMA; true keeps the account out
    exclude_accounts: frozenset[str] = frozenset()
    description: str = ""
    live_window_seconds: int = 0
    """How long a live block (an OMS's or the desk's) waits for opposite interest before
    it is routed whole; 0: live blocks are never crossed (gateway/crossing_live.py)."""

    def to_json(self) -> dict[str, Any]:
        """The canonical form (also valid input to `parse`: it round-trips)."""
        # The live window enters the canonical form only when set, so a policy written
        # before live crossing existed keeps the version it had.
        live = {"live_window_seconds": self.live_window_seconds} \
            if self.live_window_seconds else {}
        return {**live,
            "enabled": self.enabled, "description": self.description,
            "price_rule": self.price_rule,
            "max_price_age_seconds": self.max_price_age_seconds,
            "max_share_of_order": self.max_share_of_order,
            "excluded_accounts": {"when": self.exclude_when,
                                  "accounts": sorted(self.exclude_accounts)},
        }


def parse(raw: Any) -> CrossingPolicy | None:
    """Validate the rulebook's `crossing` mapping (None: no policy); RulebookError names the
    path, e.g. ``crossing.price_rule``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RulebookError("crossing", "must be a mapping")
    for key in raw:
        if key not in _KEYS:
            raise RulebookError(f"crossing.{key}",
                                f"unknown key {key!r}; expected one of {sorted(_KEYS)}")
    enabled = raw.get("enabled")
    if not isinstance(enabled, bool):
        raise RulebookError("crossing.enabled", "is required: true or false")
    rule = raw.get("price_rule")
    if rule is None:
        raise RulebookError("crossing.price_rule", "is required: last or midpoint")
    if rule not in PRICE_RULES:
        raise RulebookError("crossing.price_rule", f"must be last or midpoint, was {rule!r}")
    age = raw.get("max_price_age_seconds")
    if age is None:
        raise RulebookError("crossing.max_price_age_seconds", "is required")
    if not isinstance(age, int) or isinstance(age, bool) or age < 1:
        raise RulebookError("crossing.max_price_age_seconds",
                            f"must be a whole number of seconds, at least 1, was {age!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise RulebookError("crossing.description", "must be a string")
    when, ids = _exclusions(raw.get("excluded_accounts"))
    window = raw.get("live_window_seconds", 0)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window <= 3600:
        raise RulebookError("crossing.live_window_seconds",
                            f"must be a whole number of seconds from 0 to 3600, was {window!r}")
    return CrossingPolicy(
        enabled=enabled, price_rule=str(rule), max_price_age_seconds=age,
        max_share_of_order=_share(raw.get("max_share_of_order", 1)),
        exclude_when=when, exclude_accounts=ids, description=description.strip(),
        live_window_seconds=window)


def _share(v: Any) -> Decimal:
    path = "crossing.max_share_of_order"
    if isinstance(v, bool | float):
        # YAML floats are binary; as elsewhere in the rulebook, insist on an exact value.
        raise RulebookError(path, f"must be an integer or a quoted decimal, was {v!r}")
    if not isinstance(v, int | str | Decimal):
        raise RulebookError(path, f"must be a number, was {type(v).__name__}")
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        raise RulebookError(path, f"is not a number: {v!r}") from None
    if not d.is_finite() or d <= 0 or d > 1:
        raise RulebookError(path, f"must be greater than 0 and at most 1, was {v!r}")
    # "0.50" and "0.5" say the same thing: the same canonical content, the same version.
    return d.normalize()


def _exclusions(raw: Any) -> tuple[str | None, frozenset[str]]:
    path = "crossing.excluded_accounts"
    if raw is None:
        return None, frozenset()
    if not isinstance(raw, Mapping):
        raise RulebookError(path, "must be a mapping with `when` and/or `accounts`")
    for key in raw:
        if key not in ("when", "accounts"):
            raise RulebookError(f"{path}.{key}", "unknown key; expected when, accounts")
    when = raw.get("when")
    if when is not None:
        if not isinstance(when, str) or not when.strip():
            raise RulebookError(f"{path}.when", "must be a non-empty CEL expression")
        when = when.strip()
        validated(when, SCHEMA, f"{path}.when")
    ids = raw.get("accounts") or []
    if isinstance(ids, str) or not isinstance(ids, list | tuple):
        raise RulebookError(f"{path}.accounts", "must be a list of account ids")
    out = set()
    for i, item in enumerate(ids):
        # An all-digit id reads as a YAML integer; the rulebook's scopes accept that too.
        if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
            raise RulebookError(f"{path}.accounts[{i}]", "must be a non-empty account id")
        out.add(str(item).strip())
    return when, frozenset(out)
