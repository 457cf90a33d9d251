"""Rebalancing: a model plus each account's holdings, cash, lots and restrictions give the
account's trade list, one explained row per account and security.

Pure and deterministic: the same model, reference data, rulebook and date give the same
rows, whatever the order the accounts come in and however many partitions run them. The
rules (bands, cash, lots, restrictions, redistribution, taxes) are documented in
docs/rebalance.md; in short, per account:

1. value V = cash + every holding at its reference price (securities.csv `price`);
2. restrictions come from the rulebook exactly as allocation applies them
   (`engine.eligibility`): a security the account may not buy because of an `exclude` or
   custom rule is *excluded* (target 0, holdings sold); one it may not buy because of a
   `side` rule keeps at most its current weight; the freed weight is redistributed pro rata
   over the account's other model targets (or left in cash with ``redistribution: cash``);
   an issuer cap (% of V, less the account's other holdings of the same ultimate issuer)
   clips a target but never forces a sale; the clipped weight stays in cash;
3. the account trades only if its drift (half the sum of |weight - target| over securities
   and cash) exceeds the account band, and each security only if its |weight - target|
   exceeds the position band; a traded security goes to its target;
4. sells first: rounded down to whole lots (a sell of the whole holding is not rounded),
   never more than is held, lots relieved with the scheme's method; with wash-sale
   avoidance a sell that could only relieve loss lots while shares were bought within the
   window is cut to the gain lots;
5. then buys: rounded down to whole lots, below the minimum trade dropped, and scaled pro
   rata (then rounded down again) so that cash after every trade at the reference price
   stays at or above the cash buffer (and so never negative).
"""

from __future__ import annotations

from engine.rebalance.account import plan_account
from engine.rebalance.rows import (
    REBALANCE_ENGINE_VERSION,
    SYS_REBALANCE,
    TRADED_CODES,
    AccountPlan,
    RebalanceError,
    RebalanceRequest,
    TradeRow,
)
from engine.rebalance.run import (
    RebalanceResult,
    assigned_accounts,
    inputs_hash,
    rebalance,
    validate,
)

__all__ = ["REBALANCE_ENGINE_VERSION", "SYS_REBALANCE", "TRADED_CODES", "AccountPlan",
           "RebalanceError", "RebalanceRequest", "RebalanceResult", "TradeRow",
           "assigned_accounts", "inputs_hash", "plan_account", "rebalance", "validate"]
