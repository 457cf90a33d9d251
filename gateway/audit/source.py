"""Where an `audit` command finds the record: a demo's state directory or a gateway config."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError


@dataclass(frozen=True)
class Source:
    database_url: str
    config: Any | None  # gateway.config.Config when --config was given (or the demo's)
    where: str  # for messages: the database without credentials


def add_source_arguments(cmd: argparse.ArgumentParser) -> None:
    where = cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir", type=Path,
                       help="a state directory written by `fixalloc demo --state-dir DIR`")
    where.add_argument("--config", help="a gateway's TOML file (its database_url)")


def resolve(args: argparse.Namespace) -> Source:
    """The database (and config) named by --state-dir or --config; ConfigError if absent."""
    from gateway.config import load_config

    if getattr(args, "config", None):
        config = load_config(args.config)
        url = config.database_url
        return Source(url, config, url.split("@")[-1])
    state = Path(args.state_dir)
    db_file = state / "gateway" / "fixalloc.db"
    if not db_file.is_file():
        raise ConfigError(str(state), None, f"no gateway database at {db_file} (run "
                          f"`fixalloc demo --state-dir {state}` first, or pass --config)")
    demo_config = state / "demo.toml"
    demo = load_config(str(demo_config)) if demo_config.is_file() else None
    return Source(f"sqlite:///{db_file.resolve()}", demo, str(db_file))
