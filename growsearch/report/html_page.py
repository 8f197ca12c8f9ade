"""Self-contained HTML pages: inline CSS, figures embedded as data URIs, no script, no external URL.

A page opens from disk with no network: every image is a `data:` URI (PNG, or SVG as base64 so the ids of
several matplotlib SVGs cannot clash), and the style sheet is inline.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1500px; color: #222;
       padding: 0 16px; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 16px; margin-top: 20px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
figure { margin: 12px 0 20px; } figcaption { font-size: 13px; color: #555; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 10px; font-size: 12px; overflow-x: auto; }
code { background: #f3f3f3; padding: 1px 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; } .grid figure { flex: 1 1 560px; }
.muted { color: #777; }
.warning { color: #8a1f11; background: #fdecea; padding: 0.4em 0.6em; }
"""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def data_uri(data: bytes, fmt: str) -> str:
    mime = {"png": "image/png", "svg": "image/svg+xml"}[fmt]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure(data: bytes, fmt: str, caption: str, figure_id: str) -> str:
    """An embedded image with a caption; `figure_id` names it in the page (``figure-<id>``)."""
    return (
        f'<figure id="figure-{esc(figure_id)}" class="figure">'
        f'<img src="{data_uri(data, fmt)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], table_id: str = "", text_columns: int = 1
) -> str:
    """An HTML table; the first `text_columns` columns are left-aligned, values are escaped."""

    def cell(tag: str, index: int, value: object) -> str:
        cls = ' class="text"' if index < text_columns else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, body: str, section_id: str) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, body: Iterable[str]) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{esc(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def fmt_number(value: object, decimals: int = 4) -> str:
    """A metric for a table: ``n/a`` for missing or NaN, fixed decimals for floats, grouped integers."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)
