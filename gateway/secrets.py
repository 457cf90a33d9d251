"""Resolve session secrets from the environment, then from a KEY=value secrets file.

The main config only ever names a secret; the value never enters the config tree, its
hash, or a log line.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.errors import SecretMissingError


def read_secrets_file(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def resolve_secret(session: str, variable: str, secrets_file: Path | None) -> str:
    value = os.environ.get(variable)
    if value is None:
        value = read_secrets_file(secrets_file).get(variable)
    if value is None:
        raise SecretMissingError(session, variable)
    return value
