"""The actions a person can take, and which role may take which: the one place that says.

docs/users.md shows the same matrix as a table (a test keeps the two equal). An endpoint
or command names the one action it needs (http_auth.Guard.needs); a user holds one or
more roles and may take every action any of them allows.
"""

from __future__ import annotations

from collections.abc import Iterable

ACTIONS: tuple[str, ...] = (
    "view",                # read status, allocations, explanations, exceptions, sweeps, rules
    "whatif",              # run a staged rulebook's what-if over past blocks
    "approve",             # approve an allocation held at the approval gate
    "reject",              # reject an allocation held at the approval gate
    "override",            # release an allocation over a compliance hold, with a reason
    "submit_orders",       # hand block orders to the gateway (POST /orders, rebalance --send)
    "operate_allocation",  # resend, replace or cancel an allocation
    "run_sweep",           # run the end-of-day sweep now
    "reload_rules",        # reload the rulebook; activate or discard a staged version
    "reload_refdata",      # reload accounts, positions and securities
    "push_prices",         # push reference prices for crossing (POST /prices)
    "manage_users",        # add, change and disable users; issue their API tokens
)

READ_ACTIONS = frozenset({"view", "whatif"})
"""What answering a GET needs: open to anyone while no user exists (http_auth.py)."""

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"view"}),
    # Traders and PMs place orders (a rebalance's blocks); nobody else does.
    "trader": frozenset({"view", "whatif", "submit_orders"}),
    "pm": frozenset({"view", "whatif", "approve", "reject", "submit_orders"}),
    # Compliance writes the rules, so it may put them in force; it alone overrides a hold.
    "compliance": frozenset({"view", "whatif", "approve", "reject", "override",
                             "reload_rules"}),
    # Operations deploys the files (rules and reference data) and runs the post-trade day;
    # it approves nothing. The shared machine token maps here by default, which is why a
    # price feed (running under it) pushes reference prices as operations, and nobody else.
    "operations": frozenset({"view", "whatif", "operate_allocation", "run_sweep",
                             "reload_rules", "reload_refdata", "push_prices"}),
    "admin": frozenset(ACTIONS),
}

ROLES: tuple[str, ...] = tuple(ROLE_ACTIONS)


class UnknownRole(ValueError):
    pass


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles, sorted and without repeats; UnknownRole names any that is not a role."""
    wanted = sorted({r.strip().lower() for r in roles if r.strip()})
    unknown = [r for r in wanted if r not in ROLE_ACTIONS]
    if unknown:
        raise UnknownRole(f"unknown role {', '.join(unknown)}: the roles are "
                          f"{', '.join(ROLES)}")
    if not wanted:
        raise UnknownRole(f"a user needs at least one role: {', '.join(ROLES)}")
    return tuple(wanted)


def actions_of(roles: Iterable[str]) -> frozenset[str]:
    """Every action any of `roles` allows."""
    allowed: set[str] = set()
    for role in roles:
        allowed |= ROLE_ACTIONS.get(role, frozenset())
    return frozenset(allowed)


def ordered(actions: Iterable[str]) -> list[str]:
    """Actions in the order of ACTIONS (for answers and listings)."""
    have = set(actions)
    return [a for a in ACTIONS if a in have]


def _consistent() -> None:
    for role, allowed in ROLE_ACTIONS.items():
        stray = allowed - set(ACTIONS)
        if stray:  # a typo here would grant nothing and fail silently
            raise AssertionError(f"role {role} names unknown actions {sorted(stray)}")


_consistent()
