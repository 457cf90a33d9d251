"""An explanation in plain sentences, with the numbers, for a compliance officer.

Every sentence is built from an `Explanation` (gateway.audit.explain); nothing here reads
the database. `render` lays the sentences out as the text `fixalloc audit explain` prints.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.eligibility import ENGINE_RULE_VERSION, build_context
from engine.reasons import METHOD_LABEL

if TYPE_CHECKING:
    from gateway.audit.explain import AccountExplanation, Explanation, RuleCheck
    from gateway.audit.explain_inputs import Inputs

_OUTCOME = {"ISSUER_CAP": "capped", "BUYING_POWER": "capped", "HOLDINGS": "capped",
            "BELOW_MINIMUM": "dropped", "ALLOCATED": "passed", "NOT_PARTICIPATING": "passed",
            "ROUNDED_TO_ZERO": "passed"}


def _n(x: Any) -> str:
    return f"{Decimal(x):,}"


def _label(method: str) -> str:
    return METHOD_LABEL.get(method, method)


def rule_checks(inputs: Inputs, decision: dict[str, Any], result: dict[str, Any]
                ) -> list[RuleCheck]:
    """Each rule in the account's scope (rulebook order), then the engine's built-in rules."""
    from gateway.audit.explain import RuleCheck, cap_limits

    fired = {r["rule_id"]: r for r in result["reasons"]}
    req, rb = inputs.request, inputs.rulebook
    a = (inputs.accounts or {}).get(result["account_id"])
    if req is None or rb is None or a is None:
        # Without the stored inputs only the decision's own reasons can be shown.
        return [RuleCheck(r["rule_id"], r["rule_version"], r["code"],
                          _OUTCOME.get(r["code"], "excluded"), r["text"])
                for r in result["reasons"]]
    excluded = result["status"] == "excluded"
    side = req.side.value.replace("_", " ")
    ctx = build_context(rb, req.symbol, req.side, req.avg_px, req.securities)
    limits = {rule_id: (room, how) for rule_id, room, how in cap_limits(inputs, a, req)}
    out: list[RuleCheck] = []
    for i in rb.rules_for(a.account_id, a.book):
        r = rb.restrictions[i]
        reason = fired.get(r.id)
        if reason is not None:
            out.append(RuleCheck(r.id, r.version, r.kind,
                                 _OUTCOME.get(reason["code"], "excluded"), reason["text"]))
        elif r.kind in ("exclude", "side"):
            out.append(RuleCheck(r.id, r.version, r.kind, "passed",
                                 f"{r.description}: does not match this {side} of {req.symbol}."))
        elif r.kind == "issuer_cap" and i in ctx.caps and not excluded:
            room, how = limits[r.id]
            out.append(RuleCheck(r.id, r.version, r.kind, "passed",
                                 f"{r.description}: {how} leaves room for {room:,} shares; "
                                 "not the limit that decided its quantity."))
        elif r.kind == "issuer_cap":
            why = ("the account was excluded first" if excluded
                   else "issuer caps limit purchases only")
            out.append(RuleCheck(r.id, r.version, r.kind, "not_applicable",
                                 f"{r.description}: not applied ({why})."))
        elif r.kind == "min_allocation":
            if excluded or Decimal(result["qty"]) == 0:
                out.append(RuleCheck(r.id, r.version, r.kind, "not_applicable",
                                     f"{r.description}: not applied (it received no shares)."))
            else:
                out.append(RuleCheck(r.id, r.version, r.kind, "passed",
                                     f"{r.description}: minimum {_n(r.min_qty or 0)} shares; "
                                     f"it received {_n(result['qty'])}."))
        else:
            out.append(RuleCheck(r.id, r.version, r.kind, "passed",
                                 f"{r.description}: custom rule \"{r.expr}\" does not hold "
                                 "for this account."))
    status = fired.get("SYS-STATUS")
    out.append(RuleCheck("SYS-STATUS", ENGINE_RULE_VERSION, "status",
                         "excluded" if status else "passed",
                         status["text"] if status else "The account is active."))
    for sys_id in ("SYS-BUYING-POWER", "SYS-HOLDINGS"):
        if sys_id in fired:
            out.append(RuleCheck(sys_id, ENGINE_RULE_VERSION, "cap", "capped",
                                 fired[sys_id]["text"]))
        elif sys_id in limits:
            room, how = limits[sys_id]
            text = (f"not applied: the account was excluded first ({how} would allow "
                    f"{room:,} shares)" if excluded
                    else f"{how} allows at most {room:,} shares; not the limit that decided "
                         "its quantity")
            out.append(RuleCheck(sys_id, ENGINE_RULE_VERSION, "cap",
                                 "not_applicable" if excluded else "passed",
                                 text[0].upper() + text[1:] + "."))
    return out


def _tie_break(e: Explanation) -> str:
    r = e.rounding
    if r.get("tie_break") == "rotation":
        return (f"ties broken by account-id order rotated by offset {r.get('rotation_offset')} "
                "(rule 'rotation', advanced one account per block of the book)")
    return "ties broken by account-id order (rule 'account_id')"


def header(e: Explanation) -> list[str]:
    h = e.header
    out = [f"Allocation {h['alloc_id']} of block {h['order_id']}: {h['side']} "
           f"{_n(h['executed_qty'])} {h['symbol']} at the average price {h['avg_px']} on "
           f"{h['trade_date']}; {_n(h['allocated_qty'])} shares were allocated to "
           f"{h['line_count']} accounts and {_n(h['unallocated_qty'])} left unallocated"
           + (f" ({h['unallocated_reason']})." if h["unallocated_reason"] else ".")]
    tried = h["methods_tried_without_participants"]
    out.append(f"The engine (version {h['engine_version']}) decided at {h['decided_at']} to "
               f"split it {_label(h['method'])} (method {h['method']}, scheme "
               f"'{h['scheme']}'" + (f", after {', '.join(tried)} found no participant"
                                     if tried else "")
               + f") under rulebook version {h['rulebook_version']}; decision "
               f"{h['decision_id']}.")
    if h.get("preallocation_reason"):
        out.append(f"The order carried a pre-allocation: {h['preallocation_reason']}.")
    out.append("The reference data and rulebook stored with the decision reproduce its inputs "
               "hash, so the figures below are recomputed from exactly what the engine saw."
               if h["inputs_verified"] else
               f"The method's intermediate figures are not recorded: {e.arithmetic_missing}.")
    r = e.rounding
    if "participants" in r:
        out.append(
            f"{r['participants']} accounts took part in the split. Each share was rounded "
            f"down to whole lots of {r['lot_size']}; the {r['leftover_lots']} left-over lots "
            "went one at a time to the accounts with the largest remainders, "
            f"{_tie_break(e)}"
            + (f"; the smallest remainder that still got a lot was "
               f"{r['smallest_remainder_given_a_lot']} shares"
               if r.get("smallest_remainder_given_a_lot") is not None else "") + ".")
        odd = r.get("odd_lot_account")
        out.append(f"The odd lot of {r['odd_lot_qty']} shares went to {odd} (rule "
                   f"'{r['odd_lot_rule']}': the largest remaining shortfall)." if odd else
                   "There was no odd lot: the quantity is a whole number of lots.")
    if r.get("min_allocation_rerun_dropped"):
        out.append("Dropped below their minimum and the split re-run without them: "
                   f"{', '.join(r['min_allocation_rerun_dropped'])}.")
    return out


def groups(e: Explanation) -> list[str]:
    out = []
    for g in e.groups:
        out.append(f"{g['accounts']} account{'s' if g['accounts'] != 1 else ''} "
                   f"{g['status']}: {_n(g['qty'])} shares in total.")
        if g["status"] == "allocated":
            continue
        for reason in g["reasons"]:
            out.append(f"{reason['accounts']} x {reason['rule_id']} (version "
                       f"{reason['rule_version']}): {reason['text']}")
    return out


def brief(e: Explanation, a: AccountExplanation) -> str:
    """One sentence for an account in the summary: its quantity and why."""
    why = " ".join(f"{r['rule_id']} (version {r['rule_version']}): {r['text']}"
                   for r in a.reasons)
    f = a.arithmetic
    if f is not None and f.clipped:
        why += (f" Its share before caps was {_n(f.share)} shares; the cap allowed "
                f"{_n(f.cap or 0)}, rounded down to {_n(a.final_qty)}.")
    return f"{a.account_id} {a.status}, {_n(a.final_qty)} shares: {why}"


def account(e: Explanation, a: AccountExplanation) -> list[str]:
    """Full detail: eligibility, every rule, caps, the arithmetic, rounding, lots, final."""
    h = e.header
    out = [f"{a.account_id} is {a.status} and received {_n(a.final_qty)} shares, "
           f"{a.pct_of_block}% of the {_n(h['executed_qty'])}-share block."]
    for c in a.rules:
        out.append(f"Rule {c.rule_id} (version {c.version}, {c.kind}) {c.outcome}: {c.text}")
    f = a.arithmetic
    if f is None and a.status in ("allocated", "capped"):
        out.append(f"The method's intermediate figures are not recorded: "
                   f"{e.arithmetic_missing or 'the account has no positive weight'}.")
    if f is not None:
        out.extend(_arithmetic(e, a, f))
    for lot in a.lots:
        out.append(f"Tax lot {lot['lot_id']} acquired {lot['acquired']} relieved: "
                   f"{_n(lot['quantity'])} shares at a cost of {lot['cost_per_share']}, "
                   f"realised gain {lot['realized_gain']}.")
    if not a.lots and h["side"] != "buy" and a.final_qty:
        out.append("No tax lots are recorded for it, so none were relieved.")
    if a.rounding:
        out.append(f"The decision records its rounding as: {a.rounding}.")
    line = ("the allocation line sent in the J carries the same quantity"
            if a.line_qty == a.final_qty else
            "no allocation line was sent for it" if a.line_qty is None else
            f"the allocation line carries {_n(a.line_qty)} shares")
    out.append(f"Final quantity: {_n(a.final_qty)} shares at {h['avg_px']}; {line}.")
    return out


def _arithmetic(e: Explanation, a: AccountExplanation, f: Any) -> list[str]:
    h, lot = e.header, e.header["lot_size"]
    out = []
    if h["method"] == "tiered":
        out.append(f"Tiered sequencing: it is in tier {f.tier}; tiers are filled in order, "
                   f"each split {_label(h['sub_method'])} up to its accounts' demand. Its weight "
                   f"is its {f.basis} of {_n(f.weight)}.")
        return out
    out.append(f"Method {_label(h['method'])}: its weight is its {f.basis}, {_n(f.weight)}; the "
               f"participants' weights total {_n(f.total_weight)}; {_n(f.weight)} / "
               f"{_n(f.total_weight)} x {_n(h['executed_qty'])} = {_n(f.share)} shares is its "
               "intended share before caps and rounding.")
    if f.clipped:
        out.append(f"Its tightest cap, {_n(f.cap)} shares ({f.cap_rule}), is below its share, "
                   f"so it was clipped to the cap and rounded down to whole lots of {lot}: "
                   f"{_n(a.final_qty)} shares; the rest of its share was re-split over the "
                   "accounts below their caps.")
        return out
    if f.cap is not None:
        out.append(f"Its tightest cap, {_n(f.cap)} shares ({f.cap_rule}), did not bind.")
    base = f.share
    if f.resplit_share is not None:
        base = f.resplit_share
        out.append(f"After the clipped accounts left with their capped quantities, "
                   f"{_n(f.resplit_qty)} shares were re-split over weights totalling "
                   f"{_n(f.resplit_weight)}: {_n(f.weight)} / {_n(f.resplit_weight)} x "
                   f"{_n(f.resplit_qty)} = {_n(base)} shares.")
    out.append(f"Rounded down to whole lots of {lot}, {_n(base)} gives {_n(f.rounded_down)} "
               f"shares with a remainder of {f.remainder}.")
    threshold = e.rounding.get("smallest_remainder_given_a_lot")
    if f.extra_lot:
        out.append(f"Its remainder was among the {e.rounding['leftover_lots']} largest, so it "
                   f"received one left-over lot of {lot} ({_tie_break(e)}).")
    elif threshold is not None:
        out.append(f"Its remainder was below {threshold}, the smallest that received one of the "
                   f"{e.rounding['leftover_lots']} left-over lots, so it received none.")
    if f.odd_lot:
        out.append(f"It received the odd lot of {_n(f.odd_lot)} shares (largest remaining "
                   "shortfall).")
    return out


def _why(e: Explanation, a: AccountExplanation) -> str:
    f = a.arithmetic
    if a.status == "excluded":
        return "it was excluded by " + "; ".join(
            f"{r['rule_id']} (version {r['rule_version']}): {r['text'].rstrip('.')}"
            for r in a.reasons)
    if f is None:
        return "; ".join(r["text"] for r in a.reasons) or a.status
    if f.clipped:
        return (f"its {f.basis} {_n(f.weight)} gave a share of {_n(f.share)} but {f.cap_rule} "
                f"capped it at {_n(f.cap)} shares")
    lot = e.header["lot_size"]
    what = (f"its {f.basis} {_n(f.weight)} gave a share of "
            f"{_n(f.resplit_share if f.resplit_share is not None else f.share)}, rounded down "
            f"to {_n(f.rounded_down)}")
    if f.extra_lot:
        what += f" plus a left-over lot of {lot} for its remainder of {f.remainder}"
    elif f.rounded_down != a.final_qty:
        what += f" plus {_n(a.final_qty - f.rounded_down)}"
    else:
        what += f" with no left-over lot for its remainder of {f.remainder}"
    return what


def comparison(e: Explanation) -> list[str]:
    """The difference between the named accounts, pair by pair (each with the first when
    more than four are named)."""
    named = e.accounts
    if len(named) < 2:
        return []
    pairs = (itertools.combinations(named, 2) if len(named) <= 4
             else ((named[0], b) for b in named[1:]))
    return [f"{a.account_id} received {a.pct_of_block}% of the block ({_n(a.final_qty)} shares) "
            f"and {b.account_id} {b.pct_of_block}% ({_n(b.final_qty)} shares) because for "
            f"{a.account_id} {_why(e, a)}, while for {b.account_id} {_why(e, b)}."
            for a, b in pairs]


def sections(e: Explanation) -> list[tuple[str, list[str]]]:
    out = [("Allocation", header(e)), ("Accounts by status", groups(e))]
    if e.named:
        out += [(f"Account {a.account_id}", account(e, a)) for a in e.accounts]
        if len(e.accounts) > 1:
            out.append(("Comparison", comparison(e)))
    elif e.accounts:
        out.append(("Accounts not allocated in full by the method",
                    [brief(e, a) for a in e.accounts]))
    return out


def sentences(e: Explanation) -> list[str]:
    return [s for _title, body in sections(e) for s in body]


def render(e: Explanation) -> str:
    lines: list[str] = []
    for title, body in sections(e):
        lines += ["", title] if lines else [title]
        lines += [f"  {s}" for s in body]
    return "\n".join(lines) + "\n"
