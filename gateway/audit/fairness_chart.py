"""Fill-rate dispersion over time: the figures per trade date, the chart, the HTML page.

Per trade date, each account's fill rate is its received quantity over its intended
quantity summed over that day's assessed blocks (gateway/audit/fairness.py defines
intended). The chart draws, per date, the min-max band and the interquartile band of
those rates around the median, against the line at 1.0 (every account got its exact
share): a band that stays narrow and centred means nobody drifts away over time.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from statistics import pstdev
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gateway.audit.fairness import FairnessReport


@dataclass(frozen=True)
class DateSpread:
    """Accounts' fill rates (received/intended over the day's blocks) on one trade date."""

    trade_date: str
    accounts: int
    minimum: float
    q1: float
    median: float
    q3: float
    maximum: float
    stdev: float


def date_spread(receipts: Iterable[Any]) -> list[DateSpread]:
    """The spread per trade date of `fairness.Receipt`s (those with an intended share)."""
    per: dict[str, dict[str, list[Decimal]]] = defaultdict(
        lambda: defaultdict(lambda: [Decimal(0), Decimal(0)]))
    for r in receipts:
        if r.intended is not None and r.intended > 0:
            acc = per[r.trade_date][r.account_id]
            acc[0] += r.received
            acc[1] += r.intended
    out = []
    for day in sorted(per):
        # Sorted by account so that the float figures do not depend on the reading order.
        rates = [float(g / e) for _a, (g, e) in sorted(per[day].items())]
        q1, med, q3 = (float(x) for x in np.quantile(rates, [0.25, 0.5, 0.75]))
        out.append(DateSpread(day, len(rates), min(rates), q1, med, q3, max(rates),
                              pstdev(rates) if len(rates) > 1 else 0.0))
    return out


def _figure(spread: Sequence[DateSpread]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The Agg canvas bound to this figure alone: no pyplot, no process-wide backend
    # switch (the daemon may draw from a thread), no display needed.
    fig = Figure(figsize=(8, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(spread))
    if spread:
        # Bars per date rather than a filled area: one date (a single day's report)
        # still shows its bands.
        lo, hi = np.array([s.minimum for s in spread]), np.array([s.maximum for s in spread])
        q1, q3 = np.array([s.q1 for s in spread]), np.array([s.q3 for s in spread])
        ax.bar(x, hi - lo, bottom=lo, width=0.8, color="#4477aa", alpha=0.25, label="min-max")
        ax.bar(x, q3 - q1, bottom=q1, width=0.5, color="#4477aa", alpha=0.6,
               label="interquartile")
        ax.plot(x, [s.median for s in spread], color="#223355", marker="_", markersize=12,
                linewidth=0.8, label="median")
        step = max(1, len(spread) // 12)
        ax.set_xticks(x[::step], [s.trade_date for s in spread][::step], rotation=30,
                      ha="right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no assessed blocks in the range", ha="center", va="center",
                transform=ax.transAxes)
    ax.axhline(1.0, color="#aa3377", linewidth=0.8, linestyle="--", label="intended")
    ax.set_ylabel("fill rate (received / intended)")
    ax.set_title("Fill-rate dispersion across accounts per trade date", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def chart_svg(spread: Sequence[DateSpread]) -> str:
    """The chart as SVG text (no XML prolog), ready to embed in an HTML page."""
    buf = io.StringIO()
    _figure(spread).savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def chart_png(spread: Sequence[DateSpread]) -> bytes:
    buf = io.BytesIO()
    _figure(spread).savefig(buf, format="png")
    return buf.getvalue()


def write_chart(spread: Sequence[DateSpread], path: Path) -> None:
    """Write the chart as .svg or .png (by the file's suffix); ValueError for another."""
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(chart_svg(spread), encoding="utf-8")
    elif suffix == ".png":
        path.write_bytes(chart_png(spread))
    else:
        raise ValueError(f"--chart {path}: the file must end in .svg or .png")


def png_data_uri(spread: Sequence[DateSpread]) -> str:
    return "data:image/png;base64," + base64.b64encode(chart_png(spread)).decode("ascii")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>fixalloc fairness {{ r.start }} to {{ r.end }}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.flagged { background: #fde2e2; }
.method { max-width: 60em; font-size: 0.9em; }
</style></head><body>
<h1>Allocation fairness, {{ r.start }} to {{ r.end }}</h1>
<p>{{ r.blocks }} blocks, {{ r.blocks_assessed }} assessed for fill rate; alpha {{ r.alpha }}.
{% if flagged %}<strong>Flagged: {{ flagged|join(", ") }}</strong>
{% else %}Nothing flagged.{% endif %}</p>
<p class="method">{{ r.method }}</p>
<figure>{{ chart|safe }}</figure>
{% for title, label, rows in tables %}{% if rows %}
<h2>{{ title }}</h2>
<table><thead><tr><th>{{ label }}</th><th>blocks</th><th>received</th><th>intended</th>
<th>fill rate</th><th>mean dev %</th><th>extra lots (expected)</th><th>odd lots (expected)</th>
<th>price bps</th><th>p fill</th><th>p lots</th><th>adjusted p</th><th>finding</th></tr></thead>
<tbody>{% for f in rows %}
<tr{% if f.flagged %} class="flagged"{% endif %}><td>{{ f.key }}</td><td>{{ f.blocks }}</td>
<td>{{ f.received }}</td><td>{{ f.intended }}</td><td>{{ num(f.fill_rate, 5) }}</td>
<td>{{ num(f.mean_deviation_pct, 3) }}</td>
<td>{{ f.extra_lots }} ({{ num(f.extra_lots_expected, 1) }})</td>
<td>{{ f.odd_lots }} ({{ num(f.odd_lots_expected, 1) }})</td>
<td>{{ num(f.price_bps_mean, 2) }}</td><td>{{ pv(f.p_fill) }}</td><td>{{ pv(f.p_lots) }}</td>
<td>{{ pv(f.p_adjusted) }}</td><td>{{ f.direction }} {{ f.reasons|join("; ") }}</td></tr>
{% endfor %}</tbody></table>{% endif %}{% endfor %}
{% if r.not_assessed %}<h2>Blocks not assessed for fill rate</h2><ul>
{% for block, why in r.not_assessed.items() %}<li>{{ block }}: {{ why }}</li>{% endfor %}
</ul>{% endif %}
</body></html>
"""


def num(value: float | Decimal | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def pv(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def html_page(report: FairnessReport, *, png: bool = False) -> str:
    """A self-contained page: the method, the chart inline (SVG, or a base64 PNG), tables."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    if png:
        chart = f'<img alt="fill-rate dispersion" src="{png_data_uri(report.spread)}">'
    else:
        chart = chart_svg(report.spread)
    tables = [("Accounts", "account", report.accounts),
              (f"Groups by {report.by}", report.by, report.groups)]
    return env.from_string(_PAGE).render(r=report, chart=chart, tables=tables,
                                         flagged=[f.key for f in report.flagged()],
                                         num=num, pv=pv)
