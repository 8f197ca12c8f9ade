"""Draw a `GraphPicture` as Graphviz DOT, and as SVG or PNG through Graphviz or matplotlib.

`picture_to_dot` lays the graph out left to right, one `rank=same` group per layout column (so layers line
up), nodes ordered top to bottom by owner task inside a column. `render_picture(picture, "svg" | "png",
engine=...)` returns the image bytes: `engine="graphviz"` runs Graphviz's `dot` binary (an error naming the
package to install if it is missing), `"matplotlib"` draws with matplotlib at the layout's positions, and
`"auto"` uses Graphviz when `dot` is on the PATH and matplotlib otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from html import escape

from growsearch.errors import GrowsearchError
from growsearch.report.graph.picture import GraphPicture, PictureNode, move_colour, task_colour

ENGINES = ("auto", "graphviz", "matplotlib")
IMAGE_FORMATS = ("svg", "png")
DIM_EDGE = "#c8c8c8"
BAR_WIDTH = 150  # points: the weight-ownership bar of an owner-tracked node
GRAPHVIZ_TIMEOUT = 120


class RenderError(GrowsearchError):
    """A picture cannot be drawn: unknown engine or format, Graphviz missing or failing."""


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _legend(picture: GraphPicture) -> str:
    rows = [f'<tr><td colspan="3"><b>{escape(picture.title)}</b></td></tr>']
    rows.append("<tr><td>task</td><td>owns</td><td>in its view</td></tr>")
    for task in picture.tasks:
        move = picture.moves.get(task)
        colour = move_colour(move) if move else task_colour(task)
        mark = (f" · {escape(move)}" if move else "") + (" (selected)" if task == picture.task else "")
        rows.append(
            f'<tr><td bgcolor="{colour}">task {task}{mark}</td>'
            f"<td>{picture.task_parameters[task]:,}</td><td>{picture.view_parameters[task]:,}</td></tr>"
        )
    if picture.free_parameters:
        rows.append(f"<tr><td>free / pruned</td><td>{picture.free_parameters:,}</td><td></td></tr>")
    rows.append(f'<tr><td>total</td><td colspan="2">{picture.total_parameters:,} parameters</td></tr>')
    table = '<table border="0" cellborder="1" cellspacing="0" cellpadding="3">' + "".join(rows) + "</table>"
    return f'<<font point-size="10">{table}</font>>'


def _share_colour(owner: int) -> str:
    return "#ffffff" if owner < 0 else task_colour(owner)


def _shares_label(node: PictureNode, alpha: str) -> str:
    text = "<br/>".join(escape(line) for line in [node.node_id, *node.detail_lines()])
    widths = [max(1, round(BAR_WIDTH * share)) for _, share in node.shares]
    cells = "".join(
        f'<td bgcolor="{_share_colour(owner)}{alpha}" width="{width}" height="8" fixedsize="true"></td>'
        for (owner, _), width in zip(node.shares, widths, strict=True)
    )
    return (
        f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">'
        f'<tr><td colspan="{len(widths)}">{text}</td></tr><tr>{cells}</tr></table>>'
    )


def picture_to_dot(picture: GraphPicture, name: str | None = None) -> str:
    """DOT source: highlighted nodes bold, others dimmed; frozen nodes with a double border."""
    lines = [
        f"digraph {_quote(name or f'task {picture.task}')} {{",
        "  rankdir=LR;",
        "  newrank=true;",
        "  nodesep=0.25;",
        "  ranksep=0.45;",
        '  fontname="Helvetica";',
        "  labelloc=t;",
        f"  label={_legend(picture)};",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [color="#333333", penwidth=1.4, arrowsize=0.6];',
    ]
    for node in picture.nodes:
        label = "\\n".join([node.node_id.replace("\\", "\\\\").replace('"', '\\"'), *node.detail_lines()])
        alpha = "" if node.highlighted else "50"  # dimmed: a translucent fill, grey border and text
        attributes = [f'label="{label}"', f'fillcolor="{node.colour}{alpha}"']
        if node.shares:  # owner-tracked weights: a bar under the text, one cell per owner, white = free
            attributes = [f"label={_shares_label(node, alpha)}", f'fillcolor="#ebebeb{alpha}"']
        attributes += ["penwidth=2"] if node.highlighted else ['color="#aaaaaa"', 'fontcolor="#777777"']
        if node.frozen:
            attributes.append("peripheries=2")
        lines.append(f"  {_quote(node.node_id)} [{', '.join(attributes)}];")
    columns: dict[int, list[tuple[float, str]]] = {}
    for node in picture.nodes:
        columns.setdefault(node.column, []).append((node.row, node.node_id))
    for column in sorted(columns):
        members = [node_id for _, node_id in sorted(columns[column])]
        lines.append(f"  {{ rank=same; {' '.join(_quote(m) + ';' for m in members)} }}")
        for upper, lower in zip(members, members[1:], strict=False):
            lines.append(f"  {_quote(upper)} -> {_quote(lower)} [style=invis];")
    for source, target, lit in picture.edges:
        style = "" if lit else f' [color="{DIM_EDGE}", penwidth=0.8]'
        lines.append(f"  {_quote(source)} -> {_quote(target)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graphviz_available() -> bool:
    return shutil.which("dot") is not None


def render_graphviz(dot_source: str, fmt: str) -> bytes:
    """Run Graphviz's `dot -T<fmt>` on the source and return the image."""
    binary = shutil.which("dot")
    if binary is None:
        raise RenderError(
            "Graphviz's `dot` is not installed (Debian: apt-get install graphviz); "
            "use --engine matplotlib or --engine auto"
        )
    try:
        process = subprocess.run(
            [binary, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, timeout=GRAPHVIZ_TIMEOUT
        )
    except subprocess.TimeoutExpired as error:
        raise RenderError(f"Graphviz's dot took longer than {GRAPHVIZ_TIMEOUT} s") from error
    if process.returncode != 0 or not process.stdout:
        message = process.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot -T{fmt} failed: {message[-1] if message else 'no output'}")
    return process.stdout


def resolve_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise RenderError(f"engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "graphviz" if graphviz_available() else "matplotlib"
    return engine


def render_picture(picture: GraphPicture, fmt: str, engine: str = "auto") -> bytes:
    """The picture as SVG or PNG bytes, drawn by `engine` (auto, graphviz or matplotlib)."""
    if fmt not in IMAGE_FORMATS:
        raise RenderError(f"image format {fmt!r}; expected one of {', '.join(IMAGE_FORMATS)}")
    if resolve_engine(engine) == "graphviz":
        return render_graphviz(picture_to_dot(picture), fmt)
    from growsearch.report.graph.mpl import draw_picture

    return draw_picture(picture, fmt)
