"""Why did these accounts get these quantities: a stored decision, explained per account.

`explain_allocation(db, alloc_id, accounts)` reads the allocation, its lines, its stored
decision and the inputs stored with it, and returns an `Explanation`: per account its
eligibility with every rule that applied (rule id, version, reason text), its caps and what
they clipped, the method's arithmetic, the rounding, the tax lots relieved and the final
quantity; `.to_json()` for machines, `.sentences()` / `.text()` for a compliance officer
(written by gateway.audit.explain_text).

The decision JSON records final quantities and reasons, not the method's intermediate
figures; those are recomputed from the stored inputs with the engine's own functions
(engine.methods.raw_weight, engine.split.split) and shown only when the recomputation gives
back every stored quantity. Otherwise the explanation says they are not recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import engine
from engine.eligibility import DECIMAL_CONTEXT, build_context, issuer_symbols
from engine.methods import MethodInput, raw_weight, run_tiered
from engine.split import Entry, split, tie_ranks
from gateway.audit.explain_inputs import Inputs, load_inputs
from gateway.persistence.store import Database

STATUS_ORDER = ("allocated", "capped", "dropped", "not_participating", "excluded")
_CENT = Decimal("0.01")


class ExplainError(LookupError):
    """An unknown allocation or account; `missing` names what was asked for and absent."""

    def __init__(self, message: str, *, kind: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.kind = kind
        self.missing = tuple(missing)


def dec(x: Fraction | Decimal | int, places: Decimal = _CENT) -> Decimal:
    """An exact figure shown to two decimals (display only; the split itself is exact)."""
    if isinstance(x, Fraction):
        with localcontext(DECIMAL_CONTEXT):
            x = Decimal(x.numerator) / Decimal(x.denominator)
    return Decimal(x).quantize(places)


@dataclass(frozen=True)
class RuleCheck:
    rule_id: str
    version: str
    kind: str
    outcome: str  # passed | excluded | capped | dropped | not_applicable
    text: str


@dataclass(frozen=True)
class Arithmetic:
    """The method's figures for one account, recomputed from the stored inputs."""

    basis: str  # what the weight is, e.g. "intended quantity"
    weight: Decimal
    total_weight: Decimal  # of every participant
    share: Decimal  # executed x weight / total weight: before caps and rounding
    cap: Decimal | None = None  # the tightest cap in shares, if any
    cap_rule: str = ""
    clipped: bool = False
    resplit_qty: Decimal | None = None  # what was re-split after clipped accounts left
    resplit_weight: Decimal | None = None
    resplit_share: Decimal | None = None
    rounded_down: Decimal = Decimal(0)  # the share rounded down to whole lots
    remainder: Decimal = Decimal(0)  # shares below the next lot
    extra_lot: bool = False
    odd_lot: Decimal = Decimal(0)
    tier: int | None = None


@dataclass(frozen=True)
class AccountExplanation:
    account_id: str
    status: str
    final_qty: Decimal
    line_qty: Decimal | None  # the allocation line's quantity (None: no line was sent)
    pct_of_block: Decimal
    reasons: list[dict[str, Any]]
    rounding: str
    rules: list[RuleCheck] = field(default_factory=list)
    arithmetic: Arithmetic | None = None
    lots: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _plain(asdict(self))
        return out


@dataclass(frozen=True)
class Explanation:
    header: dict[str, Any]
    rounding: dict[str, Any]
    groups: list[dict[str, Any]]
    accounts: list[AccountExplanation]
    named: bool  # accounts were asked for by name (full detail) or are the summary's
    arithmetic_missing: str = ""

    def to_json(self) -> dict[str, Any]:
        from gateway.audit.explain_text import comparison

        return {"allocation": _plain(self.header), "rounding": _plain(self.rounding),
                "groups": _plain(self.groups), "named": self.named,
                "arithmetic_missing": self.arithmetic_missing,
                "accounts": [a.to_json() for a in self.accounts],
                "comparison": comparison(self) if self.named else [],
                "sentences": self.sentences()}

    def sentences(self) -> list[str]:
        from gateway.audit.explain_text import sentences

        return sentences(self)

    def text(self) -> str:
        from gateway.audit.explain_text import render

        return render(self)


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def explain_allocation(db: Database, alloc_id: str,
                       accounts: Sequence[str] | None = None) -> Explanation:
    """Explain allocation `alloc_id`; all accounts in summary, or the named ones in full.

    Raises ExplainError for an unknown allocation or an account the decision does not name.
    """
    alloc = db.load_allocation(alloc_id)
    if alloc is None:
        raise ExplainError(f"no allocation {alloc_id!r} in the database", kind="allocation",
                           missing=[alloc_id])
    row = db.load_decision(alloc["decision_id"])
    if row is None or not row.get("canonical_json"):
        raise ExplainError(f"allocation {alloc_id}: its decision {alloc['decision_id']} is not "
                           "stored", kind="decision", missing=[alloc["decision_id"]])
    decision = json.loads(row["canonical_json"])
    results = {r["account_id"]: r for r in decision["results"]}
    if accounts is not None:
        unknown = [a for a in accounts if a not in results]
        if unknown:
            raise ExplainError(f"allocation {alloc_id} has no account "
                               f"{', '.join(unknown)} in its decision", kind="account",
                               missing=unknown)
    lines = {ln["account_id"]: ln for ln in db.load_allocation_lines(alloc_id)}
    stored_lots = {ln["account_id"]: ln["lots"] for ln in decision["lines"]}
    inputs = load_inputs(db, decision, row, db.load_order(alloc["order_id"]))
    figures, rounding, missing = _recompute(decision, inputs)
    params = decision["method_params"]
    executed = Decimal(decision["executed_qty"])
    header = {
        "alloc_id": alloc_id, "order_id": alloc["order_id"],
        "decision_id": decision["decision_id"], "inputs_hash": decision["inputs_hash"],
        "block_id": decision["block_id"], "symbol": decision["symbol"],
        "side": decision["side"], "trade_date": decision["trade_date"],
        "decided_at": decision["decided_at"], "executed_qty": executed,
        "allocated_qty": Decimal(decision["allocated_qty"]),
        "unallocated_qty": Decimal(decision["unallocated_qty"]),
        "unallocated_reason": decision["unallocated_reason"],
        "avg_px": Decimal(decision["avg_px"]), "lot_size": decision["lot_size"],
        "method": decision["method"], "scheme": params.get("scheme"),
        "sub_method": params.get("sub_method"),
        "fallback": params.get("fallback", []),
        "methods_tried_without_participants": params.get("methods_tried_without_participants",
                                                         []),
        "rulebook_version": decision["rulebook_version"],
        "refdata_version": row.get("refdata_version"),
        "engine_version": row.get("engine_version"),
        "alloc_status": alloc["status"], "line_count": len(lines),
        "inputs_verified": inputs.request is not None,
        "preallocation_reason": params.get("preallocation_reason"),
    }
    wanted = list(accounts) if accounts is not None else [
        aid for aid, r in sorted(results.items()) if r["status"] != "allocated"]
    rules = _rule_checks(inputs, decision, results, wanted) if inputs.rulebook else {}
    out = []
    for aid in wanted:
        r = results[aid]
        line = lines.get(aid)
        final = Decimal(r["qty"])
        out.append(AccountExplanation(
            account_id=aid, status=r["status"], final_qty=final,
            line_qty=Decimal(line["qty"]) if line else None,
            pct_of_block=dec(final * 100 / executed) if executed else Decimal(0),
            reasons=r["reasons"], rounding=r["rounding"], rules=rules.get(aid, []),
            arithmetic=figures.get(aid), lots=stored_lots.get(aid, [])))
    return Explanation(header, rounding, _groups(decision["results"]), out,
                       named=accounts is not None, arithmetic_missing=missing)


def _groups(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per status: how many accounts, how many shares, and each distinct reason's count."""
    groups: dict[str, dict[str, Any]] = {}
    for r in results:
        g = groups.setdefault(r["status"], {"status": r["status"], "accounts": 0,
                                            "qty": Decimal(0), "reasons": {}})
        g["accounts"] += 1
        g["qty"] += Decimal(r["qty"])
        for reason in r["reasons"]:
            key = (reason["rule_id"], reason["rule_version"], reason["code"], reason["text"])
            g["reasons"].setdefault(key, []).append(r["account_id"])
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    out = []
    for status in sorted(groups, key=lambda s: order.get(s, len(order))):
        g = groups[status]
        g["reasons"] = [{"rule_id": k[0], "rule_version": k[1], "code": k[2], "text": k[3],
                         "accounts": len(ids), "account_ids": ids[:20]}
                        for k, ids in sorted(g["reasons"].items())]
        out.append(g)
    return out


_BASIS = {"pro_rata": "intended quantity", "pari_passu": "NAV",
          "target_weight": "shortfall to target weight (in money)", "equal": "one equal share",
          "manual": "pre-allocated quantity"}


def _recompute(decision: dict[str, Any], inputs: Inputs
               ) -> tuple[dict[str, Arithmetic], dict[str, Any], str]:
    """Every participant's figures, the block's rounding facts, or why they are missing."""
    params = decision["method_params"]
    lot = int(decision["lot_size"])
    total = int(Decimal(decision["executed_qty"]))
    rounding: dict[str, Any] = {
        "lot_size": lot, "tie_break": params.get("tie_break"),
        "rotation_offset": params.get("rotation_offset"), "odd_lot_rule": params.get("odd_lot"),
        "odd_lot_account": params.get("odd_lot_account"),
        "min_allocation_rerun_dropped": params.get("min_allocation_rerun_dropped", [])}
    method = decision["method"]
    if inputs.request is None or inputs.rulebook is None or inputs.accounts is None:
        return {}, rounding, inputs.missing
    if method == "none":
        return {}, rounding, "no method had a participant, so there is no arithmetic to show"
    req = inputs.request
    with localcontext(DECIMAL_CONTEXT):
        report = engine.evaluate_eligibility(
            engine.OrderIntent(req.block_id, req.symbol, req.side, req.executed_qty,
                               req.avg_px), req.accounts, req.securities, inputs.rulebook)
        base = params.get("sub_method") if method == "tiered" else method
        m_in = MethodInput(req.side, req.avg_px, req.symbol, req.preallocations or {})
        dropped = set(params.get("min_allocation_rerun_dropped") or [])
        rotation = params.get("rotation_offset")
        eligible = list(report.eligible)
        ranks = dict(zip(eligible, tie_ranks(range(len(eligible)), len(eligible), rotation),
                         strict=True))
        raw = {aid: raw_weight(base, inputs.accounts[aid], m_in) for aid in eligible
               if aid not in dropped}
        raw = {aid: w for aid, w in raw.items() if w > 0}
        if not raw:
            return {}, rounding, "no participant has a positive weight"
        # The engine splits whole-number weights; scaling every weight by one power of ten
        # keeps the ratios (engine.partition_eligibility does the same).
        exp = min(int(w.as_tuple().exponent) for w in raw.values())
        scale = Decimal(10) ** -exp if exp < 0 else Decimal(1)
        ints = {aid: int(w * scale) for aid, w in raw.items()}
        caps = {aid: int(report.caps[aid]) if aid in report.caps else None for aid in ints}
        if method == "tiered":
            members = [inputs.accounts[aid] for aid in sorted(ints)]
            res: Any = run_tiered(total, lot, members, ints, caps=caps, rank=ranks)
        else:
            res = split(total, lot, [Entry(aid, ints[aid], caps[aid]) for aid in sorted(ints)],
                        ranks)
    stored = {r["account_id"]: int(Decimal(r["qty"])) for r in decision["results"]}
    if any(res.alloc.get(aid, 0) != stored.get(aid) for aid in ints):
        return {}, rounding, ("recomputing the split from the stored inputs does not give the "
                              "stored quantities, so its intermediate figures are not shown")
    cap_rules = _cap_rules(req, inputs, ints, caps)
    figures = _figures(total, lot, raw, caps, res, method, inputs, cap_rules)
    extra = sorted(res.extra_lot)
    rounding.update({
        "participants": len(ints), "extra_lot_accounts": len(extra),
        "leftover_lots": len(extra), "odd_lot_qty": figures[res.odd_lot].odd_lot
        if res.odd_lot in figures else Decimal(0)})
    if method != "tiered" and extra:
        rounding["smallest_remainder_given_a_lot"] = min(figures[a].remainder for a in extra)
        passed = [f.remainder for a, f in figures.items() if a not in res.extra_lot
                  and not f.clipped]
        rounding["largest_remainder_not_given_a_lot"] = max(passed) if passed else None
    return figures, rounding, ""


def _cap_rules(req: engine.AllocationRequest, inputs: Inputs, ints: dict[str, int],
               caps: dict[str, int | None]) -> dict[str, str]:
    """The rule behind each participant's tightest cap, worked out as the engine does."""
    assert inputs.rulebook is not None and inputs.accounts is not None
    out: dict[str, str] = {}
    for aid, cap in caps.items():
        if cap is None:
            continue
        for rule_id, shares, _text in cap_limits(inputs, inputs.accounts[aid], req):
            if shares == cap:
                out[aid] = rule_id
                break
    return out


def cap_limits(inputs: Inputs, a: engine.Account, req: engine.AllocationRequest
               ) -> list[tuple[str, int, str]]:
    """(rule id, room in shares, how) of every cap on `a` for this trade, tightest first."""
    assert inputs.rulebook is not None
    rb = inputs.rulebook
    px = req.avg_px
    out: list[tuple[str, int, str]] = []
    with localcontext(DECIMAL_CONTEXT):
        ctx = build_context(rb, req.symbol, req.side, px, req.securities)
        related = issuer_symbols(req.symbol, req.securities)
        exposure = sum(((px if s == req.symbol else (related[s] or px)) * q
                        for s, q in a.positions.items() if s in related), Decimal(0))
        for i in rb.rules_for(a.account_id, a.book):
            if i in ctx.caps:
                money = ctx.caps[i] * a.nav / 100 - exposure
                room = int(money / px) if money > 0 else 0
                out.append((rb.restrictions[i].id, room,
                            f"{ctx.caps[i]}% of NAV {a.nav:,} = {ctx.caps[i] * a.nav / 100:,} "
                            f"less {exposure:,} already held in the issuer, at {px}"))
        if req.side is engine.Side.BUY:
            out.append(("SYS-BUYING-POWER", int(a.cash / px) if a.cash > 0 else 0,
                        f"cash {a.cash:,} at {px}"))
        elif req.side.is_sell:
            out.append(("SYS-HOLDINGS", max(int(a.position(req.symbol)), 0),
                        f"holding of {a.position(req.symbol):,} {req.symbol}"))
    return sorted(out, key=lambda t: t[1])


def _figures(total: int, lot: int, raw: dict[str, Decimal], caps: dict[str, int | None],
             res: Any, method: str, inputs: Inputs, cap_rules: dict[str, str]
             ) -> dict[str, Arithmetic]:
    assert inputs.accounts is not None
    wsum = sum(raw.values(), Decimal(0))
    clipped = set(res.clipped)
    # Clipped accounts leave the split with their capped quantity; the rest is re-split
    # over the others by the same weights (water-filling, engine.split rule 1).
    rest = total - sum(res.alloc[a] for a in clipped)
    rest_w = wsum - sum((raw[a] for a in clipped), Decimal(0))
    out: dict[str, Arithmetic] = {}
    for aid, w in raw.items():
        share = Fraction(total) * Fraction(w) / Fraction(wsum)
        resplit = (Fraction(rest) * Fraction(w) / Fraction(rest_w)
                   if clipped and aid not in clipped and rest_w else None)
        base = resplit if resplit is not None else share
        got = res.alloc.get(aid, 0)
        floor = (int(base) // lot) * lot if aid not in clipped else got
        odd = got - floor - (lot if aid in res.extra_lot else 0) if res.odd_lot == aid else 0
        cap = caps.get(aid)
        out[aid] = Arithmetic(
            basis=_BASIS.get(method if method != "tiered" else "pro_rata", method),
            weight=w, total_weight=wsum, share=dec(share),
            cap=Decimal(cap) if cap is not None else None, cap_rule=cap_rules.get(aid, ""),
            clipped=aid in clipped,
            resplit_qty=Decimal(rest) if resplit is not None else None,
            resplit_weight=rest_w if resplit is not None else None,
            resplit_share=dec(resplit) if resplit is not None else None,
            rounded_down=Decimal(floor),
            remainder=dec(base - floor) if aid not in clipped else Decimal(0),
            extra_lot=aid in res.extra_lot, odd_lot=Decimal(odd),
            tier=inputs.accounts[aid].tier if method == "tiered" else None)
    return out


def _rule_checks(inputs: Inputs, decision: dict[str, Any], results: dict[str, Any],
                 wanted: Sequence[str]) -> dict[str, list[RuleCheck]]:
    """Every rule in each wanted account's scope with what it did, built-in rules last."""
    from gateway.audit.explain_text import rule_checks

    return {aid: rule_checks(inputs, decision, results[aid]) for aid in wanted}
