"""Live, versioned reference data: accounts, positions and securities.

An operations team freezes an account or corrects a cash balance by editing the CSV
export; the change is validated, hashed, stored as a new version and handed to the
dispatcher for the next evaluation. An invalid edit is refused with file:line: reason and
the running version stays in force, as for the rulebook.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.live_files import LiveFiles
from gateway.reference import ReferenceData, describe_change


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
    ) -> None:
        self.config = config
        self._on_new_version = on_new_version
        super().__init__(clock=clock, on_rejected=on_rejected)

    def _load(self) -> ReferenceData:
        return ReferenceData.load(self.config)

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
