"""The HTML page of a report: one self-contained file (inline CSS, inline SVG charts; no
script, font, image or stylesheet from anywhere), so it opens from disk and shows the same
offline. Every text is HTML-escaped: keywords and campaign names come from messages.

Charts are drawn here as plain SVG (a line chart per series set, a grouped bar chart): a chart
library would add a dependency and, for most, a script or external CSS to the page, for three
chart shapes that fit in this module. Each series is a `<polyline class="series">` (or
`<rect class="bar">`s) with a `data-values` attribute, which the tests read back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import IO, Any, Final, Literal

PALETTE: Final = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f")
W: Final = 720
H: Final = 260
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 28, 56
MAX_TABLE_ROWS: Final = 500  # a table longer than this shows its head; the CSV has it all

CSS: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg{background:#fff;border:1px solid #ddd;margin:8px 0}.axis{stroke:#888}.grid{stroke:#eee}
svg text{font:11px sans-serif;fill:#444}.legend{font-size:12px}p.note{color:#666}
"""


@dataclass(slots=True)
class Table:
    """A table of the page (and of a CSV): header and rows."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""


@dataclass(slots=True)
class Chart:
    """A chart: x labels and one list of values (None = no value) per series."""

    title: str
    x_labels: list[str]
    series: dict[str, list[float | None]]
    shape: Literal["line", "bar"] = "line"
    y_label: str = ""
    percent: bool = False


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.0f}"
    return str(v)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def svg_chart(chart: Chart) -> str:
    """One chart as an inline `<svg>` element."""
    values = [v for s in chart.series.values() for v in s if v is not None]
    top = 100.0 if chart.percent else _nice_max(max(values, default=0.0))
    n = max(1, len(chart.x_labels))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(chart.title)}">',
           f'<text x="{PAD_L}" y="16" font-weight="bold">{escape(chart.title)}</text>']
    for i in range(5):  # y grid and labels
        y = PAD_T + ph - ph * i / 4
        out.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/><text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{escape(_fmt(top * i / 4))}{"%" if chart.percent else ""}</text>')
    out.append(f'<line class="axis" x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{PAD_T + ph}"/>'
               f'<line class="axis" x1="{PAD_L}" x2="{W - PAD_R}" y1="{PAD_T + ph}" '
               f'y2="{PAD_T + ph}"/>')
    step = max(1, math.ceil(n / 6))
    for i in range(0, len(chart.x_labels), step):  # x labels, at most 6
        x = PAD_L + pw * (i + 0.5) / n
        out.append(f'<text x="{x:.1f}" y="{PAD_T + ph + 16}" text-anchor="middle">'
                   f'{escape(_short(chart.x_labels[i]))}</text>')
    if chart.y_label:
        out.append(f'<text x="{W - PAD_R}" y="16" text-anchor="end">'
                   f'{escape(chart.y_label)}</text>')
    draw = _bars if chart.shape == "bar" else _lines
    out += draw(chart, top, n, pw, ph)
    for k, name in enumerate(chart.series):  # legend
        x = PAD_L + (k % 4) * 165
        y = H - 22 + (k // 4) * 12
        out.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" '
                   f'fill="{PALETTE[k % len(PALETTE)]}"/><text class="legend" x="{x + 14}" '
                   f'y="{y + 1}">{escape(name[:24])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _short(label: str) -> str:
    """An axis label: an ISO hour as "MM-DD HH:MM" (its offset is in the table), else the
    first 16 characters."""
    if len(label) >= 16 and label[4] == "-" and label[10] == "T":
        return label[5:16].replace("T", " ")
    return label[:16]


def _data(values: Sequence[float | None]) -> str:
    return escape(" ".join("" if v is None else _fmt(v) for v in values))


def _lines(chart: Chart, top: float, n: int, pw: float, ph: float) -> list[str]:
    out = []
    for k, (name, values) in enumerate(chart.series.items()):
        pts = [f"{PAD_L + pw * (i + 0.5) / n:.1f},{PAD_T + ph - ph * min(v, top) / top:.1f}"
               for i, v in enumerate(values) if v is not None]
        color = PALETTE[k % len(PALETTE)]
        out.append(f'<polyline class="series" data-series="{escape(name)}" '
                   f'data-values="{_data(values)}" fill="none" stroke="{color}" '
                   f'stroke-width="2" points="{" ".join(pts)}"/>')
        if len(pts) <= 60:
            out += [f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2.5" '
                    f'fill="{color}"/>' for p in pts]
    return out


def _bars(chart: Chart, top: float, n: int, pw: float, ph: float) -> list[str]:
    out = []
    k_n = max(1, len(chart.series))
    slot = pw / n
    bw = max(1.0, slot * 0.8 / k_n)
    for k, (name, values) in enumerate(chart.series.items()):
        color = PALETTE[k % len(PALETTE)]
        out.append(f'<g class="bars" data-series="{escape(name)}" '
                   f'data-values="{_data(values)}">')
        for i, v in enumerate(values):
            if v is None:
                continue
            h = ph * min(v, top) / top
            x = PAD_L + slot * i + slot * 0.1 + bw * k
            out.append(f'<rect class="bar" x="{x:.1f}" y="{PAD_T + ph - h:.1f}" '
                       f'width="{bw:.1f}" height="{h:.1f}" fill="{color}">'
                       f'<title>{escape(name)}: {escape(_fmt(v))}</title></rect>')
        out.append("</g>")
    return out


def html_table(table: Table) -> str:
    """A table as HTML (numbers right-aligned), at most `MAX_TABLE_ROWS` rows."""
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows[:MAX_TABLE_ROWS]:
        cells = "".join(
            f'<td class="n">{escape(_fmt(v))}</td>' if isinstance(v, int | float)
            else f"<td>{escape(_fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    more = len(table.rows) - MAX_TABLE_ROWS
    note = table.note + (f" ({more} more rows in the CSV)" if more > 0 else "")
    return (f"<h2>{escape(table.title)}</h2>"
            + (f'<p class="note">{escape(note.strip())}</p>' if note.strip() else "")
            + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def write_page(fh: IO[str], *, title: str, facts: Sequence[tuple[str, Any]],
               charts: Sequence[Chart], tables: Sequence[Table]) -> None:
    """The whole page into `fh`: title, key figures, charts, tables."""
    fh.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             '<meta name="viewport" content="width=device-width,initial-scale=1">'
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "style-src 'unsafe-inline'; img-src data:\">"
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n")
    fh.write(f"<h1>{escape(title)}</h1>\n<table class=\"facts\">")
    for k, v in facts:
        fh.write(f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>")
    fh.write("</table>\n")
    for chart in charts:
        fh.write(f'<figure class="chart">{svg_chart(chart)}</figure>\n')
    for table in tables:
        fh.write(html_table(table) + "\n")
    fh.write("</body></html>\n")
