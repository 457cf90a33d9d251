"""What a proposed rulebook would have decided for past blocks: per block, per account.

Each block is decided again by the live path's own `AllocationFlow.decide()` with one
input swapped, the rulebook; the executions (as the stored decision recorded them), the
reference data of the stored version, the rotation offset and the decision time are the
stored ones. A re-decision whose inputs hash differs from the stored decision's did not
see the same inputs, so it is reported as not comparable instead of as a change. Nothing
is written: the database is opened read-only and the stored reference-data files are
parsed in a private temporary directory.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, select

import engine
from gateway.alerts import Alerts
from gateway.allocation_flow import AllocationFlow
from gateway.config import Config
from gateway.ledger import FillLedger
from gateway.orders import Order
from gateway.persistence import tables as t
from gateway.persistence.store import Database
from gateway.posttrade.versions import VersionUnavailable, refdata_at, rulebook_at
from gateway.reference import ReferenceData

MAX_BLOCKS = 5000
"""A what-if over more blocks than this is refused: narrow the dates."""


class WhatIfError(ValueError):
    """The blocks asked for cannot be compared (unknown allocation, bad range)."""


class ReadOnlyDatabase(Database):
    """The record opened so that no statement can change it (SQLite mode=ro, PG read-only)."""

    def __init__(self, url: str) -> None:
        # Not Database.__init__: its pragmas would switch the journal mode (a write).
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if not Path(path).is_file():
                raise WhatIfError(f"{path}: no such database")
            db_file = Path(path).resolve()
            # A WAL database read with mode=ro still gets -wal/-shm files created beside
            # it. With no -wal there, no process has it open: read it as immutable and
            # leave the folder exactly as it was. With one, a gateway is running on it:
            # read-only through the WAL, which sees its committed writes.
            wal = db_file.with_name(db_file.name + "-wal").exists()
            uri = f"file:{db_file}?mode=ro" + ("" if wal else "&immutable=1")
            self.engine = create_engine(
                "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True,
                                                             check_same_thread=False))
        else:
            self.engine = create_engine(url, connect_args={
                "options": "-c default_transaction_read_only=on"})


# -- which blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One block's allocation in force and the decision behind it."""

    alloc_id: str
    order: dict[str, Any]
    decision_row: dict[str, Any]
    decision: dict[str, Any]  # the stored canonical JSON


def select_blocks(db: Database, *, alloc_id: str | None = None,
                  date_from: dt.date | None = None, date_to: dt.date | None = None
                  ) -> list[Block]:
    """The allocation named, or each block's latest New/Replace J traded in the dates."""
    if alloc_id is not None:
        row = db.load_allocation(alloc_id)
        if row is None:
            raise WhatIfError(f"no allocation {alloc_id!r} in the record")
        rows = [row]
    else:
        if date_from is None or date_to is None or date_from > date_to:
            raise WhatIfError("give --alloc, --date, or --from and --to with from <= to")
        a = t.allocations
        query = (select(a).where(a.c.trade_date >= date_from.isoformat(),
                                 a.c.trade_date <= date_to.isoformat(),
                                 a.c.alloc_trans_type != "2")
                 .order_by(a.c.created_at, a.c.alloc_id))
        with db.engine.connect() as conn:
            latest = {r["order_id"]: dict(r) for r in conn.execute(query).mappings()}
        rows = sorted(latest.values(), key=lambda r: (r["trade_date"], r["alloc_id"]))
        if len(rows) > MAX_BLOCKS:
            raise WhatIfError(f"{len(rows)} blocks in {date_from}..{date_to}; at most "
                              f"{MAX_BLOCKS} at a time, narrow the dates")
    blocks = []
    for row in rows:
        decision_row = db.load_decision(row["decision_id"])
        orders = t.orders
        with db.engine.connect() as conn:
            order = conn.execute(select(orders).where(
                orders.c.order_id == row["order_id"])).mappings().first()
        if decision_row is None or order is None or not decision_row.get("canonical_json"):
            raise WhatIfError(f"allocation {row['alloc_id']}: its decision or order is not "
                              "in the record (archived?)")
        blocks.append(Block(row["alloc_id"], dict(order), decision_row,
                            json.loads(decision_row["canonical_json"])))
    return blocks


# -- deciding again ----------------------------------------------------------------------


class _DecisionTime:
    """The injectable clock set to the stored decision time: same inputs, same bytes."""

    at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self.at


class _Noted:
    """Stands in for Alerts: a what-if records nothing, it reports why a block would fail."""

    def __init__(self) -> None:
        self.last: tuple[str, dict[str, Any]] | None = None

    def raise_(self, kind: str, **kw: Any) -> bool:
        self.last = (kind, dict(kw.get("detail") or {}))
        return True


class _Unused:
    version = ""  # no reference data is "current": every version comes from the record


def _order(block: Block) -> Order:
    row, decision = block.order, block.decision
    order = Order(
        order_id=row["order_id"], oms_session=row["oms_session"],
        oms_cl_ord_id=row["oms_cl_ord_id"], book=row["book"], symbol=row["symbol"],
        side=row["side"], order_qty=Decimal(row["order_qty"]), ord_type=row["ord_type"],
        price=Decimal(row["price"]) if row["price"] else None,
        time_in_force=row["time_in_force"], broker=row["broker"],
        trade_date=decision["trade_date"])
    # The executions as the stored decision saw them: one fill of the executed quantity
    # at the block average price gives the same cum_qty and avg_px as the ledger did.
    order.ledger = FillLedger(fills=[("as-decided", Decimal(decision["executed_qty"]),
                                      Decimal(decision["avg_px"]))])
    if row.get("preallocations_json"):
        pre = json.loads(row["preallocations_json"])
        order.preallocations = tuple((a, Decimal(q)) for a, q in pre["lines"])
        order.preallocation_reason = pre["reason"]
    return order


class Redecider:
    """Decides stored blocks again under another rulebook, through AllocationFlow.decide().

    This is the reconstruction `audit replay` needs too (with the stored rulebook): the
    order from its row, the ledger from the decision, the stored versions and rotation.
    """

    def __init__(self, db: Database, config: Config, registry: Any = None) -> None:
        self.db = db
        self.registry = registry
        self._clock = _DecisionTime()
        self._alerts = _Noted()
        self._refdata: dict[str, ReferenceData] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="fixalloc-whatif-")
        # Stored reference data is parsed from files: they go to the private directory.
        self.config = config.model_copy(update={"gateway": config.gateway.model_copy(
            update={"state_dir": Path(self._tmp.name)})})
        self.flow = AllocationFlow(self.config, db, cast(Any, None), cast(Any, _Unused()),
                                   None, engine.InProcessExecutor(), self._clock,
                                   cast(Alerts, self._alerts))

    def close(self) -> None:
        self._tmp.cleanup()

    def refdata(self, version: str | None) -> ReferenceData:
        if not version:
            raise VersionUnavailable("the decision names no reference-data version")
        if version not in self._refdata:
            self._refdata[version] = refdata_at(version, self.db, self.config,
                                                cast(ReferenceData, _Unused()))
        return self._refdata[version]

    def decide(self, block: Block, rulebook: engine.Rulebook
               ) -> tuple[Any | None, tuple[str, dict[str, Any]] | None]:
        """(decision, None), or (None, (alert kind, detail)) when it would be an exception."""
        self._clock.at = dt.datetime.fromisoformat(block.decision["decided_at"])
        self._alerts.last = None
        decided = self.flow.decide(_order(block), rulebook=rulebook,
                                   refdata=self.refdata(block.decision_row["refdata_version"]),
                                   rotation_offset=int(block.decision_row["rotation_offset"]
                                                       or 0))
        return (decided[0], None) if decided is not None else (None, self._alerts.last)

    def reproduces(self, block: Block) -> bool:
        """Whether the stored inputs, under the stored rulebook, give the stored inputs hash."""
        stored = rulebook_at(block.decision["rulebook_version"], self.db, self.registry)
        decision, _ = self.decide(block, stored)
        return decision is not None and decision.inputs_hash == block.decision["inputs_hash"]


@contextmanager
def redecider(db: Database, config: Config, registry: Any = None) -> Iterator[Redecider]:
    r = Redecider(db, config, registry)
    try:
        yield r
    finally:
        r.close()


# -- comparing ---------------------------------------------------------------------------


def _causes(result: dict[str, Any]) -> list[dict[str, str]]:
    """The rules behind an account's outcome (not the scheme's plain 'allocated')."""
    return [{"rule_id": r["rule_id"], "rule_version": r["rule_version"], "reason": r["text"]}
            for r in result.get("reasons", ()) if r.get("code") != "ALLOCATED"]


def _kind(before: dict[str, Any], after: dict[str, Any]) -> str:
    b, a = before.get("status"), after.get("status")
    if a == "excluded" and b != "excluded":
        return "newly_excluded"
    if b == "excluded" and a != "excluded":
        return "no_longer_excluded"
    if "capped" in (a, b):
        return "cap_changed"
    return "quantity_changed"


def compare_results(stored: list[dict[str, Any]], proposed: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """One entry per account whose quantity, status or governing rules would differ."""
    before = {r["account_id"]: r for r in stored}
    after = {r["account_id"]: r for r in proposed}
    none: dict[str, Any] = {"status": "absent", "qty": "0", "reasons": []}
    changes = []
    for account in sorted(before.keys() | after.keys()):
        b, a = before.get(account, none), after.get(account, none)
        qb, qa = Decimal(str(b["qty"])), Decimal(str(a["qty"]))
        rules_b = [c["rule_id"] for c in _causes(b)]
        rules_a = [c["rule_id"] for c in _causes(a)]
        if qb == qa and b["status"] == a["status"] and rules_b == rules_a:
            continue
        kind = _kind(b, a)
        # The rule that explains the change: the new one for a new exclusion or cap, the
        # old one for an exclusion lifted.
        cause = (_causes(b) if kind == "no_longer_excluded" else _causes(a) or _causes(b))
        changes.append({
            "account_id": account, "change": kind, "qty_before": str(qb), "qty_after": str(qa),
            "delta": str(qa - qb), "status_before": b["status"], "status_after": a["status"],
            "rule_id": cause[0]["rule_id"] if cause else None,
            "reason": cause[0]["reason"] if cause else None,
            "rules_before": _causes(b), "rules_after": _causes(a)})
    return changes


@dataclass
class Report:
    proposed_version: str
    selection: dict[str, Any]
    blocks_compared: int = 0
    blocks_unchanged: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)
    not_comparable: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        lines = [c for b in self.changed for c in b["accounts"]]
        moved_out = sum((-Decimal(c["delta"]) for c in lines if Decimal(c["delta"]) < 0),
                        Decimal(0))
        moved_in = sum((Decimal(c["delta"]) for c in lines if Decimal(c["delta"]) > 0),
                       Decimal(0))
        return {
            "proposed_rulebook_version": self.proposed_version, "selection": self.selection,
            "totals": {
                "blocks_compared": self.blocks_compared,
                "blocks_changed": len(self.changed),
                "blocks_unchanged": self.blocks_unchanged,
                "blocks_not_comparable": len(self.not_comparable),
                "blocks_that_would_be_exceptions": sum(
                    1 for b in self.changed if b["outcome"] == "exception"),
                "accounts_changed": len(lines),
                "shares_moved_out": str(moved_out), "shares_moved_in": str(moved_in)},
            "blocks": self.changed, "not_comparable": self.not_comparable}


def _head(block: Block) -> dict[str, Any]:
    d = block.decision
    return {"alloc_id": block.alloc_id, "order_id": block.order["order_id"],
            "book": block.order["book"], "symbol": d["symbol"], "side": d["side"],
            "trade_date": d["trade_date"], "quantity": str(d["allocated_qty"]),
            "stored_rulebook_version": d["rulebook_version"],
            "stored_decision_id": d["decision_id"]}


def what_if(db: Database, config: Config, proposed: engine.Rulebook, blocks: list[Block],
            selection: dict[str, Any], registry: Any = None) -> Report:
    """Compare each block's stored decision with the proposed rulebook's."""
    report = Report(proposed.version, selection)
    with redecider(db, config, registry) as again:
        for block in blocks:
            report.blocks_compared += 1
            if block.decision["rulebook_version"] == proposed.version:
                report.blocks_unchanged += 1  # the same rules: the same decision
                continue
            try:
                decision, failed = again.decide(block, proposed)
            except VersionUnavailable as exc:
                report.not_comparable.append({**_head(block), "reason": str(exc)})
                continue
            if decision is not None and decision.inputs_hash != block.decision["inputs_hash"]:
                report.not_comparable.append({**_head(block), "reason": (
                    "the stored inputs no longer rebuild this decision's inputs hash")})
                continue
            if decision is None:
                if not again.reproduces(block):
                    report.not_comparable.append({**_head(block), "reason": (
                        "the stored inputs no longer rebuild this decision")})
                    continue
                kind, detail = failed or ("allocation_failed", {})
                report.changed.append({**_head(block), "outcome": "exception", "exception": {
                    "kind": kind, **{k: str(v) for k, v in detail.items()
                                     if k not in ("cl_ord_id", "decision_id")}},
                    "accounts": []})
                continue
            proposed_json = json.loads(decision.to_canonical_json())
            changes = compare_results(block.decision["results"], proposed_json["results"])
            if not changes:
                report.blocks_unchanged += 1
                continue
            report.changed.append({**_head(block), "outcome": "changed",
                                   "proposed_decision_id": decision.decision_id,
                                   "accounts": changes})
    return report
