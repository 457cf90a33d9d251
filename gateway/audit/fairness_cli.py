"""`fixalloc audit fairness`: is any account or group consistently favoured over time?

    fixalloc audit fairness --from D --to D (--state-dir DIR | --config FILE)
        [--by account|tier|scheme|custodian] [--alpha A] [--correction holm|bh]
        [--format text|json|html] [--out FILE] [--chart FILE.svg|.png] [--fail-on-flag]

Exit codes: 0 report written (with --fail-on-flag: and nothing flagged); 1 something was
flagged and --fail-on-flag was given, or the database could not be read; 2 bad
arguments; 78 no record where --state-dir/--config points.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError

_PROG = "fixalloc audit fairness"


def add_command(sub: Any) -> None:
    from gateway.audit.fairness import CORRECTIONS, DEFAULT_ALPHA, GROUPINGS
    from gateway.audit.source import add_source_arguments

    cmd = sub.add_parser("fairness", help="fill rates, residual lots and prices per account "
                                          "and group over a date range, with tests for "
                                          "consistent favouring (CFTC 1.35(b)(5))")
    cmd.add_argument("--from", dest="start", required=True, metavar="DATE",
                     help="first trade date (YYYY-MM-DD)")
    cmd.add_argument("--to", dest="end", required=True, metavar="DATE",
                     help="last trade date (YYYY-MM-DD), inclusive")
    add_source_arguments(cmd)
    cmd.add_argument("--by", choices=GROUPINGS, default="account",
                     help="also report and test groups of accounts (default: accounts only)")
    cmd.add_argument("--alpha", default=str(DEFAULT_ALPHA),
                     help="flag when an adjusted p-value is below this (default 0.01)")
    cmd.add_argument("--correction", choices=CORRECTIONS, default="holm",
                     help="multiple-comparison correction: Holm (default) or "
                          "Benjamini-Hochberg")
    cmd.add_argument("--format", choices=("text", "json", "html"), default="text")
    cmd.add_argument("--out", type=Path, help="write the report here instead of stdout")
    cmd.add_argument("--chart", type=Path, metavar="FILE",
                     help="also write the fill-rate dispersion chart (.svg or .png)")
    cmd.add_argument("--fail-on-flag", action="store_true",
                     help="exit 1 when any account or group is flagged")
    cmd.set_defaults(func=_cmd_fairness)


def _fail(code: int, message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)  # noqa: T201
    return code


def _date(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None


def _arguments(args: argparse.Namespace) -> tuple[date, date, float]:
    start, end = _date("--from", args.start), _date("--to", args.end)
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    try:
        alpha = float(args.alpha)
    except ValueError:
        raise ValueError(f"--alpha {args.alpha!r} is not a number") from None
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1 (exclusive), was {args.alpha}")
    if args.chart is not None and args.chart.suffix.lower() not in (".svg", ".png"):
        raise ValueError(f"--chart {args.chart}: the file must end in .svg or .png")
    return start, end, alpha


def _cmd_fairness(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.audit.fairness import fairness_report
    from gateway.audit.fairness_chart import html_page, write_chart
    from gateway.audit.source import resolve
    from gateway.persistence.store import Database

    try:
        start, end, alpha = _arguments(args)
    except ValueError as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        source = resolve(args)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    db = Database(source.database_url)
    try:
        report = fairness_report(db, start, end, by=args.by, alpha=alpha,
                                 correction=args.correction)
    except (SQLAlchemyError, ValueError, KeyError) as exc:
        return _fail(EXIT_FAILURE, f"cannot read the record in {source.where}: "
                                   f"{str(exc).splitlines()[0]}")
    finally:
        db.dispose()
    if args.format == "json":
        text = json.dumps(report.to_json(), indent=2, sort_keys=True, default=str) + "\n"
    elif args.format == "html":
        text = html_page(report, png=False)
    else:
        text = render_text(report, source.where)
    try:
        if args.chart is not None:
            write_chart(report.spread, args.chart)
        if args.out is not None:
            args.out.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    except OSError as exc:
        return _fail(EXIT_FAILURE, f"cannot write: {exc.strerror}: {exc.filename}")
    if args.fail_on_flag and report.flagged():
        return EXIT_FAILURE
    return EXIT_OK


def _n(value: float | Decimal | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(title: str, label: str, rows: list[Any]) -> list[str]:
    head = (f"{label:<16} {'blocks':>6} {'received':>10} {'intended':>12} {'fill':>8} "
            f"{'dev%':>7} {'xlots':>5} {'exp':>6} {'odd':>4} {'bps':>6} {'p_fill':>8} "
            f"{'p_lots':>8} {'p_adj':>8}  finding")
    out = ["", title, head]
    for f in rows:
        out.append(
            f"{f.key:<16} {f.blocks:>6} {f.received:>10} {f.intended:>12} "
            f"{_n(f.fill_rate, '.5f'):>8} {_n(f.mean_deviation_pct, '.3f'):>7} "
            f"{f.extra_lots:>5} {f.extra_lots_expected:>6.1f} {f.odd_lots:>4} "
            f"{_n(f.price_bps_mean, '.2f'):>6} {_n(f.p_fill, '.2g'):>8} "
            f"{_n(f.p_lots, '.2g'):>8} {_n(f.p_adjusted, '.2g'):>8}  "
            + (f"FLAGGED {f.direction} {'; '.join(f.reasons)}".rstrip() if f.flagged else ""))
    return out


def render_text(report: Any, where: str) -> str:
    """The plain-text report: summary, method, per-account and per-group tables."""
    flagged = [f.key for f in report.flagged()]
    lines = [f"fairness {report.start} to {report.end} ({where})",
             f"blocks: {report.blocks}, assessed for fill rate: {report.blocks_assessed}; "
             f"alpha {report.alpha}",
             "flagged: " + (", ".join(flagged) if flagged else "none"),
             "", "method: " + report.method]
    lines += _table("accounts", "account", report.accounts)
    if report.groups:
        lines += _table(f"groups by {report.by}", report.by, report.groups)
    if report.spread:
        lines += ["", "fill-rate dispersion per trade date (min / q1 / median / q3 / max)"]
        lines += [f"{s.trade_date}  {s.accounts:>5} accounts  {s.minimum:.4f} / {s.q1:.4f} / "
                  f"{s.median:.4f} / {s.q3:.4f} / {s.maximum:.4f}" for s in report.spread]
    if report.not_assessed:
        lines += ["", "blocks not assessed for fill rate:"]
        lines += [f"  {b}: {why}" for b, why in report.not_assessed.items()]
    return "\n".join(lines) + "\n"
