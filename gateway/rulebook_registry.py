"""The live rulebook: validated, versioned, swapped atomically, reloaded on file change.

Readers call `current()` from any thread and get an immutable Rulebook; a reload builds
the new one completely before swapping the reference, and a bad edit raises and leaves
the running version in place (DESIGN.md contract 8).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import engine
from gateway import refdata
from gateway.live_files import LiveFiles


@dataclass(frozen=True)
class RulebookVersionRecord:
    version: str
    loaded_at: dt.datetime
    actor: str
    source_files: tuple[str, ...]
    content_json: str
    diff_summary: str
    files: dict[str, str] = field(default_factory=dict)
    """The rule files' text as loaded: what a later replay or Replace decides under."""


def _diff(old: engine.Rulebook | None, new: engine.Rulebook) -> str:
    if old is None:
        return f"initial load: {len(new.restrictions)} restrictions, {len(new.schemes)} schemes"
    if old.version == new.version:
        return "no change"
    before = {r.id: r for r in old.restrictions}
    after = {r.id: r for r in new.restrictions}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    parts = []
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    if changed:
        parts.append("changed " + ", ".join(
            f"{k} (v{before[k].version}->v{after[k].version})" for k in changed))
    if dict(old.schemes) != dict(new.schemes):
        a = json.dumps(old.content.get("schemes"), sort_keys=True, indent=0).splitlines()
        b = json.dumps(new.content.get("schemes"), sort_keys=True, indent=0).splitlines()
        n = sum(1 for line in difflib.unified_diff(a, b, lineterm="", n=0)
                if line[:1] in "+-" and not line.startswith(("+++", "---")))
        parts.append(f"schemes changed ({n} lines)")
    return "; ".join(parts) or "content changed"


RULEBOOKS_KEPT = 8


class RulebookRegistry(LiveFiles[engine.Rulebook, RulebookVersionRecord]):
    """Holds the active rulebook loaded from `path` (a directory of YAML files or one file)."""

    refused = (refdata.RefDataError,)
    thread_name = "rulebook-watch"

    def __init__(self, path: str | Path,
                 on_new_version: Callable[[RulebookVersionRecord], None] | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 on_rejected: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        # The versions decisions were last made under, most recent last; older ones are
        # rebuilt from the database when a Replace needs them (posttrade/versions.py).
        self.by_version: OrderedDict[str, engine.Rulebook] = OrderedDict()
        self._on_new_version = on_new_version
        super().__init__(clock=clock, on_rejected=on_rejected)

    def _load(self) -> engine.Rulebook:
        rulebook = refdata.load_rulebook(self.path)
        self.by_version[rulebook.version] = rulebook
        self.by_version.move_to_end(rulebook.version)
        while len(self.by_version) > RULEBOOKS_KEPT:
            self.by_version.popitem(last=False)
        return rulebook

    def rulebook(self, version: str) -> engine.Rulebook | None:
        """A version loaded by this process (the one in force or an earlier one), if any."""
        return self.by_version.get(version)

    def _version(self, value: engine.Rulebook) -> str:
        return value.version

    def _record(self, old: engine.Rulebook | None, new: engine.Rulebook, actor: str,
                loaded_at: dt.datetime) -> RulebookVersionRecord:
        paths = refdata.rule_files(self.path)
        return RulebookVersionRecord(
            version=new.version, loaded_at=loaded_at, actor=actor,
            source_files=tuple(str(p) for p in paths),
            content_json=new.canonical_json(), diff_summary=_diff(old, new),
            files={p.name: p.read_text(encoding="utf-8") for p in paths},
        )

    def _publish(self, record: RulebookVersionRecord, new: engine.Rulebook) -> None:
        if self._on_new_version is not None:
            self._on_new_version(record)

    def _watch_targets(self) -> tuple[list[Path], Callable[[Path], bool]]:
        target = self.path if self.path.is_dir() else self.path.parent
        return [target], lambda _path: True
