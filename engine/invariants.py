"""Hard checks on a decision before any J leaves (DESIGN.md contract 3)."""

from __future__ import annotations

import itertools
from array import array
from decimal import Decimal

from engine import table
from engine.decision import AllocationDecision
from engine.errors import InvariantViolation
from engine.status import ALLOCATED, CAPPED


def check_decision(decision: AllocationDecision) -> None:
    """Raise InvariantViolation unless the decision is internally consistent."""
    lines, rows = decision.lines, decision.results
    if (isinstance(lines, table.LazyTuple) and isinstance(rows, table.LazyTuple)
            and lines.columns is not None and lines.columns is rows.columns):
        _check_columns(decision, lines.columns)
        return
    total = sum((line.qty for line in decision.lines), Decimal(0))
    if total != decision.allocated_qty:
        raise InvariantViolation(
            f"sum of lines {total} != allocated_qty {decision.allocated_qty}"
        )
    _check_totals(decision)
    results = {r.account_id: r for r in decision.results}
    if len(results) != len(decision.results):
        raise InvariantViolation("duplicate account in results")
    seen: set[str] = set()
    odd_lines = 0
    for line in decision.lines:
        if line.account_id in seen:
            raise InvariantViolation(f"two lines for account {line.account_id}")
        seen.add(line.account_id)
        if line.qty <= 0:
            raise InvariantViolation(f"non-positive line for {line.account_id}: {line.qty}")
        if line.avg_px != decision.avg_px:
            raise InvariantViolation(f"line for {line.account_id} not at the block avg price")
        r = results.get(line.account_id)
        if r is None or r.status not in ("allocated", "capped"):
            raise InvariantViolation(f"line for {line.account_id} which is not allocated")
        if r.qty != line.qty:
            raise InvariantViolation(f"result and line disagree for {line.account_id}")
        if line.qty % decision.lot_size:
            odd_lines += 1
        if line.lots:
            relieved = sum((lot.quantity for lot in line.lots), Decimal(0))
            if relieved > line.qty or any(lot.quantity <= 0 for lot in line.lots):
                raise InvariantViolation(f"lot relief for {line.account_id} is inconsistent")
    if odd_lines > 1:
        raise InvariantViolation(f"{odd_lines} lines are not multiples of the lot size")
    for r in decision.results:
        if r.qty < 0:
            raise InvariantViolation(f"negative quantity for {r.account_id}")
        if r.status not in ("allocated", "capped") and r.qty != 0:
            raise InvariantViolation(f"{r.status} account {r.account_id} has quantity {r.qty}")
        if r.status in ("allocated", "capped") and r.qty > 0 and r.account_id not in seen:
            raise InvariantViolation(f"allocated account {r.account_id} has no line")
    if [line.account_id for line in decision.lines] != sorted(seen):
        raise InvariantViolation("lines are not sorted by account id")


def _check_totals(decision: AllocationDecision) -> None:
    """Block-level conservation, shared by the object and the column checks."""
    if decision.allocated_qty != decision.executed_qty - decision.unallocated_qty:
        raise InvariantViolation(
            f"allocated_qty {decision.allocated_qty} != executed_qty {decision.executed_qty}"
            f" - unallocated_qty {decision.unallocated_qty}"
        )
    if decision.unallocated_qty < 0:
        raise InvariantViolation(f"negative unallocated_qty {decision.unallocated_qty}")
    if decision.unallocated_qty > 0 and not decision.unallocated_reason:
        raise InvariantViolation("unallocated shares without a reason")


def _check_columns(decision: AllocationDecision, cols: table.DecisionColumns) -> None:
    """The same checks, on the columns the lines and results are built from."""
    _check_totals(decision)
    ids, status = cols.ids, cols.status
    qty = cols.qty.tolist() if isinstance(cols.qty, array) else list(cols.qty)
    n = len(ids)
    if len(cols.accounts) != n or len(status) != n or len(qty) != n or len(cols.flags) != n:
        raise InvariantViolation("result columns do not cover every account")
    if not (cols.ids_unique or all(map(str.__lt__, ids, itertools.islice(ids, 1, None)))):
        raise InvariantViolation("duplicate account in results")
    if n and min(qty) < 0:
        raise InvariantViolation("negative quantity in results")
    # Lines are the accounts with a quantity, in id order (engine.table.lines_table).
    line_qty = list(filter(None, qty))
    if sum(line_qty) != decision.allocated_qty:
        raise InvariantViolation(
            f"sum of lines {sum(line_qty)} != allocated_qty {decision.allocated_qty}")
    if line_qty and min(line_qty) <= 0:
        raise InvariantViolation("non-positive line")
    if not set(itertools.compress(status, qty)) <= {ALLOCATED, CAPPED}:
        raise InvariantViolation("line for an account which is not allocated")
    lot = decision.lot_size
    if len(line_qty) - list(map(lot.__rmod__, line_qty)).count(0) > 1:
        raise InvariantViolation("more than one line is not a multiple of the lot size")
    for i, (reliefs, _note) in cols.reliefs.items():
        relieved = sum((r.quantity for r in reliefs), Decimal(0))
        if relieved > qty[i] or any(r.quantity <= 0 for r in reliefs):
            raise InvariantViolation(f"lot relief for {ids[i]} is inconsistent")
