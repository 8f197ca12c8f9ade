"""Draw a `GraphPicture` with matplotlib (no Graphviz needed), at the positions of its layout.

Each node is a rounded box in its owner task's colour: highlighted nodes bold, the others faded; frozen
nodes get a second border; owner-tracked nodes (PackNet's shared layers) get a bar of the share of their
weights each task owns (white: free or pruned). The node id is its own text element, and SVG output keeps
text as text (`svg.fonttype = none`), so the SVG names every node.
"""

from __future__ import annotations

import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

from growsearch.report.graph.picture import GraphPicture, PictureNode, move_colour, task_colour

COLUMN_INCHES, ROW_INCHES = 2.4, 0.8
BOX_WIDTH, BOX_HEIGHT = 0.84, 0.66  # in columns and rows
MAX_INCHES = 60.0
DPI = 100
DIM_ALPHA = 0.3


def _legend_rows(picture: GraphPicture) -> int:
    handles = len(picture.tasks) + 1 + (1 if picture.free_parameters else 0)
    return (handles + 1) // 2


def _figure(picture: GraphPicture) -> tuple[Figure, float]:
    """The figure and the share of its height above the graph (title and legend)."""
    layout = picture.layout
    width = min(MAX_INCHES, max(7.0, layout.n_columns * COLUMN_INCHES))
    header = 0.45 + 0.19 * _legend_rows(picture)  # inches
    height = min(MAX_INCHES, layout.n_rows * ROW_INCHES + 0.5 + header)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, header / height


def _box(ax, node: PictureNode, x: float, y: float) -> None:
    alpha = 1.0 if node.highlighted else DIM_ALPHA
    edge = "black" if node.highlighted else "#9a9a9a"
    fill = "#ebebeb" if node.shares else node.colour
    left, bottom = x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2
    style = "round,pad=0,rounding_size=0.08"
    width = 1.8 if node.highlighted else 0.8
    box = FancyBboxPatch(
        (left, bottom),
        BOX_WIDTH,
        BOX_HEIGHT,
        boxstyle=style,
        facecolor=to_rgba(fill, alpha),
        edgecolor=edge,
        linewidth=width,
        zorder=3,
    )
    ax.add_patch(box)
    if node.frozen:  # a second, outer border
        pad_x, pad_y = 0.05 / COLUMN_INCHES, 0.05 / ROW_INCHES  # 0.05 inch all round
        outer = FancyBboxPatch(
            (left - pad_x, bottom - pad_y),
            BOX_WIDTH + 2 * pad_x,
            BOX_HEIGHT + 2 * pad_y,
            boxstyle=style,
            facecolor="none",
            edgecolor=edge,
            linewidth=0.9,
            zorder=3,
        )
        ax.add_patch(outer)
    if node.shares:
        start = left + 0.05
        for owner, share in node.shares:
            width = (BOX_WIDTH - 0.1) * share
            colour = "#ffffff" if owner < 0 else task_colour(owner)
            bar = Rectangle((start, bottom + 0.05), width, 0.08, facecolor=colour, edgecolor="none", zorder=4)
            bar.set_alpha(alpha)
            ax.add_patch(bar)
            start += width
    text_colour = "black" if node.highlighted else "#6f6f6f"
    top = y + BOX_HEIGHT / 2 - 0.11
    ax.text(
        x, top, node.node_id, ha="center", va="center", fontsize=8, weight="bold", color=text_colour, zorder=5
    )
    for index, line in enumerate(node.detail_lines()):
        ax.text(
            x,
            top - 0.155 * (index + 1),
            line,
            ha="center",
            va="center",
            fontsize=6.5,
            color=text_colour,
            zorder=5,
        )


def _edges(ax, picture: GraphPicture) -> None:
    places = {n.node_id: picture.layout.xy(n.node_id) for n in picture.nodes}
    for source, target, lit in sorted(picture.edges, key=lambda e: e[2]):  # highlighted edges drawn last
        (x0, y0), (x1, y1) = places[source], places[target]
        arrow = FancyArrowPatch(
            (x0 + BOX_WIDTH / 2, y0),
            (x1 - BOX_WIDTH / 2, y1),
            arrowstyle="-|>",
            mutation_scale=9,
            connectionstyle="arc3,rad=0.12" if x1 - x0 > 1 else "arc3,rad=0",
            color="#333333" if lit else "#c8c8c8",
            linewidth=1.3 if lit else 0.7,
            zorder=2 if lit else 1,
            shrinkA=0,
            shrinkB=0,
        )
        ax.add_patch(arrow)


def _legend(fig: Figure, picture: GraphPicture) -> None:
    handles = [
        Patch(
            facecolor=move_colour(picture.moves[t]) if t in picture.moves else task_colour(t),
            edgecolor="black" if t == picture.task else "none",
            label=f"task {t}{f' {picture.moves[t]}' if t in picture.moves else ''}"
            f"{' (selected)' if t == picture.task else ''}: owns "
            f"{picture.task_parameters[t]:,}, view {picture.view_parameters[t]:,} params",
        )
        for t in picture.tasks
    ]
    if picture.free_parameters:
        handles.append(
            Patch(facecolor="white", edgecolor="grey", label=f"free / pruned: {picture.free_parameters:,}")
        )
    handles.append(
        Patch(facecolor="none", edgecolor="black", label="double border: frozen; faded: not highlighted")
    )
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.985 - 0.3 / fig.get_figheight()),
        ncols=2,
        fontsize=8,
        frameon=False,
    )


def draw_picture(picture: GraphPicture, fmt: str) -> bytes:
    """The picture as PNG or SVG bytes."""
    fig, header = _figure(picture)
    fig.suptitle(picture.title, fontsize=10, y=1 - 0.12 / fig.get_figheight())
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - header))
    layout = picture.layout
    ax.set_xlim(-0.5, layout.n_columns - 0.5)
    ax.set_ylim(-(layout.n_rows - 1) - 0.5, 0.75)
    ax.axis("off")
    for column, label in layout.columns:
        ax.text(column, 0.62, label, ha="left" if label != "input" else "center", fontsize=9, color="#444444")
    for node in picture.nodes:
        _box(ax, node, *layout.xy(node.node_id))
    _edges(ax, picture)
    _legend(fig, picture)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "growsearch"}):
        fig.savefig(buffer, format=fmt, dpi=DPI)
    return buffer.getvalue()
