"""Reference data the dispatcher reads: accounts grouped by book, and the security master.

A `ReferenceData` is immutable and carries the sha256 of the files it came from, so every
decision can be traced to the exact account and security data in force.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.errors import ConfigError


@dataclass(frozen=True)
class ReferenceData:
    securities: Mapping[str, Any]
    accounts_by_book: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    version: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    """File path -> its text, as loaded (stored with the version for audit)."""

    def accounts_for(self, book: str) -> tuple[Any, ...]:
        return self.accounts_by_book.get(book, ())

    @staticmethod
    def paths(config: Config) -> list[Path]:
        rd = config.refdata
        paths = [config.resolve(rd.securities), config.resolve(rd.accounts)]
        if rd.positions:
            paths.append(config.resolve(rd.positions))
        return paths

    @classmethod
    def load(cls, config: Config) -> ReferenceData:
        """Load and validate the files named in [refdata]; errors carry file:line: reason."""
        from gateway import refdata

        rd = config.refdata
        texts: dict[str, str] = {}
        try:
            for path in cls.paths(config):
                # The loaders' own reading (BOM, NFC, a non-UTF-8 byte named with file:line).
                texts[str(path)] = refdata.read_text(path)
            securities = refdata.load_securities(config.resolve(rd.securities))
            positions = config.resolve(rd.positions) if rd.positions else None
            accounts = refdata.load_accounts(config.resolve(rd.accounts), positions)
        except refdata.RefDataError as exc:
            raise ConfigError(exc.file, exc.line, exc.reason) from exc
        grouped: dict[str, list[Any]] = {}
        for account in accounts:
            grouped.setdefault(account.book, []).append(account)
        digest = hashlib.sha256()
        # By file name, not path: the version is the content, wherever the files live (a
        # replay reloads the stored texts from one folder and must get the same version).
        for name in sorted(texts, key=lambda n: (Path(n).name, n)):
            digest.update(Path(name).name.encode() + b"\0" + texts[name].encode() + b"\0")
        return cls(securities, {k: tuple(v) for k, v in grouped.items()}, digest.hexdigest(),
                   texts)


def load_stored(config: Config, version: str, files: Mapping[str, str]) -> ReferenceData:
    """Reference data from a version stored in the database, validated exactly like files.

    The stored texts are written under the state dir and loaded by the same loaders, so a
    database-sourced gateway refuses what a file-sourced one would, with file:line.
    """
    folder = config.state_dir / "refdata-db" / version[:16]
    folder.mkdir(parents=True, exist_ok=True)
    by_name = {Path(name).name: text for name, text in files.items()}
    for name, text in by_name.items():
        (folder / name).write_text(text, encoding="utf-8")
    rd = config.refdata
    local = rd.model_copy(update={
        "securities": folder / rd.securities.name, "accounts": folder / rd.accounts.name,
        "positions": folder / rd.positions.name if rd.positions else None})
    return ReferenceData.load(config.model_copy(update={"refdata": local}))


def describe_change(old: ReferenceData | None, new: ReferenceData) -> str:
    """A one-line summary for the version record: which accounts and securities changed."""
    if old is None:
        books = ", ".join(f"{b}: {len(a)}" for b, a in sorted(new.accounts_by_book.items()))
        return f"initial load: {len(new.securities)} securities; accounts {books}"

    def index(data: ReferenceData) -> dict[str, Any]:
        return {a.account_id: a for accts in data.accounts_by_book.values() for a in accts}

    parts = []
    for what, before, after in (("accounts", index(old), index(new)),
                                ("securities", dict(old.securities), dict(new.securities))):
        added = sorted(after.keys() - before.keys())
        removed = sorted(before.keys() - after.keys())
        changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
        for verb, ids in (("added", added), ("removed", removed), ("changed", changed)):
            if ids:
                shown = ", ".join(ids[:10]) + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else "")
                parts.append(f"{what} {verb}: {shown}")
    return "; ".join(parts) or "content changed, no account or security differs"
