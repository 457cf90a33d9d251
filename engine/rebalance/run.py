"""A run over many accounts: validation, the inputs hash, in process or partitioned."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import localcontext
from typing import Any

from engine import canonical
from engine.book import book_for
from engine.eligibility import DECIMAL_CONTEXT, lookthrough_chain
from engine.model import Account, Security
from engine.partition_state import installed_book
from engine.rebalance import wire
from engine.rebalance.account import plan_columns
from engine.rebalance.context import Run
from engine.rebalance.rows import (
    REBALANCE_ENGINE_VERSION,
    AccountPlan,
    RebalanceError,
    RebalanceRequest,
    TradeRow,
    build_plan,
    held_positions,
)
from engine.rebalance.universe import Universes
from engine.rebalance_model import Model
from engine.rulebook import Rulebook

# -- a run ----------------------------------------------------------------------------------

def _partition(args: tuple[str, Model, Rulebook, Mapping[str, Security], dt.date]
               ) -> wire.PartitionPlans:
    """Trade lists of the accounts installed in this partition (a picklable pool op), as
    columns that are packed if they leave the process (`engine.rebalance.wire`)."""
    version, model, rulebook, securities, trade_date = args
    _lo, accounts = installed_book(version)
    run = Run(model, rulebook, securities, trade_date)
    with localcontext(DECIMAL_CONTEXT):
        return wire.PartitionPlans([plan_columns(run, a, held_positions(a)) for a in accounts])


def _plans(run: Run, accounts: Sequence[Account]) -> list[AccountPlan]:
    with localcontext(DECIMAL_CONTEXT):
        out = []
        for a in accounts:
            held = held_positions(a)
            out.append(build_plan(plan_columns(run, a, held), held))
        return out


def _collect(req: RebalanceRequest, accounts: Sequence[Account],
             parts: list[wire.PartitionPlans]) -> list[AccountPlan]:
    """The partitions' plans, in account order (each partition holds a contiguous slice
    of the accounts in id order)."""
    universes = Universes(dict(req.model.targets), req.securities)
    plans: list[AccountPlan] = []
    for part in parts:
        plans += part.plans(universes, accounts[len(plans):len(plans) + len(part)])
    if len(plans) != len(accounts):
        raise RebalanceError(f"the partitions returned {len(plans)} trade lists for "
                             f"{len(accounts)} accounts")
    return plans


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    model_name: str
    model_version: str
    rulebook_version: str
    trade_date: dt.date
    inputs_hash: str
    accounts: tuple[AccountPlan, ...]   # in account-id order

    def rows(self) -> list[TradeRow]:
        return [r for p in self.accounts for r in p.rows]


def validate(req: RebalanceRequest) -> None:
    model, secs = req.model, req.securities
    for sym in model.targets:
        sec = secs.get(sym)
        if sec is None:
            raise RebalanceError(f"model '{model.name}' names {sym!r}, which is not in the "
                                 "security master")
        if sec.price is None:
            raise RebalanceError(f"model '{model.name}' names {sym!r}, which has no reference "
                                 "price")
        lookthrough_chain(sym, secs)


def inputs_hash(req: RebalanceRequest, rulebook: Rulebook) -> str:
    """sha256 over every input that can change the trade list (accounts in id order)."""
    h = hashlib.sha256()
    head = {
        "model_version": req.model.version, "rulebook_version": rulebook.version,
        "trade_date": req.trade_date, "engine": REBALANCE_ENGINE_VERSION,
        "securities": {s: [v.issuer, v.sector, v.country, sorted(v.esg_tags), v.lot_size,
                           v.related_to, v.price] for s, v in sorted(req.securities.items())},
    }
    h.update(canonical.dumps(head).encode())
    h.update(book_for(req.accounts).hash_bytes())
    return h.hexdigest()


def rebalance(req: RebalanceRequest, rulebook: Rulebook, executor: Any | None = None
              ) -> RebalanceResult:
    """Every account's trade list. `executor`: an `engine.executor` partitioned executor
    (in-process, or a process pool); the result is the same whichever runs it."""
    validate(req)
    book = book_for(req.accounts)
    if book.duplicates:
        raise RebalanceError("duplicate account ids in the request")
    if executor is None or not hasattr(executor, "call_partitions"):
        plans = _plans(Run(req.model, rulebook, req.securities, req.trade_date), book.sorted)
    else:
        executor.prepare(rulebook)
        executor.prepare_accounts(book.version, book.sorted)
        arg = (book.version, req.model, rulebook, req.securities, req.trade_date)
        parts = executor.call_partitions(_partition, [arg] * executor.partitions)
        plans = _collect(req, book.sorted, parts)
    return RebalanceResult(req.model.name, req.model.version, rulebook.version, req.trade_date,
                           inputs_hash(req, rulebook), tuple(plans))


def assigned_accounts(model: Model, accounts: Sequence[Account],
                      only: Sequence[str] | None = None) -> tuple[Account, ...]:
    """The accounts the model applies to (id order), limited to `only` when given; an id in
    `only` that is unknown or not assigned to the model is refused."""
    chosen = sorted((a for a in accounts if model.assigned(a)), key=lambda a: a.account_id)
    if only is None:
        return tuple(chosen)
    by_id = {a.account_id: a for a in accounts}
    for aid in only:
        if aid not in by_id:
            raise RebalanceError(f"unknown account {aid!r}")
        if not model.assigned(by_id[aid]):
            raise RebalanceError(f"account {aid!r} is not assigned to model '{model.name}' "
                                 f"(scheme {by_id[aid].scheme!r})")
    wanted = set(only)
    return tuple(a for a in chosen if a.account_id in wanted)

