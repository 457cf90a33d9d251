"""Custom rules (`kind: cel`): the variables they see, their type check, their evaluation.

`SCHEMA` declares every variable and field a rule may read, with its CEL type; the three
binding functions below build exactly those fields (a test holds them to it key for key).
`engine.rulebook` type-checks every expression against `SCHEMA` when a rulebook loads, so a
rule that names an unknown field or mixes types is refused with its path, instead of
failing closed on every account in production.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cel

from engine.cel_check import Checked, check
from engine.cel_types import INT, STRING, T, list_of
from engine.errors import AllocationError
from engine.model import Account, Security, Side

if TYPE_CHECKING:
    from engine.rulebook import Rulebook

# CEL has no decimal type: money and quantities are whole units (truncated), so expressions
# compare integers and no binary float is involved.
ACCOUNT_FIELDS: Mapping[str, T] = {
    "account_id": STRING, "book": STRING, "status": STRING, "tier": INT, "strategy": STRING,
    "vehicle": STRING, "custodian": STRING, "prime_broker": STRING, "scheme": STRING,
    "nav": INT, "cash": INT, "position": INT,
}
SECURITY_FIELDS: Mapping[str, T] = {
    "symbol": STRING, "issuer": STRING, "ultimate_issuer": STRING, "sector": STRING,
    "country": STRING, "esg_tags": list_of(STRING), "lot_size": INT, "related_to": STRING,
}
ORDER_FIELDS: Mapping[str, T] = {"side": STRING, "symbol": STRING}
SCHEMA: Mapping[str, Mapping[str, T]] = {
    "account": ACCOUNT_FIELDS, "security": SECURITY_FIELDS, "order": ORDER_FIELDS,
}
# Account fields many accounts share: rules reading only these are evaluated once per
# distinct combination.
CATEGORICAL = frozenset({"tier", "strategy", "vehicle", "custodian", "prime_broker", "scheme",
                         "book", "status"})


def account_binding(a: Account, symbol: str) -> dict[str, Any]:
    return {
        "account_id": a.account_id, "book": a.book, "status": a.status,
        "tier": a.tier, "strategy": a.strategy, "vehicle": a.vehicle, "custodian": a.custodian,
        "prime_broker": a.prime_broker, "scheme": a.scheme,
        "nav": int(a.nav), "cash": int(a.cash), "position": int(a.position(symbol)),
    }


def security_binding(chain: Sequence[Security]) -> dict[str, Any]:
    """The traded security (`chain[0]`) seen through its look-through chain."""
    sec = chain[0]
    return {
        "symbol": sec.symbol,
        "issuer": sec.issuer,
        "ultimate_issuer": chain[-1].issuer,
        "sector": sec.sector,
        "country": sec.country,
        "esg_tags": sorted(set().union(*(s.esg_tags for s in chain))),
        "lot_size": sec.lot_size,
        "related_to": sec.related_to or "",
    }


def order_binding(side: Side, symbol: str) -> dict[str, Any]:
    return {"side": side.value, "symbol": symbol}


def categorical(a: Account) -> tuple[Any, ...]:
    """The account's categorical fields other than book and status (in every cache key)."""
    return (a.tier, a.strategy, a.vehicle, a.custodian, a.prime_broker, a.scheme)


def type_check(expr: str) -> Checked:
    """Check `expr` against SCHEMA (raises engine.cel_check.CelTypeError)."""
    return check(expr, SCHEMA)


def account_fields_read(checked: Checked) -> tuple[str, ...] | None:
    """The account fields a checked rule reads, or None if it uses the account as a whole."""
    if "account" in checked.whole:
        return None
    return tuple(sorted(checked.fields.get("account", ())))


# -- compiled rules, per process ------------------------------------------------------------

# CEL programs are not picklable; each process compiles once per rulebook version.
Compiled = tuple["Rulebook", dict[int, Any], dict[int, tuple[str, ...] | None]]
_COMPILED: dict[str, Compiled] = {}
_MAX_VERSIONS = 8


def install(rulebook: Rulebook) -> None:
    """Make `rulebook` available in this process, compiling its custom rules once."""
    if rulebook.version in _COMPILED:
        return
    programs: dict[int, Any] = {}
    keys: dict[int, tuple[str, ...] | None] = {}
    for i, r in enumerate(rulebook.restrictions):
        if r.kind == "cel" and r.expr:
            programs[i] = cel.compile(r.expr)
            # Results are memoised on the account fields the rule reads.
            keys[i] = account_fields_read(type_check(r.expr))
    while len(_COMPILED) >= _MAX_VERSIONS:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[rulebook.version] = (rulebook, programs, keys)


def compiled(version: str) -> Compiled:
    """The installed rulebook `version` with its compiled custom rules and memo keys."""
    entry = _COMPILED.get(version)
    if entry is None:
        raise AllocationError(f"rulebook {version[:12]} is not installed in this process")
    return entry


# -- evaluation ---------------------------------------------------------------------------

# Results by (rulebook version, trade facts, rule, account fields it reads): CEL is side-effect
# free, so a result can be reused across accounts and decisions.
_RESULTS: dict[tuple[Any, ...], bool | str] = {}
_RESULTS_MAX = 500_000


def trade_key(version: str, security: Mapping[str, Any], order: Mapping[str, Any]
              ) -> tuple[Any, ...]:
    """The trade facts a custom rule may read, as a hashable key for its cached results."""
    return (version, *sorted(
        (k, tuple(v) if isinstance(v, list) else v) for k, v in security.items()),
        *sorted(order.items()))


def reset_cache_if_full() -> None:
    if len(_RESULTS) > _RESULTS_MAX:
        _RESULTS.clear()


def hits(rules: Sequence[int], account: dict[str, Any], tkey: tuple[Any, ...],
         programs: Mapping[int, Any], memo_keys: Mapping[int, tuple[str, ...] | None],
         security: Mapping[str, Any], order: Mapping[str, Any]) -> list[int | str]:
    """The rules of `rules` that exclude the account: their index, or "CEL_ERROR:<index>:
    <message>" for one that could not be evaluated."""
    out: list[int | str] = []
    for i in rules:
        fields = memo_keys[i]
        key = ((tkey, i, *(account[f] for f in fields)) if fields is not None
               else (tkey, i, *account.values()))
        hit = _RESULTS.get(key)
        if hit is None:
            hit = _RESULTS[key] = _run(programs[i], account, security, order)
        if hit is not False:
            out.append(i if hit is True else f"CEL_ERROR:{i}:{hit}")
    return out


def _run(program: Any, account: dict[str, Any], security: Mapping[str, Any],
         order: Mapping[str, Any]) -> bool | str:
    try:
        result = program.execute(
            {"account": account, "security": dict(security), "order": dict(order)})
    except Exception as e:  # the runtime raises several types (overflow, division, ...)
        # Fail closed: a rule that cannot be evaluated excludes rather than silently passes.
        return (str(e).splitlines() or [type(e).__name__])[0][:200]
    if not isinstance(result, bool):
        return f"expression returned {type(result).__name__}, not a boolean"
    return result
