"""Fairness over time (CFTC 1.35(b)(5)): is any account or group consistently favoured?

Reads the record, never changes it. Per block only the allocation in force counts: the
New/Replace J's (71=0/1) that are not dead (rejected, replaced, cancelled, a refused
Replace) nor named in RefAllocID by a later live Replace; of several, the latest J. So a
Replaced allocation's lines are never counted beside its Replace's.

Intended. The participants P of a block are the accounts the method split it over:
result `allocated`, or `dropped` for ROUNDED_TO_ZERO (due a fraction, got nothing);
capped, excluded and below-minimum accounts are out (a named rule set their quantity).
With Q the quantity the decision gave P and w the method's weight from the reference
data version stored with the decision (pro_rata intended_qty, pari_passu NAV, equal 1,
manual the OMS's pre-allocation), an account's intended quantity is its exact unrounded
share E = Q*w/sum(w), i.e. its water-filled share before lot rounding. Fill rate =
received (its lines in the allocation in force) / E. Tiered and target_weight blocks are
counted but not assessed: their exact shares need figures the decision does not keep.

Residuals. With lot L, F = L*floor(E/L) and the fractional entitlement e = E - F; the
block's residual R = sum(e) = k*L + o goes out as k extra lots (largest remainder, ties
by rotation) and o odd shares. The fair mechanism judged against gives an account an
extra lot with probability p = k*e/R and the odd lot with q = e/R: they sum to what was
handed out and the expected receipt is exactly E (a fair rotation approaches this).

Tests, per account and per group over the assessed blocks: (1) extra lots received
against the Poisson-binomial of the per-block p's, exact two-sided (binomtest when all p
are equal; normal approximation above 2,000 blocks); (2) Z = sum(received/E - 1) /
sqrt(sum(var/E^2)) with var = L^2 p(1-p) + o^2 q(1-q), two-sided normal. All p-values of
the accounts (and, separately, of the groups) form one family, corrected by Holm
(default) or Benjamini-Hochberg; flagged when an adjusted p-value is below alpha (0.01).
A price other than the block average is flagged outright (bps, positive = better for
the account). Group tests treat members as independent, which overstates the variance
(the residual is a fixed total) and so errs towards not flagging.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import select

from gateway.audit.fairness_chart import DateSpread, date_spread
from gateway.audit.fairness_stats import (
    Figures,
    Receipt,
    _figures,
    _judge,
    _units,
)
from gateway.persistence import tables as t
from gateway.persistence.store import Database

GROUPINGS = ("account", "tier", "scheme", "custodian")
CORRECTIONS = ("holm", "bh")
DEFAULT_ALPHA = 0.01
METHOD_TEXT = (
    "Intended = the exact unrounded share Q*w/sum(w) over the accounts the method split "
    "the block over (capped/excluded accounts left out); fill rate = received/intended. "
    "Tests per account and per group: extra lots received vs the Poisson-binomial of "
    "fair probabilities k*e/R (e = fractional entitlement, R = total residual, k = extra "
    "lots handed out; exact binomial when all equal), and a two-sided Z test of per-block "
    "fill-rate deviations against their variance under that fair rounding; p-values "
    "corrected by {correction} across the family; flagged when adjusted p < {alpha}. "
    "A price other than the block average is flagged outright.")
# J states after which an allocation is over (gateway/posttrade/lifecycle.DEAD), plus a
# Replace/Cancel the broker refused (the original stays in force).
_DEAD = frozenset({"block_rejected", "session_rejected", "replaced", "cancelled",
                   "replace_refused"})
_WEIGHT_COLUMN = {"pro_rata": "intended_qty", "pari_passu": "nav"}


@dataclass
class History:
    start: date
    end: date
    receipts: list[Receipt] = field(default_factory=list)
    blocks: int = 0
    not_assessed: dict[str, str] = field(default_factory=dict)  # block -> why


@dataclass(frozen=True)
class FairnessReport:
    start: str
    end: str
    by: str
    alpha: float
    correction: str
    blocks: int
    blocks_assessed: int
    not_assessed: dict[str, str]
    accounts: list[Figures]
    groups: list[Figures]
    spread: list[DateSpread]

    @property
    def method(self) -> str:
        return METHOD_TEXT.format(correction="Holm" if self.correction == "holm"
                                  else "Benjamini-Hochberg", alpha=self.alpha)

    def flagged(self) -> list[Figures]:
        return [f for f in self.accounts + self.groups if f.flagged]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["method"] = self.method
        out["flagged"] = [f.key for f in self.flagged()]
        return out


# ---- reading the record -----------------------------------------------------------------

def in_force(allocations: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Order id -> its allocation in force (see the module docstring), for orders with one."""
    by_order: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for a in allocations:
        by_order[a["order_id"]].append(a)
    out: dict[str, Mapping[str, Any]] = {}
    for order_id, rows in by_order.items():
        live = [a for a in rows if a["alloc_trans_type"] in ("0", "1")
                and a["status"] not in _DEAD]
        gone = {a["ref_alloc_id"] for a in live if a["alloc_trans_type"] == "1"}
        live = [a for a in live if a["alloc_id"] not in gone]
        if live:
            out[order_id] = max(live, key=lambda a: (_j_number(a["alloc_id"]), a["alloc_id"]))
    return out


def _j_number(alloc_id: str) -> int:
    tail = alloc_id.rsplit("-J", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _accounts_csv(db: Database, version: str | None, cache: dict[str, dict[str, dict[str, str]]]
                  ) -> dict[str, dict[str, str]]:
    """Account id -> its row in the accounts file of a stored reference-data version."""
    if not version:
        return {}
    if version not in cache:
        with db.engine.connect() as conn:
            text = conn.execute(select(t.refdata_versions.c.content_json).where(
                t.refdata_versions.c.version == version).order_by(
                t.refdata_versions.c.id.desc()).limit(1)).scalar()
        rows: dict[str, dict[str, str]] = {}
        # Stored names are the paths the gateway loaded; the accounts file is the one
        # whose header starts with account_id,book.
        for stored in (json.loads(text).values() if text else ()):
            body = stored.lstrip("\ufeff")
            if body.split("\n", 1)[0].replace(" ", "").startswith("account_id,book"):
                rows = {r["account_id"]: r for r in csv.DictReader(io.StringIO(body))}
        cache[version] = rows
    return cache[version]


def _weights(method: str, ids: Sequence[str], accounts: Mapping[str, Mapping[str, str]],
             order: Mapping[str, Any]) -> dict[str, Decimal] | str:
    """The method's weight per participant, or why the exact shares cannot be rebuilt."""
    if method == "equal":
        return dict.fromkeys(ids, Decimal(1))
    if method == "manual":
        pre = json.loads(order["preallocations_json"] or "null")
        if not pre:
            return "manual split without a stored pre-allocation"
        lines = {a: Decimal(str(q)) for a, q in pre["lines"]}
        return {a: lines.get(a, Decimal(0)) for a in ids}
    column = _WEIGHT_COLUMN.get(method)
    if column is None:
        return f"method {method}: exact shares depend on figures the decision does not keep"
    out: dict[str, Decimal] = {}
    for a in ids:
        value = (accounts.get(a) or {}).get(column) or ""
        if not value.strip():
            return f"no {column} for {a} in the stored reference data"
        out[a] = Decimal(value)
    return out


def _participant(result: Mapping[str, Any]) -> bool:
    if result["status"] == "allocated":
        return True
    return result["status"] == "dropped" and any(
        r.get("code") == "ROUNDED_TO_ZERO" for r in result.get("reasons", ()))


def load_history(db: Database, start: date, end: date) -> History:
    """Every account's receipts in the blocks traded from `start` to `end` (inclusive)."""
    a, o = t.allocations, t.orders
    query = (select(a.c.alloc_id, a.c.order_id, a.c.decision_id, a.c.alloc_trans_type,
                    a.c.status, a.c.ref_alloc_id, a.c.avg_px, o.c.trade_date, o.c.side,
                    o.c.preallocations_json, t.decisions.c.refdata_version)
             .join(o, o.c.order_id == a.c.order_id)
             .join(t.decisions, t.decisions.c.decision_id == a.c.decision_id)
             .where(o.c.trade_date >= start.isoformat(), o.c.trade_date <= end.isoformat()))
    with db.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    history = History(start, end)
    refdata: dict[str, dict[str, dict[str, str]]] = {}
    for order_id, alloc in sorted(in_force(rows).items()):
        history.blocks += 1
        stored = db.load_decision(alloc["decision_id"])
        decision = json.loads(stored["canonical_json"]) if stored else None
        if decision is None:
            history.not_assessed[order_id] = "decision not stored"
            continue
        accounts = _accounts_csv(db, alloc["refdata_version"], refdata)
        history.receipts.extend(_block(db, order_id, alloc, decision, accounts, history))
    return history


def _block(db: Database, order_id: str, alloc: Mapping[str, Any], decision: Mapping[str, Any],
           accounts: Mapping[str, Mapping[str, str]], history: History) -> list[Receipt]:
    lines: dict[str, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    custodian: dict[str, str] = {}
    for ln in db.load_allocation_lines(alloc["alloc_id"]):
        lines[ln["account_id"]].append((Decimal(ln["qty"]), Decimal(ln["avg_px"])))
        custodian[ln["account_id"]] = ln.get("custodian") or ""
    block_px = Decimal(alloc["avg_px"])
    sign = -1 if alloc["side"] == "buy" else 1  # a buyer gains from a lower price
    lot = int(decision.get("lot_size") or 1)
    results = {r["account_id"]: r for r in decision["results"]}
    part = sorted(a for a, r in results.items() if _participant(r))
    method = decision["method_params"].get("method") or decision["method"]
    weights = _weights(method, part, accounts, alloc) if part else "no participants"
    odd_account = decision["method_params"].get("odd_lot_account")
    exact: dict[str, tuple[Decimal, Decimal, float, float, float]] = {}
    if isinstance(weights, str):
        history.not_assessed[order_id] = weights
    else:
        exact = _exact(part, weights, results, lot)
    out = []
    for account_id in sorted(set(lines) | set(part)):
        got = lines.get(account_id, [])
        qty = sum((q for q, _ in got), Decimal(0))
        bps = None
        if qty and block_px:
            px = sum((q * p for q, p in got), Decimal(0)) / qty
            bps = (sign * (px - block_px) / block_px * 10000).quantize(Decimal("0.0001"))
        ref = accounts.get(account_id) or {}
        groups = {"tier": ref.get("tier") or "1", "scheme": ref.get("scheme") or "default",
                  "custodian": custodian.get(account_id) or ref.get("custodian") or ""}
        note = (results.get(account_id) or {}).get("rounding", "")
        e = exact.get(account_id)
        out.append(Receipt(
            block=order_id, trade_date=alloc["trade_date"], account_id=account_id,
            groups=groups, received=qty, intended=e[0] if e else None, lot=lot,
            extra_lot="+1 lot" in note, odd_lot=odd_account == account_id,
            entitlement=e[1] if e else Decimal(0), p_extra=e[2] if e else 0.0,
            p_odd=e[3] if e else 0.0, variance=e[4] if e else 0.0, price_bps=bps))
    return out


def _exact(part: Sequence[str], weights: Mapping[str, Decimal],
           results: Mapping[str, Mapping[str, Any]], lot: int
           ) -> dict[str, tuple[Decimal, Decimal, float, float, float]]:
    """Per participant: E, e, p (extra lot), q (odd lot) and the variance of its receipt."""
    total_w = sum(weights.values(), Decimal(0))
    if total_w <= 0:
        return {}
    with localcontext() as ctx:
        ctx.prec = 40  # exact enough that E sums back to Q for any realistic book
        q_total = sum((Decimal(results[a]["qty"]) for a in part), Decimal(0))
        shares = {a: q_total * weights[a] / total_w for a in part}
        ent = {a: e - (e // lot) * lot for a, e in shares.items()}
        residual = sum(ent.values(), Decimal(0))
        k = sum(1 for a in part if "+1 lot" in results[a].get("rounding", ""))
        odd = max(float(residual - k * lot), 0.0)
        out = {}
        for a in part:
            share = float(ent[a] / residual) if residual > 0 else 0.0
            p, q = min(k * share, 1.0), share if odd > 0 else 0.0
            out[a] = (shares[a], ent[a], p, q,
                      lot * lot * p * (1 - p) + odd * odd * q * (1 - q))
    return out


def analyse(history: History, *, by: str = "account", alpha: float = DEFAULT_ALPHA,
            correction: str = "holm") -> FairnessReport:
    """Figures and tests of a loaded history (accounts always; groups when `by` is one)."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}, expected one of {', '.join(GROUPINGS)}")
    accounts = _judge([_figures(k, v) for k, v in sorted(_units(history.receipts,
                                                                 "account").items())],
                      alpha, correction)
    groups = [] if by == "account" else _judge(
        [_figures(k, v) for k, v in sorted(_units(history.receipts, by).items())],
        alpha, correction)
    return FairnessReport(
        start=history.start.isoformat(), end=history.end.isoformat(), by=by, alpha=alpha,
        correction=correction, blocks=history.blocks,
        blocks_assessed=history.blocks - len(history.not_assessed),
        not_assessed=dict(sorted(history.not_assessed.items())), accounts=accounts,
        groups=groups, spread=date_spread(history.receipts))


def fairness_report(db: Database, start: date, end: date, *, by: str = "account",
                    alpha: float = DEFAULT_ALPHA, correction: str = "holm") -> FairnessReport:
    """Read the blocks traded from `start` to `end` and judge them."""
    return analyse(load_history(db, start, end), by=by, alpha=alpha, correction=correction)
