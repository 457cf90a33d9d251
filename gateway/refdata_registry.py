"""Live, versioned reference data: accounts, positions and securities.

An operations team freezes an account or corrects a cash balance by editing the CSV
export; the change is validated, hashed, stored as a new version and handed to the
dispatcher for the next evaluation. An invalid edit is refused with file:line: reason and
the running version stays in force, as for the rulebook.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import watch

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.reference import ReferenceData, describe_change


@dataclass(frozen=True)
class RefDataVersionRecord:
    version: str
    loaded_at: dt.datetime
    actor: str
    files: tuple[str, ...]
    diff_summary: str


class ReferenceDataRegistry:
    def __init__(
        self, config: Config,
        on_new_version: Callable[[RefDataVersionRecord, ReferenceData], None] | None = None,
        on_rejected: Callable[[str], None] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.config = config
        self._on_new_version = on_new_version
        self._on_rejected = on_rejected
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._current: ReferenceData | None = None
        self._records: list[RefDataVersionRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.reload("startup")

    def current(self) -> ReferenceData:
        data = self._current  # one reference read: atomic under the GIL
        assert data is not None
        return data

    @property
    def history(self) -> tuple[RefDataVersionRecord, ...]:
        return tuple(self._records)

    def reload(self, actor: str) -> RefDataVersionRecord:
        """Load and validate the files; raise ConfigError and keep the old version on error."""
        with self._lock:
            try:
                new = ReferenceData.load(self.config)
            except ConfigError as exc:
                self.last_error = str(exc)
                raise
            self.last_error = None
            old = self._current
            record = RefDataVersionRecord(
                version=new.version, loaded_at=self._clock(), actor=actor,
                files=tuple(new.files), diff_summary=describe_change(old, new))
            if old is not None and old.version == new.version:
                return record
            self._current = new
            self._records.append(record)
        if self._on_new_version is not None:
            self._on_new_version(record, new)
        return record

    def start_watching(self, poll_interval: float = 0.2) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(poll_interval,),
                                        name="refdata-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self, poll_interval: float) -> None:
        files = {p.resolve() for p in ReferenceData.paths(self.config)}
        folders = sorted({p.parent for p in files})
        step = int(poll_interval * 1000)
        for changes in watch(*folders, stop_event=self._stop, debounce=100, step=step,
                             raise_interrupt=False, rust_timeout=step or 200):
            if not any(Path(path).resolve() in files for _, path in changes):
                continue
            try:
                self.reload("file-watch")
            except ConfigError as exc:
                if self._on_rejected is not None:
                    self._on_rejected(str(exc))
