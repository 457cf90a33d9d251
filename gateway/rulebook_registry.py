"""The live rulebook: validated, versioned, swapped atomically, reloaded on file change.

Readers call `current()` from any thread and get an immutable Rulebook; a reload builds
the new one completely before swapping the reference, and a bad edit raises and leaves
the running version in place (DESIGN.md contract 8).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import watch

import engine
from gateway import refdata


@dataclass(frozen=True)
class RulebookVersionRecord:
    version: str
    loaded_at: dt.datetime
    actor: str
    source_files: tuple[str, ...]
    content_json: str
    diff_summary: str


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


class RulebookRegistry:
    """Holds the active rulebook loaded from `path` (a directory of YAML files or one file)."""

    def __init__(self, path: str | Path,
                 on_new_version: Callable[[RulebookVersionRecord], None] | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 on_rejected: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self._on_new_version = on_new_version
        self._on_rejected = on_rejected
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._current: engine.Rulebook | None = None
        self._records: list[RulebookVersionRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.reload("startup")

    def current(self) -> engine.Rulebook:
        rb = self._current  # a single reference read: atomic under the GIL
        assert rb is not None
        return rb

    @property
    def history(self) -> tuple[RulebookVersionRecord, ...]:
        return tuple(self._records)

    def reload(self, actor: str) -> RulebookVersionRecord:
        """Load, validate and activate the files; raise RefDataError and keep the old one."""
        with self._lock:
            try:
                new = refdata.load_rulebook(self.path)
            except refdata.RefDataError as e:
                self.last_error = str(e)
                raise
            self.last_error = None
            old = self._current
            record = RulebookVersionRecord(
                version=new.version, loaded_at=self._clock(), actor=actor,
                source_files=tuple(str(p) for p in refdata.rule_files(self.path)),
                content_json=new.canonical_json(), diff_summary=_diff(old, new),
            )
            if old is not None and old.version == new.version:
                return record
            self._current = new
            self._records.append(record)
        if self._on_new_version is not None:
            self._on_new_version(record)
        return record

    def start_watching(self, poll_interval: float = 0.2) -> None:
        """Reload on file change in a daemon thread (changes are live within a second)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(poll_interval,),
                                        name="rulebook-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self, poll_interval: float) -> None:
        # watch() yields batches of changes and returns once stop_event is set.
        target = self.path if self.path.is_dir() else self.path.parent
        for _changes in watch(target, stop_event=self._stop, debounce=100,
                              step=int(poll_interval * 1000), raise_interrupt=False,
                              rust_timeout=int(poll_interval * 1000) or 200):
            try:
                self.reload("file-watch")
            except refdata.RefDataError as exc:
                # The running version stays active; operators and the audit trail hear why.
                if self._on_rejected is not None:
                    self._on_rejected(str(exc))
