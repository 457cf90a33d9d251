"""Partitions: the slice of an account book one process owns, evaluated and split in place.

An account book (the accounts of one request, in account-id order) is cut into contiguous
partitions, one per worker, and installed once per book version (`install_accounts`). A
decision is then a handful of short rounds over every partition (`Executor.call_partitions`),
driven by `engine.rounds`: each round sends block-level numbers and gets small answers back.
Per-account work — eligibility, caps, weights, the lot rounding, the minimum check and the
per-account outcome — stays where the accounts are; only compact columns (bytes and ints)
come back at the end.

This module names every op a round may run. Each is a top-level function so process pools
can pickle it (by reference: `engine.partition_eligibility.evaluate`, ...).

* `engine.partition_state`: installed books per space, one decision's `PartState`, sessions;
* `engine.partition_eligibility`: `evaluate`, `report`, `weigh`;
* `engine.partition_split`: `begin`, `clip`, `floor`, `top`, `extra`, `odd_clipped`,
  `check`, `gather`, `assign`, `finish`;
* `engine.status`: the status codes and flags of the columns.
"""

from __future__ import annotations

from engine.partition_eligibility import evaluate, report, weigh
from engine.partition_split import (
    assign,
    begin,
    check,
    clip,
    extra,
    finish,
    floor,
    gather,
    odd_clipped,
    top,
)
from engine.partition_state import (
    MAX_BOOKS,
    drop_space,
    install_accounts,
    installed_books,
    run_in_space,
)

__all__ = [
    "MAX_BOOKS",
    "assign",
    "begin",
    "check",
    "clip",
    "drop_space",
    "evaluate",
    "extra",
    "finish",
    "floor",
    "gather",
    "install_accounts",
    "installed_books",
    "odd_clipped",
    "report",
    "run_in_space",
    "top",
    "weigh",
]
