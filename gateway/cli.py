"""The `fixalloc` command: run the daemon, the demo, the simulators and the engine tools."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, SecretMissingError


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.logging import configure

    configure(args.log_format, args.log_level)
    import structlog

    log = structlog.get_logger("fixalloc")
    node = None
    try:
        config = load_config(args.config)
        if args.state_dir:
            config = config.model_copy(update={"gateway": config.gateway.model_copy(
                update={"state_dir": Path(args.state_dir).resolve()})})
        from gateway.node import Node

        clock = None
        if args.clock_start:
            from gateway.clock import SimulatedClock

            clock = SimulatedClock(datetime.fromisoformat(args.clock_start), args.clock_speed)
            log.warning("clock.simulated", start=clock.start.isoformat(), speed=clock.speed)
        node = Node(config, clock)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        node.start()
    except (ConfigError, SecretMissingError) as exc:
        log.error("config.invalid", error=str(exc))
        print(f"fixalloc: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    except Exception as exc:
        # A database that is not up yet or a port in use: exit non-zero so systemd retries.
        log.error("node.start_failed", error=f"{type(exc).__name__}: {exc}")
        print(f"fixalloc: could not start: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
        if node is not None:
            node.stop()
        return EXIT_FAILURE
    while not stop.wait(0.5):
        pass
    node.stop()
    return EXIT_OK


def _load_config_and_refdata(path: str) -> tuple[Any, Any] | None:
    """The config and its reference-data files, or None after printing file:line: reason."""
    from gateway.config import load_config
    from gateway.reference import ReferenceData

    try:
        config = load_config(path)
        return config, ReferenceData.load(config)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)  # noqa: T201
        return None


def _cmd_config_check(args: argparse.Namespace) -> int:
    """Every load step of `run` (config, reference data, rulebook, sessions, secrets, TLS)."""
    from gateway.config import load_config
    from gateway.preflight import preflight

    try:
        config = load_config(args.config)
        checked = preflight(config)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    ref = checked.refdata
    data = (f"{len(ref.securities)} securities; accounts per book "
            f"{ {b: len(a) for b, a in ref.accounts_by_book.items()} }"
            if ref is not None else "reference data from the database")
    print(f"ok: {config.source} hash {config.config_hash()[:12]}; {data}; "  # noqa: T201
          f"rulebook {checked.rulebook.version[:12]} "
          f"({len(checked.rulebook.restrictions)} restrictions); "
          f"{checked.sessions} FIX sessions")
    return EXIT_OK


def _cmd_refdata_import(args: argparse.Namespace) -> int:
    """Validate the reference-data files and store them as the newest database version."""
    import getpass
    import json
    from datetime import UTC, datetime

    from gateway.persistence.store import Database
    from gateway.reference import describe_change, load_stored

    loaded = _load_config_and_refdata(args.config)
    if loaded is None:
        return EXIT_CONFIG
    config, data = loaded
    db = Database(config.database_url)
    try:
        db.migrate()
        latest = db.latest_refdata_version()
        previous = (load_stored(config, latest["version"], json.loads(latest["content_json"]))
                    if latest else None)
        change = describe_change(previous, data)
        stored = db.save_refdata_version(version=data.version, loaded_at=datetime.now(UTC),
                                         actor=f"import:{getpass.getuser()}", files=data.files,
                                         diff_summary=change)
    finally:
        db.dispose()
    state = "stored" if stored else "already stored"
    print(f"{state}: reference data {data.version[:12]} ({change})")  # noqa: T201
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fixalloc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway daemon")
    run.add_argument("--config", required=True, help="gateway TOML file")
    run.add_argument("--state-dir", help="override gateway.state_dir")
    run.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    run.add_argument("--log-level", default=os.environ.get("FIXALLOC_LOG_LEVEL", "INFO"))
    run.add_argument("--clock-start", help="rehearsal only: run on a simulated clock starting "
                     "at this ISO instant with its offset, e.g. 2026-11-25T15:50-05:00")
    run.add_argument("--clock-speed", type=float, default=1.0,
                     help="with --clock-start: simulated seconds per real second")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_command", required=True).add_parser("check", help="validate a config file")
    check.add_argument("config")
    check.set_defaults(func=_cmd_config_check)

    refdata = sub.add_parser("refdata", help="reference data tools").add_subparsers(
        dest="refdata_command", required=True)
    imp = refdata.add_parser("import", help="validate the CSV files named in the config and "
                                            "store them as the newest version in its database")
    imp.add_argument("--config", required=True)
    imp.set_defaults(func=_cmd_refdata_import)

    from gateway import demo

    demo.add_command(sub)
    from gateway.fix.sim import cli as sim_cli

    sim_cli.add_command(sub)
    from gateway.posttrade import operator_cli, sweep_cli

    sweep_cli.add_commands(sub)
    operator_cli.add_commands(sub)
    from gateway import archive_cli

    archive_cli.add_command(sub)
    from gateway.auth import users_cli

    users_cli.add_command(sub)
    from gateway.audit import cli as audit_cli

    audit_cli.add_commands(sub)
    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    try:
        from gateway import engine_cli
    except ImportError:  # pragma: no cover - only while the engine tools are being built
        pass
    else:
        engine_cli.add_commands(sub, bench_sub)
    from gateway import bench_bigbook, bench_e2e, bench_ingest, bench_soak, fuzz, rebalance_cli

    fuzz.add_command(bench_sub)
    bench_bigbook.add_command(bench_sub)
    bench_soak.add_command(bench_sub)
    bench_ingest.add_command(bench_sub)
    bench_e2e.add_command(bench_sub)
    rebalance_cli.add_command(sub, bench_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
