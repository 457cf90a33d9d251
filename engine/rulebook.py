"""The rulebook: allocation schemes and restrictions, validated and versioned by content.

A rulebook is built from a plain mapping (the gateway reads it from YAML). Validation
errors name the element by path, e.g. ``restrictions[3].max_pct_nav``. The version is the
sha256 of the canonical JSON of the normalised content, so two files that say the same
thing have the same version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import cel

from engine import approval_policies, canonical, crossing_policy, custom_rules
from engine.cel_types import CelTypeError
from engine.errors import RulebookError
from engine.model import Side

METHODS = ("pro_rata", "pari_passu", "target_weight", "tiered", "equal", "manual")
KINDS = ("exclude", "issuer_cap", "side", "min_allocation", "cel")
MATCH_KEYS = ("symbols", "issuers", "sectors", "countries", "esg_tags")
TIE_BREAKS = ("account_id", "rotation")
ODD_LOT_RULES = ("largest_shortfall",)
LOT_RELIEF = ("fifo", "lifo", "hifo", "min_tax")
_SIDES = {s.value: s for s in Side}


@dataclass(frozen=True, slots=True)
class Restriction:
    id: str
    version: str
    description: str
    kind: str
    books: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)
    look_through: bool = True
    forbid: frozenset[Side] = frozenset()
    max_pct_nav: Decimal | None = None
    min_qty: Decimal | None = None
    min_notional: Decimal | None = None
    expr: str | None = None

    @property
    def is_global(self) -> bool:
        return not self.books and not self.accounts


@dataclass(frozen=True, slots=True)
class Scheme:
    name: str
    method: str
    fallback: tuple[str, ...] = ()
    sub_method: str = "pro_rata"
    tie_break: str = "account_id"
    odd_lot: str = "largest_shortfall"
    lot_relief: str = "fifo"
    avoid_wash_sales: bool = True
    wash_sale_days: int = 30

    def params(self) -> dict[str, Any]:
        return {
            "scheme": self.name,
            "fallback": list(self.fallback),
            "sub_method": self.sub_method,
            "tie_break": self.tie_break,
            "odd_lot": self.odd_lot,
            "lot_relief": self.lot_relief,
            "avoid_wash_sales": self.avoid_wash_sales,
            "wash_sale_days": self.wash_sale_days,
        }


DEFAULT_SCHEME = Scheme(name="default", method="pro_rata", fallback=("pari_passu", "equal"))


@dataclass(frozen=True)
class Rulebook:
    source: str
    version: str
    content: Mapping[str, Any]
    restrictions: tuple[Restriction, ...]
    schemes: Mapping[str, Scheme]
    # Indices into `restrictions`, so per-account rule lookup is two dict gets.
    global_rules: tuple[int, ...] = ()
    book_rules: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    account_rules: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # Which decisions stop for a person (engine/approval_policies.py).
    approval_policies: tuple[approval_policies.ApprovalPolicy, ...] = ()
    # Internal crossing inside a rebalance (engine/crossing_policy.py); None: never crosses.
    crossing: crossing_policy.CrossingPolicy | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<memory>") -> Rulebook:
        """Validate `data` and build a rulebook; raise RulebookError naming the bad path."""
        if not isinstance(data, Mapping):
            raise RulebookError("", "rulebook must be a mapping")
        _no_unknown(data, ("name", "description", "schemes", "restrictions", "books",
                           "approval_policies", "crossing"), "")
        schemes = _schemes(data.get("schemes") or {})
        restrictions = tuple(
            _restriction(item, f"restrictions[{i}]")
            for i, item in enumerate(_seq(data.get("restrictions") or [], "restrictions"))
        )
        seen: dict[str, int] = {}
        for i, r in enumerate(restrictions):
            if r.id in seen:
                raise RulebookError(
                    f"restrictions[{i}].id",
                    f"duplicate restriction id {r.id!r} (first at restrictions[{seen[r.id]}])",
                )
            seen[r.id] = i
        books = data.get("books") or {}
        if not isinstance(books, Mapping):
            raise RulebookError("books", "must be a mapping of book name to settings")
        content = {
            "name": str(data.get("name", "")),
            "description": str(data.get("description", "")),
            "books": _books(books, schemes),
            "schemes": {n: s.params() | {"method": s.method} for n, s in sorted(schemes.items())},
            "restrictions": [_restriction_json(r) for r in restrictions],
        }
        policies = approval_policies.parse(data.get("approval_policies"))
        if policies:  # absent when empty: rulebooks without policies keep their versions
            content["approval_policies"] = [p.to_json() for p in policies]
        crossing = crossing_policy.parse(data.get("crossing"))
        if crossing is not None:  # likewise: rulebooks without `crossing:` keep their versions
            content["crossing"] = crossing.to_json()
        version = canonical.sha256_hex(canonical.dumps(content))
        glob: list[int] = []
        by_book: dict[str, list[int]] = {}
        by_acct: dict[str, list[int]] = {}
        for i, r in enumerate(restrictions):
            if r.is_global:
                glob.append(i)
            for b in sorted(r.books):
                by_book.setdefault(b, []).append(i)
            for a in sorted(r.accounts):
                by_acct.setdefault(a, []).append(i)
        return cls(
            source=source,
            version=version,
            content=content,
            restrictions=restrictions,
            schemes=schemes,
            global_rules=tuple(glob),
            book_rules={k: tuple(v) for k, v in by_book.items()},
            account_rules={k: tuple(v) for k, v in by_acct.items()},
            approval_policies=policies,
            crossing=crossing,
        )

    def scheme(self, name: str) -> Scheme:
        return self.schemes.get(name) or self.schemes.get("default") or DEFAULT_SCHEME

    def rules_for(self, account_id: str, book: str) -> tuple[int, ...]:
        # Book and account scopes may overlap; a rule listed twice must not fire twice.
        extra = self.book_rules.get(book, ()) + self.account_rules.get(account_id, ())
        if not extra:
            return self.global_rules
        return self.global_rules + tuple(dict.fromkeys(extra))

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for r in self.restrictions:
            out[r.kind] += 1
        return out

    def canonical_json(self) -> str:
        return canonical.dumps(self.content)


def _no_unknown(m: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    for key in m:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise RulebookError(where, f"unknown key {key!r}; expected one of {sorted(allowed)}")


def _seq(v: Any, path: str) -> Sequence[Any]:
    if not isinstance(v, list | tuple):
        raise RulebookError(path, "must be a list")
    return v


def _str(m: Mapping[str, Any], key: str, path: str, *, default: str | None = None) -> str:
    v = m.get(key, default)
    if v is None:
        raise RulebookError(f"{path}.{key}", "is required")
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise RulebookError(f"{path}.{key}", f"must be a string, was {type(v).__name__}")
    s = str(v).strip()
    if not s:
        raise RulebookError(f"{path}.{key}", "must not be empty")
    return s


def _choice(m: Mapping[str, Any], key: str, path: str, options: Sequence[str], default: str) -> str:
    v = _str(m, key, path, default=default)
    if v not in options:
        raise RulebookError(f"{path}.{key}", f"must be one of {list(options)}, was {v!r}")
    return v


def _decimal(m: Mapping[str, Any], key: str, path: str) -> Decimal | None:
    v = m.get(key)
    if v is None:
        return None
    if isinstance(v, bool | float):
        # YAML floats are binary; insist on a quoted or integer value to stay exact.
        raise RulebookError(f"{path}.{key}", f"must be an integer or a quoted decimal, was {v!r}")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise RulebookError(f"{path}.{key}", f"is not a number: {v!r}") from None
    if not d.is_finite() or d < 0:
        raise RulebookError(f"{path}.{key}", f"must be a finite non-negative number, was {v!r}")
    return d


def _names(v: Any, path: str) -> frozenset[str]:
    if v is None:
        return frozenset()
    items = [v] if isinstance(v, str) else _seq(v, path)
    out = set()
    for i, item in enumerate(items):
        if not isinstance(item, str | int) or isinstance(item, bool) or not str(item).strip():
            raise RulebookError(f"{path}[{i}]", "must be a non-empty string")
        out.add(str(item).strip())
    return frozenset(out)


def _schemes(raw: Any) -> dict[str, Scheme]:
    if not isinstance(raw, Mapping):
        raise RulebookError("schemes", "must be a mapping of scheme name to settings")
    out: dict[str, Scheme] = {}
    for name, s in raw.items():
        path = f"schemes.{name}"
        if not isinstance(s, Mapping):
            raise RulebookError(path, "must be a mapping")
        _no_unknown(
            s,
            ("method", "fallback", "sub_method", "tie_break", "odd_lot", "lot_relief",
             "avoid_wash_sales", "wash_sale_days", "description"),
            path,
        )
        method = _choice(s, "method", path, METHODS, "pro_rata")
        fallback = []
        for i, f in enumerate(_seq(s.get("fallback") or [], f"{path}.fallback")):
            if f not in METHODS:
                raise RulebookError(f"{path}.fallback[{i}]", f"unknown method {f!r}")
            fallback.append(str(f))
        sub = _choice(s, "sub_method", path, [m for m in METHODS if m != "tiered"], "pro_rata")
        days = s.get("wash_sale_days", 30)
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            raise RulebookError(f"{path}.wash_sale_days", "must be a non-negative integer")
        avoid = s.get("avoid_wash_sales", True)
        if not isinstance(avoid, bool):
            raise RulebookError(f"{path}.avoid_wash_sales", "must be true or false")
        out[str(name)] = Scheme(
            name=str(name),
            method=method,
            fallback=tuple(fallback),
            sub_method=sub,
            tie_break=_choice(s, "tie_break", path, TIE_BREAKS, "account_id"),
            odd_lot=_choice(s, "odd_lot", path, ODD_LOT_RULES, "largest_shortfall"),
            lot_relief=_choice(s, "lot_relief", path, LOT_RELIEF, "fifo"),
            avoid_wash_sales=avoid,
            wash_sale_days=days,
        )
    return out


def _books(raw: Mapping[str, Any], schemes: Mapping[str, Scheme]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, b in raw.items():
        path = f"books.{name}"
        if not isinstance(b, Mapping):
            raise RulebookError(path, "must be a mapping")
        _no_unknown(b, ("description", "scheme"), path)
        scheme = b.get("scheme")
        if scheme is not None and scheme not in schemes:
            raise RulebookError(f"{path}.scheme", f"unknown scheme {scheme!r}")
        out[str(name)] = {"description": str(b.get("description", "")), "scheme": scheme}
    return out


_RESTRICTION_KEYS = (
    "id", "version", "description", "kind", "scope", "match", "look_through", "forbid",
    "max_pct_nav", "min_qty", "min_notional", "exclude_when",
)


def _restriction(item: Any, path: str) -> Restriction:
    if not isinstance(item, Mapping):
        raise RulebookError(path, "must be a mapping")
    _no_unknown(item, _RESTRICTION_KEYS, path)
    rid = _str(item, "id", path)
    version = _str(item, "version", path)
    description = _str(item, "description", path)
    kind = _choice(item, "kind", path, KINDS, "")
    scope = item.get("scope") or {}
    if not isinstance(scope, Mapping):
        raise RulebookError(f"{path}.scope", "must be a mapping with books and/or accounts")
    _no_unknown(scope, ("books", "accounts"), f"{path}.scope")
    match_raw = item.get("match") or {}
    if not isinstance(match_raw, Mapping):
        raise RulebookError(f"{path}.match", "must be a mapping")
    _no_unknown(match_raw, MATCH_KEYS, f"{path}.match")
    match = {k: _names(match_raw.get(k), f"{path}.match.{k}") for k in MATCH_KEYS}
    match = {k: v for k, v in match.items() if v}
    forbid = set()
    for i, s in enumerate(_names(item.get("forbid"), f"{path}.forbid")):
        if s not in _SIDES:
            raise RulebookError(f"{path}.forbid[{i}]", f"must be one of {sorted(_SIDES)}")
        forbid.add(_SIDES[s])
    look = item.get("look_through", True)
    if not isinstance(look, bool):
        raise RulebookError(f"{path}.look_through", "must be true or false")
    r = Restriction(
        id=rid, version=version, description=description, kind=kind,
        books=_names(scope.get("books"), f"{path}.scope.books"),
        accounts=_names(scope.get("accounts"), f"{path}.scope.accounts"),
        match=match, look_through=look, forbid=frozenset(forbid),
        max_pct_nav=_decimal(item, "max_pct_nav", path),
        min_qty=_decimal(item, "min_qty", path),
        min_notional=_decimal(item, "min_notional", path),
        expr=item.get("exclude_when"),
    )
    _check_kind(r, path)
    return r


def _check_kind(r: Restriction, path: str) -> None:
    if r.kind == "exclude" and not r.match:
        raise RulebookError(f"{path}.match", "an exclude restriction needs at least one match list")
    if r.kind == "issuer_cap":
        if r.max_pct_nav is None:
            raise RulebookError(f"{path}.max_pct_nav", "is required for an issuer_cap")
        if r.max_pct_nav > 100:
            raise RulebookError(f"{path}.max_pct_nav", "must be at most 100")
    if r.kind == "side" and not r.forbid:
        raise RulebookError(f"{path}.forbid", "a side restriction must forbid at least one side")
    if r.kind == "min_allocation" and r.min_qty is None and r.min_notional is None:
        raise RulebookError(f"{path}.min_qty", "min_allocation needs min_qty or min_notional")
    if r.kind == "cel":
        if not isinstance(r.expr, str) or not r.expr.strip():
            raise RulebookError(f"{path}.exclude_when", "a cel restriction needs an expression")
        try:
            cel.compile(r.expr)
        except (ValueError, RuntimeError, TypeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RulebookError(f"{path}.exclude_when", f"invalid expression: {first}") from None
        # Checked here, not when it runs: a rule that cannot be evaluated fails closed on
        # every account it applies to, so a typo would reject every block in production.
        try:
            custom_rules.type_check(r.expr)
        except CelTypeError as e:
            raise RulebookError(f"{path}.exclude_when", str(e)) from None
    elif r.expr is not None:
        raise RulebookError(f"{path}.exclude_when", "only a cel restriction takes an expression")


def _restriction_json(r: Restriction) -> dict[str, Any]:
    return {
        "id": r.id, "version": r.version, "description": r.description, "kind": r.kind,
        "scope": {"books": sorted(r.books), "accounts": sorted(r.accounts)},
        "match": {k: sorted(v) for k, v in sorted(r.match.items())},
        "look_through": r.look_through,
        "forbid": sorted(s.value for s in r.forbid),
        "max_pct_nav": r.max_pct_nav, "min_qty": r.min_qty, "min_notional": r.min_notional,
        "exclude_when": r.expr,
    }
