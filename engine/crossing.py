"""Internal crossing inside one rebalance: where the same security has a buy block and a sell
block (opposite interest between the firm's own accounts), the overlap is crossed between
the accounts at an independent market price, and only the net is routed.

Pure and deterministic: the caller passes the blocks, the policy, the accounts, the quotes
(plain data, `Quote`) and `now`; symbols, blocks and accounts are taken in sorted order, so
the result does not depend on the order they come in. Decimal and integer arithmetic only.

Per symbol with both a buy and a sell block (`cross_blocks`):

1. no policy, or a disabled one: refused (CROSSING_DISABLED);
2. the accounts of each side that may cross: not listed in `excluded_accounts.accounts`,
   not matched by its `when` expression (one that fails to evaluate excludes: fail closed),
   known in the account data, and not on both sides (an account never trades with itself);
   a side without one: refused (NO_ELIGIBLE_ACCOUNT);
3. the price: the quote's last trade or its bid/ask midpoint, as the policy says; refused
   without a quote (NO_PRICE), with one stamped after `now` (PRICE_IN_FUTURE), one older
   than `max_price_age_seconds` (STALE_PRICE, with its age), or a midpoint asked of a quote
   without bid and ask (NO_BID_ASK);
4. the quantity, in whole shares: the least of each side's eligible quantity (each
   account's trade rounded down to a whole share) and `max_share_of_order` × each block's
   quantity, rounded down; refused when that is 0 (NOTHING_TO_CROSS);
5. each side's crossed quantity is spread over its eligible accounts pro rata to their
   whole-share quantity, rounded down, the shares left over going one each to the largest
   remainders (ties by account id). Integer arithmetic: with X crossed of W eligible and
   w_i per account, floor(X·w_i/W) < X·w_i/W ≤ w_i whenever there is a remainder, so the
   extra share never takes an account past its own trade.

The net blocks are the input blocks with each account's pre-allocation less what it
crossed; an account left with nothing drops out, a block left with nothing disappears (the
smaller side of a cross, or both when they are equal and nothing limits the cross).

Why a cross cannot breach a restriction or cap: a rebalance's per-account trades were
produced under the account's restrictions (exclusions, side rules, issuer caps, the cash
buffer). An account crosses only on the side of its own trade, in the security of its own
trade, at most its own trade's quantity; what it crosses plus what is routed for it is
exactly that trade, so its position after both is the position the rebalance already
checked. Crossing changes who the counterparty is, not what the account ends up holding.
(The price differs from the reference price as any execution price does.) So no pre-trade
check is repeated here; the policy's exclusions are for accounts that must not cross at all
(e.g. plan accounts under ERISA), whatever the trade.

Crossed shares carry no commission (recorded as 0 with every cross).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any

import cel

from engine.crossing_policy import CrossingPolicy
from engine.custom_rules import account_binding
from engine.eligibility import DECIMAL_CONTEXT
from engine.model import Account
from engine.rebalance_blocks import Block

CROSS_COMMISSION = Decimal(0)
CSV_COLUMNS = ("cross_id", "symbol", "side", "account_id", "qty", "price", "price_rule",
               "price_source", "price_as_of")
# Quotes beyond these are data errors, not prices (and would overflow the arithmetic).
PRICE_LIMIT = Decimal("1e12")
PRICE_PLACES = 12
_ZERO = Decimal(0)
_TWO = Decimal(2)
_MICROS = Decimal(1_000_000)
_SIDES = ("buy", "sell")


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """An independent market price for one security, as of a moment, from a named source."""

    symbol: str
    last: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None
    as_of: dt.datetime
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol:
            raise ValueError("a quote needs a symbol")
        for name in ("last", "bid", "ask"):
            v = getattr(self, name)
            if v is None and name != "last":
                continue
            if not isinstance(v, Decimal) or not v.is_finite() or v <= 0:
                raise ValueError(f"{self.symbol}: {name} must be a positive Decimal, was {v!r}")
            if not price_in_range(v):
                raise ValueError(f"{self.symbol}: {name} must be below {PRICE_LIMIT:f} with "
                                 f"at most {PRICE_PLACES} decimal places, was {v}")
        if (self.bid is None) != (self.ask is None):
            raise ValueError(f"{self.symbol}: give both bid and ask, or neither")
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError(f"{self.symbol}: bid {self.bid} is above ask {self.ask}")
        if not isinstance(self.as_of, dt.datetime) or self.as_of.utcoffset() is None:
            raise ValueError(f"{self.symbol}: as_of must be a timezone-aware datetime")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"{self.symbol}: a quote needs a source")

    def to_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "last": self.last, "bid": self.bid, "ask": self.ask,
                "as_of": self.as_of.isoformat(), "source": self.source}


def price_in_range(v: Decimal) -> bool:
    exponent = v.as_tuple().exponent
    return v < PRICE_LIMIT and isinstance(exponent, int) and exponent >= -PRICE_PLACES


@dataclass(frozen=True, slots=True)
class Excluded:
    """An account of a block that may not cross, and why."""

    account_id: str
    side: str
    code: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "side": self.side, "code": self.code,
                "text": self.text}


@dataclass(frozen=True, slots=True)
class Cross:
    cross_id: str
    symbol: str
    qty: Decimal
    price: Decimal
    price_rule: str
    price_source: str
    price_as_of: dt.datetime
    price_age_seconds: Decimal
    buy_block_id: str
    sell_block_id: str
    # (account id, crossed qty > 0), in account-id order; each side sums to qty
    buys: tuple[tuple[str, Decimal], ...]
    sells: tuple[tuple[str, Decimal], ...]
    excluded: tuple[Excluded, ...]
    reason: str
    commission: Decimal = CROSS_COMMISSION

    def to_json(self) -> dict[str, Any]:
        return {
            "cross_id": self.cross_id, "symbol": self.symbol, "qty": self.qty,
            "price": self.price, "price_rule": self.price_rule,
            "price_source": self.price_source, "price_as_of": self.price_as_of.isoformat(),
            "price_age_seconds": self.price_age_seconds,
            "buy_block_id": self.buy_block_id, "sell_block_id": self.sell_block_id,
            "buys": [{"account_id": a, "qty": q} for a, q in self.buys],
            "sells": [{"account_id": a, "qty": q} for a, q in self.sells],
            "excluded": [e.to_json() for e in self.excluded],
            "commission": self.commission,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    cross_id: str
    symbol: str
    code: str
    text: str
    buy_block_id: str
    sell_block_id: str
    excluded: tuple[Excluded, ...] = ()
    price_age_seconds: Decimal | None = None  # set when the price was too old (or future)

    def to_json(self) -> dict[str, Any]:
        return {"cross_id": self.cross_id, "symbol": self.symbol, "code": self.code,
                "text": self.text, "buy_block_id": self.buy_block_id,
                "sell_block_id": self.sell_block_id,
                "excluded": [e.to_json() for e in self.excluded],
                "price_age_seconds": self.price_age_seconds}


@dataclass(frozen=True, slots=True)
class CrossingResult:
    inputs_hash: str
    as_of: dt.datetime
    policy: CrossingPolicy | None
    crosses: tuple[Cross, ...]        # in symbol order
    refusals: tuple[Refusal, ...]     # in symbol order
    net_blocks: tuple[Block, ...]     # what is routed, sorted by symbol then side
    crossed: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    """Block id -> account id -> qty crossed (only accounts that crossed)."""
    quotes: tuple[Quote, ...] = ()    # the quotes the crossable symbols were judged by

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs_hash": self.inputs_hash, "as_of": self.as_of.isoformat(),
            "policy": None if self.policy is None else self.policy.to_json(),
            "crosses": [c.to_json() for c in self.crosses],
            "refusals": [r.to_json() for r in self.refusals],
            "quotes": [q.to_json() for q in self.quotes],
            "crossed_qty": sum((c.qty for c in self.crosses), _ZERO),
            "net_blocks": [b.to_json() for b in self.net_blocks],
        }


def cross_id(inputs_hash: str, symbol: str) -> str:
    """Stable per rebalance and symbol: the same inputs give the same id on a re-run."""
    return f"XR-{inputs_hash[:12]}-{symbol}"


def crossable_symbols(blocks: Iterable[Block]) -> list[str]:
    """The symbols with both a buy and a sell block (the quotes a crossing run needs)."""
    sides: dict[str, set[str]] = {}
    for b in blocks:
        sides.setdefault(b.symbol, set()).add(b.side)
    return sorted(s for s, got in sides.items() if got.issuperset(_SIDES))


def cross_blocks(blocks: Sequence[Block], policy: CrossingPolicy | None,
                 accounts: Iterable[Account], quotes: Mapping[str, Quote], *,
                 now: dt.datetime, inputs_hash: str,
                 lot_sizes: Mapping[str, int] | None = None) -> CrossingResult:
    """Cross each symbol's buy block against its sell block (see the module docstring).

    `lot_sizes` (symbol -> shares per round lot, default 1): each account crosses whole
    lots only, so what is left of its trade to route stays in round lots too.

    Raises ValueError on inputs no rebalance produces: a naive `now`, two blocks of one
    symbol and side, a block whose pre-allocations repeat an account or do not sum to its
    quantity, two accounts with one id, a quote filed under another symbol."""
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    by_key: dict[tuple[str, str], Block] = {}
    for b in blocks:
        if (b.symbol, b.side) in by_key:
            raise ValueError(f"two blocks for {b.symbol} {b.side}")
        _check_block(b)
        by_key[(b.symbol, b.side)] = b
    by_id: dict[str, Account] = {}
    for a in accounts:
        if a.account_id in by_id:
            raise ValueError(f"duplicate account id {a.account_id!r}")
        by_id[a.account_id] = a
    crosses: list[Cross] = []
    refusals: list[Refusal] = []
    seen: list[Quote] = []
    crossed: dict[str, dict[str, Decimal]] = {}
    for symbol in crossable_symbols(by_key.values()):
        quote = quotes.get(symbol)
        if quote is not None and quote.symbol != symbol:
            raise ValueError(f"the quote for {symbol} is for {quote.symbol}")
        if quote is not None:
            seen.append(quote)
        buy, sell = by_key[(symbol, "buy")], by_key[(symbol, "sell")]
        # The engine's context, not the caller's thread's: the same digits everywhere.
        with localcontext(DECIMAL_CONTEXT):
            out = _cross_symbol(buy, sell, policy, by_id, quote, now,
                                cross_id(inputs_hash, symbol),
                                max(1, (lot_sizes or {}).get(symbol, 1)))
        if isinstance(out, Refusal):
            refusals.append(out)
            continue
        crosses.append(out)
        crossed[buy.block_id] = dict(out.buys)
        crossed[sell.block_id] = dict(out.sells)
    net = []
    for key in sorted(by_key):
        b = by_key[key]
        got = _net(b, crossed.get(b.block_id), crosses)
        if got is not None:
            net.append(got)
    return CrossingResult(inputs_hash, now, policy, tuple(crosses), tuple(refusals),
                          tuple(net), crossed, tuple(seen))


def _check_block(b: Block) -> None:
    ids = [a for a, _q in b.preallocations]
    if len(set(ids)) != len(ids):
        raise ValueError(f"block {b.block_id} lists an account twice")
    if sum((q for _a, q in b.preallocations), _ZERO) != b.qty:
        raise ValueError(f"block {b.block_id}: pre-allocations do not sum to {b.qty}")


def _cross_symbol(buy: Block, sell: Block, policy: CrossingPolicy | None,
                  accounts: Mapping[str, Account], quote: Quote | None, now: dt.datetime,
                  xid: str, lot: int = 1) -> Cross | Refusal:
    symbol = buy.symbol

    def refuse(code: str, text: str, excluded: tuple[Excluded, ...] = (),
               age: Decimal | None = None) -> Refusal:
        return Refusal(xid, symbol, code, f"{symbol}: {text}; the whole of both blocks is "
                       "routed.", buy.block_id, sell.block_id, excluded, age)

    if policy is None or not policy.enabled:
        why = "the rulebook has no crossing policy" if policy is None \
            else "crossing is disabled in the rulebook (crossing.enabled: false)"
        return refuse("CROSSING_DISABLED", why)
    both = {a for a, _q in buy.preallocations} & {a for a, _q in sell.preallocations}
    eligible: dict[str, list[tuple[str, Decimal]]] = {}
    excluded: list[Excluded] = []
    for side, block in (("buy", buy), ("sell", sell)):
        eligible[side] = []
        for aid, qty in sorted(block.preallocations):
            out = _exclusion(policy, accounts.get(aid), aid, side, symbol, both)
            if out is None:
                eligible[side].append((aid, qty))
            else:
                excluded.append(Excluded(aid, side, *out))
    ex = tuple(excluded)
    for side in _SIDES:
        if not eligible[side]:
            n = sum(1 for e in ex if e.side == side)
            return refuse("NO_ELIGIBLE_ACCOUNT", f"no account on the {side} side may cross "
                          f"({n} excluded by the crossing policy)", ex)
    if quote is None:
        return refuse("NO_PRICE", "no reference price to cross at", ex)
    age = _seconds(now - quote.as_of)
    if age < 0:
        return refuse("PRICE_IN_FUTURE", f"the {quote.source} price is stamped "
                      f"{quote.as_of.isoformat()}, {-age}s after now ({now.isoformat()})",
                      ex, age)
    if age > policy.max_price_age_seconds:
        return refuse("STALE_PRICE", f"the {quote.source} price as of "
                      f"{quote.as_of.isoformat()} is {age}s old, more than the "
                      f"{policy.max_price_age_seconds}s the policy allows", ex, age)
    if policy.price_rule == "midpoint":
        if quote.bid is None or quote.ask is None:
            return refuse("NO_BID_ASK", f"the policy crosses at the midpoint but the "
                          f"{quote.source} quote has no bid and ask", ex, age)
        price = (quote.bid + quote.ask) / _TWO  # exact: a half needs one more digit
        how = f"the midpoint of bid {quote.bid} and ask {quote.ask}"
    else:
        price = quote.last
        how = "the last trade price"
    # Counted in round lots: an account crosses whole lots of its trade, never an odd
    # remainder that would leave an odd lot to route.
    buy_w = [(a, _whole(q) // lot) for a, q in eligible["buy"]]
    sell_w = [(a, _whole(q) // lot) for a, q in eligible["sell"]]
    limits = {
        "the buy side's eligible quantity": sum(w for _a, w in buy_w),
        "the sell side's eligible quantity": sum(w for _a, w in sell_w),
    }
    share = policy.max_share_of_order
    if share < 1:  # a whole block never binds: the eligible quantity is at most the block
        limits[f"{share} of the buy block"] = _whole(share * buy.qty) // lot
        limits[f"{share} of the sell block"] = _whole(share * sell.qty) // lot
    lots = min(limits.values())
    bound = [k for k, v in limits.items() if v == lots]
    if lots == 0:
        return refuse("NOTHING_TO_CROSS", f"nothing to cross in "
                      f"{'whole shares' if lot == 1 else f'round lots of {lot}'} (limited by "
                      f"{' and '.join(bound)})", ex, age)
    size = lots * lot
    unit = "shares" if lot == 1 else f"lots of {lot}"
    buys = tuple((a, q * lot) for a, q in _pro_rata(lots, [x for x in buy_w if x[1] > 0]))
    sells = tuple((a, q * lot) for a, q in _pro_rata(lots, [x for x in sell_w if x[1] > 0]))
    reason = (f"Crossed {size} {symbol} internally between {len(buys)} buying and "
              f"{len(sells)} selling accounts at {price}, {how} from {quote.source} as of "
              f"{quote.as_of.isoformat()} ({age}s old, at most "
              f"{policy.max_price_age_seconds}s allowed); limited by {' and '.join(bound)} "
              f"(buy block {buy.qty}, sell block {sell.qty}); each side spread pro rata to "
              f"the accounts' trades, largest remainder in {unit}; no commission on "
              "crossed shares; the rest is routed.")
    return Cross(xid, symbol, Decimal(size), price, policy.price_rule, quote.source,
                 quote.as_of, age, buy.block_id, sell.block_id, buys, sells, ex, reason)


_PROGRAMS: dict[str, Any] = {}


def _exclusion(policy: CrossingPolicy, account: Account | None, aid: str, side: str,
               symbol: str, both: set[str]) -> tuple[str, str] | None:
    """(code, text) if the account may not cross on this side, else None."""
    if aid in both:
        return ("CROSS_SAME_ACCOUNT", f"{aid} is on both the buy and the sell block of "
                f"{symbol}; an account never crosses with itself")
    if aid in policy.exclude_accounts:
        return ("CROSS_EXCLUDED_ACCOUNT", f"{aid} is listed in the crossing policy's "
                "excluded_accounts.accounts")
    if account is None:
        return ("CROSS_ACCOUNT_UNKNOWN", f"{aid} is not in the account data, so the "
                "crossing policy's exclusions cannot be checked (fail closed)")
    if policy.exclude_when is None:
        return None
    program = _PROGRAMS.get(policy.exclude_when)
    if program is None:
        program = _PROGRAMS[policy.exclude_when] = cel.compile(policy.exclude_when)
    try:
        hit = program.execute({"account": account_binding(account, symbol),
                               "order": {"side": side, "symbol": symbol}})
    except Exception as e:  # the runtime raises several types (overflow, division, ...)
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        return ("CROSS_RULE_ERROR", f"the crossing policy's excluded_accounts.when could not "
                f"be evaluated for {aid} ({first}); it does not cross (fail closed)")
    if hit is True:
        return ("CROSS_EXCLUDED_RULE", f"{aid} matches the crossing policy's "
                f"excluded_accounts.when: {policy.exclude_when}")
    if hit is not False:
        return ("CROSS_RULE_ERROR", f"the crossing policy's excluded_accounts.when returned "
                f"{type(hit).__name__} for {aid}, not a boolean; it does not cross (fail "
                "closed)")
    return None


def _whole(q: Decimal) -> int:
    return int(q.to_integral_value(rounding=ROUND_FLOOR))


def _seconds(d: dt.timedelta) -> Decimal:
    # timedelta.total_seconds() is a float; this is exact (and "12", not "12.000000").
    micros = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    return Decimal(micros) / _MICROS


def _pro_rata(total: int, weights: Sequence[tuple[str, int]]) -> tuple[tuple[str, Decimal], ...]:
    """`total` (at most the sum of `weights`) over the accounts, largest remainder, accounts
    with nothing left out; in account-id order."""
    whole = sum(w for _a, w in weights)
    share = {a: total * w // whole for a, w in weights}
    rem = {a: total * w % whole for a, w in weights}
    left = total - sum(share.values())
    for a, _w in sorted(weights, key=lambda aw: (-rem[aw[0]], aw[0]))[:left]:
        share[a] += 1
    return tuple((a, Decimal(share[a])) for a, _w in sorted(weights) if share[a] > 0)


def _net(b: Block, crossed: Mapping[str, Decimal] | None, crosses: Sequence[Cross]
         ) -> Block | None:
    """The block less what its accounts crossed; None when nothing is left to route."""
    if not crossed:
        # Account-id order (as `blocks()` makes them), whatever order they came in.
        pre = tuple(sorted(b.preallocations))
        return b if pre == b.preallocations else replace(b, preallocations=pre)
    total = sum(crossed.values(), _ZERO)
    pre = tuple((a, q - crossed.get(a, _ZERO)) for a, q in sorted(b.preallocations))
    pre = tuple((a, q) for a, q in pre if q > 0)
    if not pre:
        return None
    xid = next(c.cross_id for c in crosses if b.block_id in (c.buy_block_id, c.sell_block_id))
    reason = (f"{b.preallocation_reason} Net of {total} crossed internally in {xid}: each "
              "account's quantity is its trade less what it crossed.")
    return Block(b.block_id, b.symbol, b.side, b.qty - total, pre, reason)


def crosses_csv(result: CrossingResult) -> str:
    """crosses.csv: one row per account and side of each cross (symbol, side, account order)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in result.crosses:
        for side, legs in (("buy", c.buys), ("sell", c.sells)):
            for account_id, qty in legs:
                w.writerow((c.cross_id, c.symbol, side, account_id, format(qty, "f"),
                            format(c.price, "f"), c.price_rule, c.price_source,
                            c.price_as_of.isoformat()))
    return buf.getvalue()
