"""The live rulebook: validated, versioned, swapped atomically, reloaded on file change.

Readers call `current()` from any thread and get an immutable Rulebook; a reload builds
the new one completely before swapping the reference, and a bad edit raises and leaves
the running version in place (DESIGN.md contract 8).

With `[refdata] rules_activation = "staged"` an edit is validated and kept as the staged
version, recorded as a `rulebook.staged` audit event with its files, but not put in force:
someone looks at its what-if (GET /rulebook/staged/whatif) and then activates it (a
rulebook_versions row naming who) or discards it. A restart keeps the version that was in
force, taken from the database, rather than whatever the files hold by then.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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


class NothingStaged(LookupError):
    """Activate or discard with no staged version (or not the one the caller reviewed)."""


@dataclass(frozen=True)
class StagedRulebook:
    rulebook: engine.Rulebook
    record: RulebookVersionRecord
    """Its files and its difference from the version in force when it was staged."""


class RulebookRegistry(LiveFiles[engine.Rulebook, RulebookVersionRecord]):
    """Holds the active rulebook loaded from `path` (a directory of YAML files or one file)."""

    refused = (refdata.RefDataError,)
    thread_name = "rulebook-watch"

    def __init__(self, path: str | Path,
                 on_new_version: Callable[[RulebookVersionRecord], None] | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 on_rejected: Callable[[str], None] | None = None, *,
                 config: Any = None, db: Any = None) -> None:
        """`config` (gateway.config.Config) selects the activation mode and lets the
        staged what-if read the record; `db` records staging and restores, after a restart,
        the version that was in force. Both absent: immediate activation, as before."""
        self.path = Path(path)
        self.config = config
        self.db = db
        self.activation: str = (config.refdata.rules_activation if config is not None
                                else "immediate")
        self._staged: StagedRulebook | None = None
        # The versions decisions were last made under, most recent last; older ones are
        # rebuilt from the database when a Replace needs them (posttrade/versions.py).
        self.by_version: OrderedDict[str, engine.Rulebook] = OrderedDict()
        self._on_new_version = on_new_version
        super().__init__(clock=clock, on_rejected=on_rejected)

    def _load(self) -> engine.Rulebook:
        rulebook = refdata.load_rulebook(self.path)
        self._cache(rulebook)
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

    # -- staged activation ----------------------------------------------------------------

    @property
    def staged(self) -> StagedRulebook | None:
        return self._staged

    def reload(self, actor: str) -> RulebookVersionRecord:
        """Immediate mode: load and activate. Staged mode: load and stage (see module doc)."""
        if self.activation != "staged":
            return super().reload(actor)
        if self._current is None:
            return self._start_staged(actor)
        return self.stage(actor)

    def _stored_in_force(self) -> tuple[engine.Rulebook, dict[str, Any]] | None:
        """The version the database says was in force (its newest row), if it can be rebuilt."""
        if self.db is None:
            return None
        from gateway.posttrade.versions import VersionUnavailable, rulebook_at

        rows = self.db.version_rows("rulebook_versions")
        if not rows:
            return None
        try:
            return rulebook_at(rows[-1]["version"], self.db, None), rows[-1]
        except (VersionUnavailable, refdata.RefDataError):
            return None

    def _start_staged(self, actor: str) -> RulebookVersionRecord:
        stored = self._stored_in_force()
        if stored is None:
            return super().reload(actor)  # a first start: the files are what is in force
        rulebook, row = stored
        record = RulebookVersionRecord(
            version=rulebook.version, loaded_at=self._clock(), actor=actor,
            source_files=("rulebook_versions",), content_json=rulebook.canonical_json(),
            diff_summary="in force before the restart (from the database)",
            files=json.loads(row["files_json"]))
        with self._lock:
            self._current = rulebook
            self._cache(rulebook)
            self._records.append(record)
        self._publish(record, rulebook)
        try:
            self.stage(actor)
        except self.refused as exc:
            # A bad edit waiting in the files is refused; the stored version runs.
            if self._on_rejected is not None:
                self._on_rejected(str(exc))
        return record

    def _cache(self, rulebook: engine.Rulebook) -> None:
        self.by_version[rulebook.version] = rulebook
        self.by_version.move_to_end(rulebook.version)
        while len(self.by_version) > RULEBOOKS_KEPT:
            self.by_version.popitem(last=False)

    def stage(self, actor: str) -> RulebookVersionRecord:
        """Validate the files and keep them as the staged version; the active one stays.

        Returns the active version's record with a summary of what happened (what the
        reload endpoint and the watcher report); a refused edit raises, as a reload does.
        """
        with self._lock:
            try:
                new = refdata.load_rulebook(self.path)
            except self.refused as exc:
                self.last_error = str(exc)
                raise
            self.last_error = None
            active = self.current()
            in_force = self._records[-1]
            if new.version == active.version:
                self._staged = None  # the files are back to the version in force
                return replace(in_force, diff_summary="no change from the version in force")
            if self._staged is not None and self._staged.rulebook.version == new.version:
                staged = self._staged
                return replace(in_force, diff_summary=self._staged_summary(staged))
            staged = StagedRulebook(new, self._record(active, new, actor, self._clock()))
            self._staged = staged
        self._note("rulebook.staged", staged.record, files=staged.record.files)
        return replace(in_force, diff_summary=self._staged_summary(staged))

    @staticmethod
    def _staged_summary(staged: StagedRulebook) -> str:
        return (f"staged {staged.rulebook.version[:12]} ({staged.record.diff_summary}); not "
                "in force until POST /rulebook/staged/activate")

    def activate(self, actor: str, version: str | None = None) -> RulebookVersionRecord:
        """Put the staged version in force; `version`, if given, must be the one staged."""
        with self._lock:
            staged = self._take_staged(version)
            old = self.current()
            record = replace(
                staged.record, actor=actor, loaded_at=self._clock(),
                diff_summary=(f"{_diff(old, staged.rulebook)} (staged "
                              f"{staged.record.loaded_at.isoformat()} by "
                              f"{staged.record.actor})"))
            self._current = staged.rulebook
            self._cache(staged.rulebook)
            self._records.append(record)
        self._publish(record, staged.rulebook)  # stored with the actor; dispatcher told
        return record

    def _take_staged(self, version: str | None) -> StagedRulebook:
        """The staged version, unstaged; `version` must name it (what the caller reviewed)."""
        staged = self._staged
        if staged is None:
            raise NothingStaged("no rulebook version is staged")
        if version is not None and version != staged.rulebook.version:
            raise NothingStaged(f"the staged version is {staged.rulebook.version}, not "
                                f"{version}")
        self._staged = None
        return staged

    def discard(self, actor: str, version: str | None = None) -> RulebookVersionRecord:
        """Drop the staged version; the files keep the edit until someone changes them."""
        with self._lock:
            staged = self._take_staged(version)
        self._note("rulebook.staged_discarded", staged.record, by=actor)
        return staged.record

    def _note(self, kind: str, record: RulebookVersionRecord, **extra: Any) -> None:
        if self.db is None:
            return
        self.db.append_event(kind, recorded_at=self._clock(), detail={
            "version": record.version, "staged_by": record.actor,
            "staged_at": record.loaded_at.isoformat(), "change": record.diff_summary,
            **extra})
