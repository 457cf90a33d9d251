"""Reference data the dispatcher reads: accounts grouped by book, and the security master."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.errors import ConfigError


@dataclass(frozen=True)
class ReferenceData:
    securities: Mapping[str, Any]
    accounts_by_book: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def accounts_for(self, book: str) -> tuple[Any, ...]:
        return self.accounts_by_book.get(book, ())

    @classmethod
    def load(cls, config: Config) -> ReferenceData:
        """Load and validate the files named in [refdata]; errors carry file:line: reason."""
        from gateway import refdata

        rd = config.refdata
        try:
            securities = refdata.load_securities(config.resolve(rd.securities))
            positions = config.resolve(rd.positions) if rd.positions else None
            accounts = refdata.load_accounts(config.resolve(rd.accounts), positions)
        except refdata.RefDataError as exc:
            raise ConfigError(exc.file, exc.line, exc.reason) from exc
        grouped: dict[str, list[Any]] = {}
        for account in accounts:
            grouped.setdefault(account.book, []).append(account)
        return cls(securities, {k: tuple(v) for k, v in grouped.items()})
