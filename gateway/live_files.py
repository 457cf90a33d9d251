"""A value loaded from files, validated, versioned and swapped atomically; reloaded on change.

The rulebook and the reference data follow the same contract (DESIGN.md contract 8): a
change is validated and hashed before it replaces anything, readers always see one whole
version, and an invalid edit is refused with file:line while the running version stays.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from watchfiles import watch

T = TypeVar("T")
R = TypeVar("R")


HISTORY_KEPT = 50
"""Version records kept in memory for /rulebook and /refdata (all are in the database)."""


class LiveFiles(Generic[T, R]):
    """Subclasses say how to load, version, record and publish; this class does the rest."""

    refused: tuple[type[Exception], ...] = ()
    """Load errors that refuse an edit (and keep the running version) rather than crash."""
    thread_name = "files-watch"

    def __init__(self, *, clock: Callable[[], dt.datetime] | None,
                 on_rejected: Callable[[str], None] | None) -> None:
        self._on_rejected = on_rejected
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._current: T | None = None
        # The latest versions only: every one is stored in the database, and a daemon
        # edited all week must not keep each version's files in memory.
        self._records: deque[R] = deque(maxlen=HISTORY_KEPT)
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.reload("startup")

    # -- what a subclass provides -----------------------------------------------------------

    def _load(self) -> T:
        raise NotImplementedError

    def _version(self, value: T) -> str:
        raise NotImplementedError

    def _record(self, old: T | None, new: T, actor: str, loaded_at: dt.datetime) -> R:
        raise NotImplementedError

    def _publish(self, record: R, new: T) -> None:
        raise NotImplementedError

    def _watch_targets(self) -> tuple[list[Path], Callable[[Path], bool]]:
        """Folders to watch, and which changed paths in them matter."""
        raise NotImplementedError

    # -- the shared contract --------------------------------------------------------------

    def current(self) -> T:
        value = self._current  # one reference read: atomic under the GIL
        assert value is not None
        return value

    @property
    def history(self) -> tuple[R, ...]:
        return tuple(self._records)

    def reload(self, actor: str) -> R:
        """Load, validate and activate; on a refused error raise it and keep the old version."""
        with self._lock:
            try:
                new = self._load()
            except self.refused as exc:
                self.last_error = str(exc)
                raise
            self.last_error = None
            old = self._current
            record = self._record(old, new, actor, self._clock())
            if old is not None and self._version(old) == self._version(new):
                return record
            self._current = new
            self._records.append(record)
        self._publish(record, new)
        return record

    def start_watching(self, poll_interval: float = 0.2) -> None:
        """Reload on file change in a daemon thread (measured: live ~0.3 s after the edit)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(poll_interval,),
                                        name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._watching.clear()

    def wait_watching(self, timeout: float) -> bool:
        """Block until the watcher is subscribed: an edit made after this is seen."""
        return self._watching.wait(timeout)

    def _watch(self, poll_interval: float) -> None:
        folders, relevant = self._watch_targets()
        step = int(poll_interval * 1000)
        # watch() subscribes before its first yield; with yield_on_timeout it yields an
        # empty batch within rust_timeout even when nothing changed, which is the moment
        # the watcher is known to be listening. It returns once the stop event is set.
        for changes in watch(*folders, stop_event=self._stop, debounce=100, step=step,
                             raise_interrupt=False, rust_timeout=step or 200,
                             yield_on_timeout=True):
            self._watching.set()
            if not changes or not any(relevant(Path(path)) for _, path in changes):
                continue
            try:
                self.reload("file-watch")
            except self.refused as exc:
                # The running version stays active; operators and the audit trail hear why.
                if self._on_rejected is not None:
                    self._on_rejected(str(exc))
