"""The inputs of a stored decision, rebuilt from the record so its arithmetic can be shown.

The decision JSON holds each account's final quantity and reasons, not the method's
intermediate figures (weights, exact shares, remainders). Those are recomputed here from
what the database stored with the decision: the rulebook files of its version, the
reference-data files of its version, the order and the rotation offset. The rebuilt
request is trusted only when its inputs hash equals the stored one; otherwise the
explanation says the figures are not recorded rather than guess them.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import engine
from engine.model import Account
from engine.reasons import METHOD_LABEL
from gateway.persistence.store import Database

_SIDES = {s.value: s for s in engine.Side}
# Which stored reference-data file is which, by its header (the stored names are the
# paths the gateway loaded, which differ between installations).
_HEADERS = {"account_id,book": "accounts", "symbol,": "securities",
            "account_id,symbol,lot_id": "positions"}


@dataclass(frozen=True)
class Inputs:
    """What the engine was given, or why it could not be rebuilt (`missing`)."""

    rulebook: engine.Rulebook | None = None
    request: engine.AllocationRequest | None = None
    accounts: dict[str, Account] | None = None
    missing: str = ""


def _kind(text: str) -> str | None:
    head = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    for prefix, kind in sorted(_HEADERS.items(), key=lambda kv: -len(kv[0])):
        if head.startswith(prefix):
            return kind
    return None


def _rulebook(db: Database, version: str, work: Path) -> engine.Rulebook | None:
    from gateway.refdata import RefDataError, load_rulebook

    row = db.version_row("rulebook_versions", version)
    if row is None or not row.get("files_json"):
        return None
    folder = work / "rules"
    folder.mkdir()
    for name, text in json.loads(row["files_json"]).items():
        (folder / Path(name).name).write_text(text, encoding="utf-8")
    try:
        rulebook = load_rulebook(folder)
    except (RefDataError, engine.RulebookError, ValueError):
        return None
    return rulebook if rulebook.version == version else None


def _refdata(db: Database, version: str | None, work: Path
             ) -> tuple[tuple[Account, ...], dict[str, engine.Security]] | None:
    from gateway.refdata import RefDataError, load_accounts, load_securities

    row = db.version_row("refdata_versions", version) if version else None
    if row is None:
        return None
    paths: dict[str, Path] = {}
    for name, text in json.loads(row["content_json"]).items():
        kind = _kind(text)
        if kind is None:
            continue
        paths[kind] = work / Path(name).name
        paths[kind].write_text(text, encoding="utf-8")
    if "accounts" not in paths or "securities" not in paths:
        return None
    try:
        return (load_accounts(paths["accounts"], paths.get("positions")),
                load_securities(paths["securities"]))
    except (RefDataError, ValueError):
        return None


def load_inputs(db: Database, decision: dict[str, Any], row: dict[str, Any],
                order: dict[str, Any] | None) -> Inputs:
    """The rebuilt request of `decision` (its JSON), checked against its inputs hash."""
    if order is None:
        return Inputs(missing="the block order is not in the database")
    # The stored texts are parsed by the gateway's own loaders, which read files: they go
    # to a private temporary directory, never into the record.
    with tempfile.TemporaryDirectory(prefix="fixalloc-explain-") as tmp:
        work = Path(tmp)
        rulebook = _rulebook(db, decision["rulebook_version"], work)
        if rulebook is None:
            return Inputs(missing=f"the files of rulebook version "
                                  f"{decision['rulebook_version'][:12]} are not stored")
        refdata = _refdata(db, row.get("refdata_version"), work)
    if refdata is None:
        return Inputs(rulebook=rulebook, missing="the reference data (accounts, positions, "
                                                 "securities) of the decision is not stored")
    all_accounts, securities = refdata
    accounts = tuple(a for a in all_accounts if a.book == order["book"])
    # A person's override is the decision's own input; else the order's pre-allocation.
    pre_text = row.get("preallocations_json") or order.get("preallocations_json")
    pre = json.loads(pre_text) if pre_text else None
    base = dict(
        block_id=decision["block_id"], symbol=decision["symbol"], side=_SIDES[decision["side"]],
        executed_qty=Decimal(decision["executed_qty"]), avg_px=Decimal(decision["avg_px"]),
        trade_date=dt.date.fromisoformat(decision["trade_date"]), accounts=accounts,
        securities=securities, decided_at=dt.datetime.fromisoformat(decision["decided_at"]),
        preallocations={a: Decimal(q) for a, q in pre["lines"]} if pre else None,
        preallocation_reason=pre["reason"] if pre else None,
        rotation_offset=int(row.get("rotation_offset") or 0))
    # The gateway passes the book's configured method, or none (the scheme decides); the
    # inputs hash tells which one this decision had.
    for method in dict.fromkeys((None, decision["method"], *METHOD_LABEL)):
        request = engine.AllocationRequest(method=method, **base)
        if engine.inputs_hash(request) == decision["inputs_hash"]:
            return Inputs(rulebook, request, {a.account_id: a for a in accounts})
    return Inputs(rulebook=rulebook, missing="the stored reference data does not reproduce "
                                             "the decision's inputs hash")
