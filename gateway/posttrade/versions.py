"""The rulebook and reference data an earlier decision was made under.

A J Replace after a bust or correction is decided under the versions of the original
decision, so that only the executions change the split. A version this process loaded is
taken from the registry; an older one (before a restart) is rebuilt from the texts the
database keeps with every version, by the same loaders, and checked against its hash.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import engine
from gateway import refdata as refdata_files
from gateway.config import Config
from gateway.persistence.store import Database
from gateway.reference import ReferenceData, load_stored


class VersionUnavailable(RuntimeError):
    """The stored texts of a version are missing or no longer produce its hash."""


def rulebook_at(version: str, db: Database, registry: Any) -> engine.Rulebook:
    cached = registry.rulebook(version) if hasattr(registry, "rulebook") else None
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    row = db.version_row("rulebook_versions", version)
    if row is None or not row.get("files_json"):
        raise VersionUnavailable(f"rulebook version {version[:12]} has no stored rule files")
    with tempfile.TemporaryDirectory(prefix="fixalloc-rulebook-") as tmp:
        for name, text in json.loads(row["files_json"]).items():
            (Path(tmp) / Path(name).name).write_text(text, encoding="utf-8")
        rulebook = refdata_files.load_rulebook(tmp)
    if rulebook.version != version:
        raise VersionUnavailable(f"the stored rule files of {version[:12]} now load as "
                                 f"{rulebook.version[:12]}")
    return rulebook


def refdata_at(version: str, db: Database, config: Config,
               current: ReferenceData) -> ReferenceData:
    if current.version == version:
        return current
    row = db.version_row("refdata_versions", version)
    if row is None:
        raise VersionUnavailable(f"reference data {version[:12]} is not stored")
    data = load_stored(config, version, json.loads(row["content_json"]))
    if data.version != version:
        raise VersionUnavailable(f"the stored reference data {version[:12]} now loads as "
                                 f"{data.version[:12]}")
    return data
