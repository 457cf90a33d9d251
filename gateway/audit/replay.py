"""Replay: rebuild a stored allocation's decision from the stored inputs alone, with
today's code, and prove its canonical text byte-identical to the one stored.

The inputs come from the record, never from today's files: the order row (book, side,
pre-allocations), its broker reports folded by the ledger's own rules, the rulebook and
reference-data versions the decision names (rebuilt from their stored texts by the same
loaders a Replace uses, posttrade/versions.py), the rotation offset and the decision time.
The decision is then made by `AllocationFlow.decide`, the live code path itself, so a
replay cannot drift from what the gateway does. Nothing here writes to the database
(the command opens it read-only, replay_cli.py).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import engine
from gateway.allocation_flow import AllocationFlow
from gateway.config import BookSettings, Config
from gateway.errors import ConfigError
from gateway.ledger import FillLedger
from gateway.orders import Order
from gateway.persistence.store import Database
from gateway.posttrade.versions import VersionUnavailable, refdata_at, rulebook_at
from gateway.reference import ReferenceData

CANCEL = "2"
TRANS_TYPES = {"0": "New", "1": "Replace", CANCEL: "Cancel"}
T = TypeVar("T")


@dataclass(frozen=True)
class ReplayResult:
    alloc_id: str
    outcome: str
    """identical | different | unreplayable | no_decision (a J Cancel)"""
    reason: str
    """One line: what differs, why it could not be replayed, or what a Cancel refers to."""
    trans_type: str | None = None
    order_id: str | None = None
    decision_id: str | None = None
    differences: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """How the inputs were found (fills, method), for the auditor reading the result."""
    stored_engine_version: str | None = None
    replay_engine_version: str = engine.ENGINE_VERSION
    stored_sha256: str | None = None
    replayed_sha256: str | None = None
    inputs_hash_stored: str | None = None
    inputs_hash_replayed: str | None = None

    @property
    def identical(self) -> bool:
        return self.outcome == "identical"

    @property
    def counted(self) -> bool:
        """A J Cancel carries no decision of its own, so `N of N identical` leaves it out."""
        return self.outcome != "no_decision"

    @property
    def inputs_hash_matches(self) -> bool | None:
        if self.inputs_hash_stored is None or self.inputs_hash_replayed is None:
            return None
        return self.inputs_hash_stored == self.inputs_hash_replayed

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical,
                "inputs_hash_matches": self.inputs_hash_matches}


class _Unreplayable(Exception):
    """A stored input the replay needs is missing or no longer loads as stored."""


@dataclass
class _FixedClock:
    """The decision's own time: `decide` stamps the decision with the clock's now()."""

    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass
class _Alerts:
    """Collects what `decide` would have raised, instead of writing an alert row."""

    raised: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def raise_(self, kind: str, **kwargs: Any) -> None:
        self.raised.append((kind, kwargs))


# -- the replay -----------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _roles(files: Mapping[str, str]) -> dict[str, Path | None]:
    """Which stored file is the security master, the accounts and the positions, by header:
    the record keeps the texts by path, and today's config may name other files."""
    found: dict[str, Path | None] = {"positions": None}
    for name, text in files.items():
        header = {h.strip() for h in text.lstrip("\ufeff").split("\n", 1)[0].split(",")}
        role = ("positions" if "lot_id" in header else "accounts" if "book" in header
                else "securities" if "issuer" in header else None)
        if role is not None:
            found[role] = Path(Path(name).name)
    return found


class Replayer:
    """Replays allocations of one database; caches rebuilt versions across allocations."""

    def __init__(self, db: Database, config: Config | None = None) -> None:
        self.db = db
        self.config = config
        self._tmp = tempfile.TemporaryDirectory(prefix="fixalloc-replay-")
        base = config or Config()
        # Stored reference data is written out and loaded by the same loaders; under a
        # scratch directory, never the gateway's state dir (a replay changes nothing).
        self._base = base.model_copy(update={"gateway": base.gateway.model_copy(
            update={"state_dir": Path(self._tmp.name)})})
        self._versions: dict[tuple[str, str], Any] = {}
        self._executor = engine.InProcessExecutor()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._tmp.cleanup()

    def _version(self, what: str, version: str, load: Callable[[], T]) -> T:
        """A stored version rebuilt once per replay run; why not, when it cannot be."""
        key = (what, version)
        if key not in self._versions:
            try:
                self._versions[key] = load()
            except VersionUnavailable as exc:  # missing, or its texts hash differently
                self._versions[key] = _Unreplayable(str(exc))
            except (ConfigError, ValueError) as exc:
                # ValueError: refdata.RefDataError, stored texts today's loaders refuse.
                self._versions[key] = _Unreplayable(f"the stored {what} {version[:12]} no "
                                                    f"longer loads: {exc}")
        found = self._versions[key]
        if isinstance(found, _Unreplayable):
            raise found
        return cast(T, found)

    def _reference(self, version: str) -> ReferenceData:
        row = self.db.version_row("refdata_versions", version)
        if row is None:
            raise VersionUnavailable(f"reference data {version[:12]} is not stored")
        roles = _roles(json.loads(row["content_json"]))
        config = self._base.model_copy(update={"refdata": self._base.refdata.model_copy(
            update={k: v for k, v in roles.items() if v or k == "positions"})})
        return refdata_at(version, self.db, config, ReferenceData(securities={}))

    def replay(self, alloc_id: str) -> ReplayResult:
        alloc = self.db.load_allocation(alloc_id)
        if alloc is None:
            return ReplayResult(alloc_id, "unreplayable", f"no allocation {alloc_id} in the "
                                                          "record")
        head = {"trans_type": alloc["alloc_trans_type"], "order_id": alloc["order_id"],
                "decision_id": alloc["decision_id"]}
        if alloc["alloc_trans_type"] == CANCEL:
            return ReplayResult(alloc_id, "no_decision", f"a J Cancel of {alloc['ref_alloc_id']}"
                                ": it carries no decision of its own (not counted)", **head)
        row = self.db.load_decision(alloc["decision_id"])
        if row is None or not row.get("canonical_json"):
            return ReplayResult(alloc_id, "unreplayable", f"its decision {alloc['decision_id']}"
                                " is not stored", **head)
        stored_text: str = row["canonical_json"]
        stored = json.loads(stored_text)
        known = {**head, "stored_engine_version": row.get("engine_version"),
                 "stored_sha256": _sha(stored_text), "inputs_hash_stored": row["inputs_hash"]}
        try:
            decision, notes = self._decide(alloc, row, stored)
        except _Unreplayable as exc:
            return ReplayResult(alloc_id, "unreplayable", f"cannot replay: {exc}", **known)
        if isinstance(decision, str):
            return ReplayResult(alloc_id, "different", decision, notes=notes, **known)
        text = decision.to_canonical_json()
        done = {**known, "notes": notes, "replayed_sha256": _sha(text),
                "inputs_hash_replayed": decision.inputs_hash}
        if text == stored_text:
            return ReplayResult(alloc_id, "identical", "byte-identical canonical decision",
                                **done)
        diffs = differences(stored, json.loads(text))
        what = "; ".join(diffs[:3]) + (f"; +{len(diffs) - 3} more" if len(diffs) > 3 else "")
        reason = f"differs: {what or 'the canonical text (same content, other bytes)'}"
        if row.get("engine_version") != engine.ENGINE_VERSION:
            # A deliberate behaviour change is named, not mistaken for a broken record.
            reason = (f"decided by engine version {row.get('engine_version') or 'unknown'}, "
                      f"replayed with {engine.ENGINE_VERSION}; {reason}")
        return ReplayResult(alloc_id, "different", reason, differences=diffs, **done)

    def _decide(self, alloc: Mapping[str, Any], row: Mapping[str, Any],
                stored: Mapping[str, Any]) -> tuple[Any, tuple[str, ...]]:
        """The decision `decide` makes today on the stored inputs, or a one-line reason
        (a string) when it makes none; with notes on how the inputs were found."""
        order_row = self.db.load_order(alloc["order_id"])
        if order_row is None:
            raise _Unreplayable(f"its order {alloc['order_id']} is not stored")
        version = row["rulebook_version"]
        rulebook = self._version("rulebook version", version,
                                 lambda: rulebook_at(version, self.db, None))
        if not row.get("refdata_version"):
            raise _Unreplayable("the decision names no reference-data version")
        refdata = self._version("reference data", row["refdata_version"],
                                lambda: self._reference(row["refdata_version"]))
        decided_at = datetime.fromisoformat(stored["decided_at"])
        order = _order(order_row, row.get("preallocations_json"))
        order.ledger, ledger_note = ledger_at(self.db.load_reports(order.order_id), decided_at,
                                              Decimal(stored["executed_qty"]),
                                              Decimal(stored["avg_px"]),
                                              through=row.get("last_report_id"))
        notes = [ledger_note]
        rotation = row.get("rotation_offset")
        if rotation is None:
            rotation = stored["method_params"].get("rotation_offset") or 0
            notes.append(f"rotation offset not stored with the decision; {rotation} used")
        attempts: list[tuple[Any, str]] = []
        for method, source in self._methods(order, row, stored):
            alerts = _Alerts()
            flow = AllocationFlow(self._flow_config(order.book, method), self.db,
                                  cast(Any, None), refdata, None, self._executor,
                                  _FixedClock(decided_at), alerts=cast(Any, alerts))
            decided = flow.decide(order, rulebook=rulebook, refdata=refdata,
                                  rotation_offset=int(rotation))
            if decided is None:
                kind, detail = alerts.raised[-1] if alerts.raised else ("failed", {})
                attempts.append((f"the replay makes no decision ({kind}): " + json.dumps(
                    detail.get("detail", detail), default=str), source))
                continue
            attempts.append((decided[0], source))
            if decided[0].inputs_hash == row["inputs_hash"]:
                break
        # The candidate whose inputs hash is the stored one; else the most likely one.
        chosen = attempts[-1] if not isinstance(attempts[-1][0], str) and \
            attempts[-1][0].inputs_hash == row["inputs_hash"] else attempts[0]
        return chosen[0], (*notes, chosen[1])

    def _methods(self, order: Order, row: Mapping[str, Any], stored: Mapping[str, Any]
                 ) -> list[tuple[str | None, str]]:
        """The book's method override the live request carried, most likely first.

        The record keeps the method the engine chose, not the override the request
        carried (the book's `method` in the config, which only the config hash covers):
        today's config when its hash is the decision's, else the candidates the stored
        method parameters allow, the one whose inputs hash is the stored one winning.
        """
        if order.preallocations:
            return [(None, "method: manual (pre-allocated on the order)")]
        recorded = row.get("requested_method")
        if recorded is not None:  # stored with decisions since migration 0010
            return [(recorded or None, f"method override {recorded or None!r}: as recorded "
                                       "with the decision")]
        book = self.config.book(order.book) if self.config else None
        configured = book.method if book else None
        if self.config is not None and self.config.config_hash() == row["config_hash"]:
            return [(configured, f"method override {configured!r}: the config's (its hash "
                                 "is the decision's)")]
        why = ("today's config hash differs from the decision's" if self.config
               else "no config given")
        params = stored.get("method_params", {})
        first = (params.get("methods_tried_without_participants") or [stored["method"]])[0]
        out: list[tuple[str | None, str]] = []
        for method in ([configured] if self.config else []) + [None, first]:
            if method not in [m for m, _ in out]:
                out.append((method, f"method override {method!r} (inferred: {why})"))
        return out

    def _flow_config(self, book: str, method: str | None) -> Config:
        """`decide` reads only the book's method override from the config."""
        settings = BookSettings.model_construct(name=book, broker="-", method=method)
        return self._base.model_copy(update={"books": (settings,)})


def _fold(reports: Sequence[Mapping[str, Any]], ledger: FillLedger) -> Iterator[FillLedger]:
    """The ledger after each report, by the rules `Dispatcher.apply_report` folds with."""
    for rep in reports:
        qty, px = Decimal(rep["last_qty"]), Decimal(rep["last_px"])
        if rep["exec_type"] == "F" and qty > 0:
            ledger.apply_fill(rep["exec_id"], qty, px)
            ledger.last_fill_at = rep["received_at"]
        elif rep["exec_type"] == "H":
            ledger.bust(rep.get("exec_ref_id") or "", rep["exec_id"])
        elif rep["exec_type"] == "G":
            ledger.correct(rep.get("exec_ref_id") or "", rep["exec_id"], qty, px)
        yield ledger


def ledger_at(reports: Sequence[Mapping[str, Any]], decided_at: datetime,
              executed_qty: Decimal, avg_px: Decimal, *, through: int | None = None
              ) -> tuple[FillLedger, str]:
    """The order's ledger as the live path held it when it decided, and how it was found.

    The record does not say which reports a decision saw, so: the reports received at
    or before the decision time (a Replace after a bust sees the bust; the first J does
    not); when the fold there does not give the decision's executed quantity and average
    price (a frozen test clock, a report stored while the dispatcher decided), the
    nearest report at which it does. A report answered with a DK never entered it.
    """
    usable = [r for r in reports if not r.get("dk_reason")]
    if through is not None:  # recorded with the decision: no inference needed
        seen = [r for r in usable if int(r["id"]) <= through]
        ledger = FillLedger()
        for _ in _fold(seen, ledger):
            pass
        return ledger, (f"fills: the order's broker reports through #{through}, as recorded "
                        f"with the decision ({_counts(seen)})")
    at = decided_at if decided_at.tzinfo else decided_at.replace(tzinfo=UTC)
    by_time = max((i + 1 for i, r in enumerate(usable) if r["received_at"] <= at), default=0)
    totals = [(Decimal(0), Decimal(0))] + [(led.cum_qty, led.avg_px)
                                           for led in _fold(usable, FillLedger())]
    matching = [n for n, tot in enumerate(totals) if tot == (executed_qty, avg_px)]
    cut = min(matching, key=lambda n: (abs(n - by_time), -n)) if matching else by_time
    ledger = FillLedger()
    for _ in _fold(usable[:cut], ledger):
        pass
    last = f"through report #{usable[cut - 1]['id']}" if cut else "none"
    note = f"fills: the order's broker reports {last} ({_counts(usable[:cut])})"
    if not matching:
        note += (f"; no point in its reports gives the decision's executed qty {executed_qty}"
                 f" at {avg_px}: replayed on those received by the decision time")
    elif cut != by_time:
        note += (" (where the ledger gives the decision's executed qty and price; the "
                 f"{by_time} reports received by the decision time do not)")
    return ledger, note


def _counts(reports: Sequence[Mapping[str, Any]]) -> str:
    fills = sum(1 for r in reports if r["exec_type"] == "F" and Decimal(r["last_qty"]) > 0)
    fixes = sum(1 for r in reports if r["exec_type"] in ("G", "H"))
    return f"{fills} fills, {fixes} busts/corrections"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(stored: Mapping[str, Any], replayed: Mapping[str, Any]) -> tuple[str, ...]:
    """What differs between two decision documents: by key, then per account."""
    out: list[str] = []
    for key in sorted((stored.keys() | replayed.keys()) - {"lines", "results"}):
        a, b = stored.get(key), replayed.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}: stored {_shown(a.get(k))}, replayed {_shown(b.get(k))}"
                    for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key}: stored {_shown(a)}, replayed {_shown(b)}")
    for part, fields in (("lines", ("qty", "avg_px", "lots")),
                         ("results", ("status", "qty", "reasons", "rounding"))):
        before = {x["account_id"]: x for x in stored.get(part, [])}
        after = {x["account_id"]: x for x in replayed.get(part, [])}
        changed = []
        for account in sorted(before.keys() | after.keys()):
            a, b = before.get(account, {}), after.get(account, {})
            what = [f"{f} {_shown(a.get(f, '-'))} -> {_shown(b.get(f, '-'))}"
                    for f in fields if a.get(f) != b.get(f)]
            if what:
                changed.append(f"{account} " + ", ".join(what))
        if changed:
            more = f"; +{len(changed) - 5} more" if len(changed) > 5 else ""
            out.append(f"{part} of {len(changed)} accounts: " + "; ".join(changed[:5]) + more)
    return tuple(out)


def _order(row: Mapping[str, Any], override: str | None = None) -> Order:
    """The order as `decide` reads it: identity, book, side, date and pre-allocation (a
    person's override, when the decision has one, instead of the order's)."""
    order = Order(
        order_id=row["order_id"], oms_session=row["oms_session"],
        oms_cl_ord_id=row["oms_cl_ord_id"], book=row["book"], symbol=row["symbol"],
        side=row["side"], order_qty=Decimal(row["order_qty"]), ord_type=row["ord_type"],
        price=Decimal(row["price"]) if row["price"] else None,
        time_in_force=row["time_in_force"], broker=row["broker"], trade_date=row["trade_date"])
    if override or row.get("preallocations_json"):
        pre = json.loads(override or row["preallocations_json"])
        order.preallocations = tuple((a, Decimal(q)) for a, q in pre["lines"])
        order.preallocation_reason = pre["reason"]
    return order


def replay_allocation(db: Database, alloc_id: str, *, config: Config | None = None
                      ) -> ReplayResult:
    with Replayer(db, config) as replayer:
        return replayer.replay(alloc_id)


def replay_all(db: Database, *, trade_date: str | None = None,
               config: Config | None = None) -> list[ReplayResult]:
    """Every allocation (of `trade_date`, else of the record), in the order they were made."""
    rows = db.allocations_on(trade_date) if trade_date else db.load_allocations()
    with Replayer(db, config) as replayer:
        return [replayer.replay(r["alloc_id"]) for r in rows]
