"""A small self-contained HTML page builder for reports.

Everything is inline (CSS in a style element, figures as data: URIs), so a
report opens offline and can be mailed or archived as one file; nothing is
fetched from the network. Every text goes through html.escape.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable, Sequence

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.banner { background: #fde2e2; border: 2px solid #c00; padding: 0.6em; font-weight: bold; }
.note { color: #555; font-size: 0.85em; } img { max-width: 100%; }
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def fmt_ns(ns: float | int | None) -> str:
    if ns is None:
        return "n/a"
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.0f} ns"


def fmt_num(v: float | int | None, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def img(png: bytes, alt: str) -> str:
    return (f'<img alt="{esc(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 0) -> str:
    """A table; the first `left` columns are left-aligned (names)."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{esc(v)}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[str], warnings: list[str]) -> str:
    """The whole document. Warnings (a truncated trace first) go on the
    file's first line, as a comment right after the doctype, and as the
    first thing shown."""
    first = "<!DOCTYPE html>"
    if warnings:
        first += "<!-- " + " | ".join(w.replace("--", "- -") for w in warnings) + " -->"
    banner = "".join(f'<p class="banner">{esc(w)}</p>' for w in warnings)
    return "\n".join([
        first,
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        banner,
        f"<h1>{esc(title)}</h1>",
        *sections,
        "</body></html>",
    ]) + "\n"


def write_html(out: Path | str, doc: str) -> Path:
    """Publish a report atomically: a failed write leaves no partial file."""
    from aios_lab.atomic import write_text_atomic
    from aios_lab.errors import AiosError

    out = Path(out)
    try:
        write_text_atomic(out, doc)
    except OSError as e:
        raise AiosError(f"cannot write report {out}: {e.strerror}",
                        hint="check that the folder exists and is writable") from None
    return out
