"""Approval policies: which decisions stop for a person before their J goes out, and who.

A policy lives in the rulebook (`approval_policies:`), so it is versioned, reloaded and
stored with it. Its condition is a CEL expression over the facts of one decision (FACTS
below), type-checked when the rulebook loads, exactly like a custom rule: a policy that
names an unknown fact is refused with its path rather than holding, or passing, every
block in production.

    approval_policies:
      - id: LARGE-NOTIONAL
        version: "1"
        description: Blocks above USD 5m are approved by a PM
        when: decision.notional > 5000000
        approvers: {role: pm, count: 1}
        escalate: {after_minutes: 30, role: compliance}

`count: 2` is four-eyes: two different people of the role. Nobody may approve a block
that they sent, nor one decided under a rulebook version they authored (gateway/approvals
enforces both, it knows the people). A decision that matches no policy is not held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cel

from engine.cel_check import validated
from engine.cel_types import BOOL, INT, STRING, T
from engine.errors import RulebookError

ROLES = ("viewer", "trader", "operations", "pm", "compliance", "admin")

# Quantities and money are whole units (CEL has no decimal); rates are basis points.
DECISION_FACTS: Mapping[str, T] = {
    "method": STRING, "manual": BOOL, "preallocated": BOOL, "accounts": INT,
    "excluded": INT, "capped": INT, "allocated_qty": INT, "notional": INT,
    "max_fill_rate_dev_bps": INT, "rulebook_version": STRING, "refdata_version": STRING,
}
ORDER_FACTS: Mapping[str, T] = {
    "book": STRING, "symbol": STRING, "side": STRING, "broker": STRING, "qty": INT,
    "trader": STRING,
}
HISTORY_FACTS: Mapping[str, T] = {
    # False on the first decision ever made under that version, or the first of the day.
    "rulebook_used_before_today": BOOL, "refdata_used_before_today": BOOL,
    # The median size of the book's recent orders (0 when it has none) and this order's
    # size as a percentage of it (0 when there is no median).
    "usual_qty": INT, "size_vs_usual_pct": INT,
}
FACTS: Mapping[str, Mapping[str, T]] = {
    "decision": DECISION_FACTS, "order": ORDER_FACTS, "history": HISTORY_FACTS}

_KEYS = ("id", "version", "description", "when", "approvers", "escalate")


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    id: str
    version: str
    description: str
    when: str
    role: str
    count: int  # 1, or 2 for four-eyes
    escalate_after_minutes: int | None = None
    escalate_role: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "description": self.description,
                "when": self.when, "approvers": {"role": self.role, "count": self.count},
                "escalate": None if self.escalate_role is None else {
                    "after_minutes": self.escalate_after_minutes,
                    "role": self.escalate_role}}


@dataclass(frozen=True, slots=True)
class PolicyMatch:
    """A policy that holds a decision, or could not be evaluated (held, fail closed)."""

    policy: ApprovalPolicy
    error: str | None = None


def parse(raw: Any) -> tuple[ApprovalPolicy, ...]:
    """Validate the rulebook's `approval_policies` list; RulebookError names the path."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise RulebookError("approval_policies", "must be a list")
    out: list[ApprovalPolicy] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"approval_policies[{i}]"
        policy = _policy(item, path)
        if policy.id in seen:
            raise RulebookError(f"{path}.id", f"duplicate policy id {policy.id!r} (first at "
                                              f"approval_policies[{seen[policy.id]}])")
        seen[policy.id] = i
        out.append(policy)
    return tuple(out)


def _text(m: Mapping[str, Any], key: str, path: str) -> str:
    v = m.get(key)
    if v is None:
        raise RulebookError(f"{path}.{key}", "is required")
    if isinstance(v, bool) or not isinstance(v, str | int) or not str(v).strip():
        raise RulebookError(f"{path}.{key}", "must be a non-empty string")
    return str(v).strip()


def _role(m: Mapping[str, Any], path: str) -> str:
    role = _text(m, "role", path)
    if role not in ROLES:
        raise RulebookError(f"{path}.role", f"must be one of {list(ROLES)}, was {role!r}")
    return role


def _policy(item: Any, path: str) -> ApprovalPolicy:
    if not isinstance(item, Mapping):
        raise RulebookError(path, "must be a mapping")
    for key in item:
        if key not in _KEYS:
            raise RulebookError(f"{path}.{key}", f"unknown key {key!r}; expected one of "
                                                 f"{sorted(_KEYS)}")
    when = _text(item, "when", path)
    validated(when, FACTS, f"{path}.when")
    approvers = item.get("approvers")
    if not isinstance(approvers, Mapping):
        raise RulebookError(f"{path}.approvers", "is required: {role: ..., count: 1 or 2}")
    for key in approvers:
        if key not in ("role", "count"):
            raise RulebookError(f"{path}.approvers.{key}", "unknown key; expected role, count")
    count = approvers.get("count", 1)
    if count not in (1, 2) or isinstance(count, bool):
        raise RulebookError(f"{path}.approvers.count", "must be 1, or 2 for four-eyes")
    escalate = item.get("escalate")
    after: int | None = None
    to: str | None = None
    if escalate is not None:
        if not isinstance(escalate, Mapping) or set(escalate) != {"after_minutes", "role"}:
            raise RulebookError(f"{path}.escalate", "must be {after_minutes: N, role: ...}")
        after = escalate["after_minutes"]
        if not isinstance(after, int) or isinstance(after, bool) or after < 1:
            raise RulebookError(f"{path}.escalate.after_minutes",
                                "must be a whole number of minutes, at least 1")
        to = _role(escalate, f"{path}.escalate")
    return ApprovalPolicy(
        id=_text(item, "id", path), version=_text(item, "version", path),
        description=_text(item, "description", path), when=when,
        role=_role(approvers, f"{path}.approvers"), count=int(count),
        escalate_after_minutes=after, escalate_role=to)


_PROGRAMS: dict[str, Any] = {}


def evaluate(policies: Sequence[ApprovalPolicy], facts: Mapping[str, Mapping[str, Any]]
             ) -> list[PolicyMatch]:
    """The policies that hold a decision with these facts, in rulebook order.

    A policy whose expression fails at run time (an overflow, say) holds the decision:
    failing closed sends it to a person instead of letting it through unreviewed."""
    missing = {k: set(v) - set(facts.get(k, {})) for k, v in FACTS.items()}
    if any(missing.values()):
        raise ValueError(f"facts missing: {({k: sorted(v) for k, v in missing.items() if v})}")
    out: list[PolicyMatch] = []
    for policy in policies:
        program = _PROGRAMS.get(policy.when)
        if program is None:
            program = _PROGRAMS[policy.when] = cel.compile(policy.when)
        try:
            result = program.execute({k: dict(v) for k, v in facts.items()})
        except Exception as e:  # the runtime raises several types (overflow, division, ...)
            out.append(PolicyMatch(policy, (str(e).splitlines() or [type(e).__name__])[0]))
            continue
        if result is True:
            out.append(PolicyMatch(policy))
        elif result is not False:
            out.append(PolicyMatch(policy, f"expression returned {type(result).__name__}"))
    return out
