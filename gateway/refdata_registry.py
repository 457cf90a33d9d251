"""Live, versioned reference data: accounts, positions and securities.

An operations team freezes an account or corrects a cash balance by editing the CSV
export; the change is validated, hashed, stored as a new version and handed to the
dispatcher for the next evaluation. An invalid edit is refused with file:line: reason and
the running version stays in force, as for the rulebook.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.live_files import LiveFiles
from gateway.persistence.store import Database
from gateway.reference import ReferenceData, describe_change, load_stored


@dataclass(frozen=True)
class RefDataVersionRecord:
    version: str
    loaded_at: dt.datetime
    actor: str
    files: tuple[str, ...]
    diff_summary: str


class ReferenceDataRegistry(LiveFiles[ReferenceData, RefDataVersionRecord]):
    refused = (ConfigError,)
    thread_name = "refdata-watch"

    def __init__(
        self, config: Config,
        on_new_version: Callable[[RefDataVersionRecord, ReferenceData], None] | None = None,
        on_rejected: Callable[[str], None] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        db: Database | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self._on_new_version = on_new_version
        if config.refdata.source == "database" and db is None:
            raise ValueError("a database-sourced reference data registry needs the database")
        super().__init__(clock=clock, on_rejected=on_rejected)

    def _load(self) -> ReferenceData:
        if self.db is None or self.config.refdata.source == "files":
            return ReferenceData.load(self.config)
        row = self.db.latest_refdata_version()
        if row is None:
            raise ConfigError("<database>", None, "no reference data stored yet: run "
                                                  "'fixalloc refdata import --config FILE'")
        return load_stored(self.config, row["version"], json.loads(row["content_json"]))

    def _watch(self, poll_interval: float) -> None:
        if self.config.refdata.source == "files":
            super()._watch(poll_interval)
            return
        # Another instance (or an import) writes new versions to the shared database: poll.
        assert self.db is not None
        self._watching.set()  # polling the database: the next poll sees any new version
        while not self._stop.wait(max(poll_interval, 0.5)):
            row = self.db.latest_refdata_version()
            if row is None or row["version"] == self.current().version:
                continue
            try:
                self.reload("database")
            except ConfigError as exc:
                if self._on_rejected is not None:
                    self._on_rejected(str(exc))

    def _version(self, value: ReferenceData) -> str:
        return value.version

    def _record(self, old: ReferenceData | None, new: ReferenceData, actor: str,
                loaded_at: dt.datetime) -> RefDataVersionRecord:
        return RefDataVersionRecord(version=new.version, loaded_at=loaded_at, actor=actor,
                                    files=tuple(new.files),
                                    diff_summary=describe_change(old, new))

    def _publish(self, record: RefDataVersionRecord, new: ReferenceData) -> None:
        if self._on_new_version is not None:
            self._on_new_version(record, new)

    def _watch_targets(self) -> tuple[list[Path], Callable[[Path], bool]]:
        files = {p.resolve() for p in ReferenceData.paths(self.config)}
        return sorted({p.parent for p in files}), lambda path: path.resolve() in files
