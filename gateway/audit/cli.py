"""`fixalloc audit ...`: verify the record, replay and explain decisions, report, fairness.

Each subcommand lives in the module that holds its work and registers itself here; every
one reads the record named by --state-dir (a demo's) or --config (a gateway's) and changes
nothing in it, except `audit checkpoint`, which appends a checkpoint.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import gateway.audit


def _modules() -> list[str]:
    """Every gateway/audit/*_cli.py adds its own subcommand (sorted by module name)."""
    return sorted(m.name for m in pkgutil.iter_modules(gateway.audit.__path__)
                  if m.name.endswith("_cli") and m.name != "cli")


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="audit evidence: verify the tamper-evident record, "
                                         "replay, explain, report, fairness")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    for name in _modules():
        importlib.import_module(f"gateway.audit.{name}").add_command(audit_sub)
