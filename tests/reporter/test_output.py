"""The output formats: CSV cells a spreadsheet would run are neutralised while numbers stay
readable; the HTML page is self-contained, escapes message text, and its SVG charts are
well-formed and carry the data they were given."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from smsgw.services.reporter.csvout import CsvWriter
from smsgw.services.reporter.htmlout import Chart, Table, write_page

SVG = "{http://www.w3.org/2000/svg}"


def test_csv_neutralises_formulas_and_keeps_numbers_readable() -> None:
    """1. Write cells that spreadsheets execute (=, +, -, @, tab, CR starts), plain numbers,
       an E.164 number, quotes, commas, newlines and non-ASCII text.
    2. Read back with the csv module: formulas start with an apostrophe; numbers, the phone
       number and ordinary text are unchanged; quoting round-trips; CRLF line ends."""
    buf = io.StringIO(newline="")
    w = CsvWriter(buf, ["a", "b"])
    cells = ["=SUM(A1)", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\tx", "\rx",
             "+447700900123", "-12", "42", "3.5", 'say "hi", then\nleave', "Grüße ☺", ""]
    for c in cells:
        w.write([c, None])
    text = buf.getvalue()
    assert text.startswith("a,b\r\n") and text.count("\r\n") == len(cells) + 1
    back = [r[0] for r in csv.reader(io.StringIO(text, newline=""))][1:]
    assert back[:6] == ["'" + c for c in cells[:6]]
    assert back[6:] == cells[6:]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_escaped_and_its_svg_holds_the_data() -> None:
    """1. Write a page with a hostile title, a table cell and chart labels from messages.
    2. No script, link, img, iframe, object or style import; no URL but the SVG namespace.
    3. The hostile text appears only as text (escaped), never as a tag.
    4. Each <svg> parses as XML; the line chart's polyline and the bar chart's rects carry
       the values given (data-values) and the bars' heights grow with them."""
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    buf = io.StringIO()
    write_page(buf, title=f"Campaign {evil}", facts=[("campaign", evil)],
               charts=[Chart("Entries", ["01:00", "02:00", evil], {"entries": [3.0, 0.0, 7.0]}),
                       Chart("Bars", ["c1", "c2"], {"p50": [1.0, 4.0]}, shape="bar")],
               tables=[Table("Top", ["keyword", "n"], [[evil, 5]])])
    page = buf.getvalue()
    p = _Collect()
    p.feed(page)
    tags = {t for t, _ in p.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base"}
    assert "<script" not in page and "<img" not in page
    assert evil in "".join(p.text)
    urls = set(re.findall(r"(?:https?:)?//[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert "url(" not in page and "@import" not in page
    svgs = re.findall(r"<svg .*?</svg>", page, re.S)
    assert len(svgs) == 2
    line, bars = (ET.fromstring(s) for s in svgs)
    poly = line.find(f"{SVG}polyline")
    assert poly is not None and poly.get("data-values") == "3 0 7"
    assert len(poly.get("points", "").split()) == 3
    rects = [r for r in bars.iter(f"{SVG}rect") if r.get("class") == "bar"]
    heights = [float(r.get("height", 0)) for r in rects]
    assert len(heights) == 2 and 0 < heights[0] < heights[1]
