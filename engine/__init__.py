"""fixalloc allocation engine: pure, deterministic, Decimal end to end."""

from __future__ import annotations

from engine.allocator import (
    PARALLEL_MIN_ACCOUNTS,
    allocate,
    evaluate_eligibility,
    inputs_hash,
    prepare_accounts,
)
from engine.decision import AllocationDecision
from engine.errors import AllocationError, InvariantViolation, RulebookError
from engine.executor import Executor, InProcessExecutor, PartitionedExecutor
from engine.invariants import check_decision
from engine.model import (
    Account,
    AccountResult,
    AllocationLine,
    AllocationRequest,
    EligibilityReport,
    LotRelief,
    OrderIntent,
    Reason,
    Security,
    Side,
    TaxLot,
)
from engine.rulebook import Restriction, Rulebook, Scheme

# Bumped whenever a change to the engine changes what it decides for the same inputs on
# purpose; stored with every decision so a replay can name the engine that made it.
ENGINE_VERSION = "1"

__all__ = [
    "PARALLEL_MIN_ACCOUNTS",
    "Account",
    "AccountResult",
    "AllocationDecision",
    "AllocationError",
    "AllocationLine",
    "AllocationRequest",
    "EligibilityReport",
    "Executor",
    "InProcessExecutor",
    "InvariantViolation",
    "LotRelief",
    "OrderIntent",
    "PartitionedExecutor",
    "Reason",
    "Restriction",
    "Rulebook",
    "RulebookError",
    "Scheme",
    "Security",
    "Side",
    "TaxLot",
    "allocate",
    "check_decision",
    "evaluate_eligibility",
    "inputs_hash",
    "prepare_accounts",
]
