"""Gateway errors and the process exit codes systemd acts on."""

from __future__ import annotations

# Named exit codes. EXIT_CONFIG matches sysexits' EX_CONFIG so the unit's
# RestartPreventExitStatus= can stop a restart loop on a bad deploy.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
# The audit write failed before the inbound sequence number advanced: dying here
# is deliberate (crash-only). The counterparty resends once we are back.
EXIT_AUDIT = 75


class GatewayError(Exception):
    """Base class for gateway failures."""


class ConfigError(GatewayError):
    """A configuration or reference-data file is invalid."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")


class AuditWriteError(GatewayError):
    """The durable record of a FIX message could not be written."""


class SecretMissingError(GatewayError):
    """A session names a secret that is not present in the environment or secrets file."""

    def __init__(self, session: str, variable: str) -> None:
        super().__init__(f"session {session}: secret {variable} is not set")
