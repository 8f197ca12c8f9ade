"""Describe a task's view of a grown graph: which nodes the task owns, shares, froze and pruned.

`describe_view` gives one row per node of the view; `render_text` turns the rows into a text tree.
`render_inspect` gives the whole graph, with the task's view highlighted, in any format `growsearch
inspect` offers: text, Graphviz DOT, SVG or PNG (through Graphviz or matplotlib), a self-contained HTML
page, GraphML or networkx node-link JSON. Nodes are coloured by owner task (by the growth move that added
them where the run records moves: auto-grow), frozen ones have a double
border, owner-tracked ones show the share of weights each task owns and how much is free (pruned), gated
ones the same of units, masked ones the share of weights the task's mask keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from growsearch.errors import ConfigError
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.report.graph.picture import PALETTE, GraphPicture, graph_picture, mask_kept, node_capacity
from growsearch.task_record import TaskRecord

__all__ = ["FORMATS", "PALETTE", "describe_view", "render_dot", "render_inspect", "render_text"]

FORMATS = ("text", "dot", "svg", "png", "html", "graphml", "json")
BINARY_FORMATS = ("png",)


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    kind: str
    owner: int
    role: str  # "input", "owned" (added by this task), "shared" (added by an earlier task)
    frozen: bool
    layer: int | None
    inputs: tuple[str, ...]
    merge: str | None
    parameters: int
    used_fraction: float | None  # owner-tracked (gated) nodes: share of weights (units) this task's view uses
    own_fraction: float | None  # ... of them owned (first opened) by this very task
    free_fraction: float | None  # ... unclaimed (pruned for this task, free for later ones)
    spec: str
    granularity: str = "weights"
    mask_kept: float | None = None  # share of the weights this task's mask keeps on the node


def describe_view(graph: ModuleGraph, task: int) -> list[NodeRow]:
    rows = []
    for node_id in graph.view(task):
        node = graph.node(node_id)
        capacity = node_capacity(graph, node_id, task)
        role = "input" if node_id == INPUT else ("owned" if node.owner == task else "shared")
        spec = ", ".join(f"{k}={v}" for k, v in node.spec.to_dict().items() if k != "kind")
        rows.append(
            NodeRow(
                node_id,
                node.spec.kind,
                node.owner,
                role,
                node.frozen,
                node.layer,
                node.inputs,
                node.merge,
                node.n_parameters,
                capacity.used if capacity else None,
                capacity.own if capacity else None,
                capacity.free if capacity else None,
                spec,
                capacity.granularity if capacity else "weights",
                mask_kept(graph, node_id, task),
            )
        )
    return rows


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def render_text(graph: ModuleGraph, task: int, moves: Mapping[int, str] | None = None) -> str:
    """The task's view as a text tree (`moves`: each task's growth move, where the run records one)."""
    moves = dict(moves or {})
    rows = describe_view(graph, task)
    owned = sum(r.parameters for r in rows if r.role == "owned")
    lines = [
        f"task {task}: {len(rows) - 1} modules, {graph.n_parameters([r.node_id for r in rows]):,} parameters "
        "in its "
        f"view ({owned:,} added by task {task}); graph total {graph.n_parameters():,} parameters, "
        f"{len(graph.tasks)} tasks",
    ]
    for row in rows:
        if row.role == "input":
            lines.append(f"  input {graph.input_shape}")
            continue
        flags = [row.role if row.role == "owned" else f"shared from task {row.owner}"]
        if row.owner in moves:
            flags[0] += f" by its {moves[row.owner]}"
        flags.append("frozen" if row.frozen else "trainable")
        if row.used_fraction is not None:
            flags.append(
                f"{row.granularity} used {_percent(row.used_fraction)}, own {_percent(row.own_fraction)}, "
                f"free/pruned {_percent(row.free_fraction)}"
            )
        if row.mask_kept is not None:
            flags.append(f"mask keeps {_percent(row.mask_kept)} of weights")
        merge = f" {row.merge} of " if row.merge else " <- "
        layer = (
            "head"
            if row.layer is None and row.node_id == graph.head(task)
            else ("" if row.layer is None else f"L{row.layer}")
        )
        lines.append(
            f"  {layer:>4} {row.node_id}: {row.kind}({row.spec}){merge}{', '.join(row.inputs)}"
            f"  [{'; '.join(flags)}]  {row.parameters:,} params"
        )
    picture = graph_picture(graph, task, moves=moves)
    lines.append("parameters per task (owned; in its view)" + (", and its move:" if moves else ":"))
    for t in picture.tasks:
        move = f"; {moves[t]}" if t in moves else ""
        lines.append(f"  task {t}: {picture.task_parameters[t]:,}; {picture.view_parameters[t]:,}{move}")
    if picture.free_parameters:
        lines.append(f"  free / pruned weights: {picture.free_parameters:,}")
    return "\n".join(lines)


def render_dot(graph: ModuleGraph, task: int) -> str:
    """The whole graph as Graphviz DOT, task `task`'s view highlighted and the other nodes dimmed."""
    from growsearch.report.graph.render import picture_to_dot

    return picture_to_dot(graph_picture(graph, task))


def picture_html(picture: GraphPicture, engine: str = "auto") -> str:
    """A self-contained page: the picture as SVG, parameters per task, and one row per node."""
    from growsearch.report import html_page as html
    from growsearch.report.graph.render import render_picture

    svg = render_picture(picture, "svg", engine)
    tasks = [
        (
            f"task {t}" + (f" ({picture.moves[t]})" if t in picture.moves else ""),
            picture.task_parameters[t],
            picture.view_parameters[t],
        )
        for t in picture.tasks
    ]
    tasks.append(("free / pruned", picture.free_parameters, ""))
    nodes = [
        (
            n.node_id,
            n.kind,
            "input" if n.owner < 0 else n.owner,
            "" if n.layer is None else n.layer,
            "yes" if n.frozen else "no",
            n.parameters,
            *(html.fmt_number(f, 2) if f is not None else "" for f in (n.used_fraction, n.free_fraction)),
            "yes" if n.highlighted else "",
        )
        for n in picture.nodes
    ]
    body = [
        html.figure(svg, "svg", picture.title, "graph"),
        html.section(
            "Parameters per task", html.table(("task", "owns", "in its view"), tasks, "tasks"), "tasks"
        ),
        html.section(
            "Nodes",
            html.table(
                ("node", "kind", "owner", "layer", "frozen", "parameters", "used", "free", "highlighted"),
                nodes,
                "nodes",
                text_columns=2,
            ),
            "nodes",
        ),
    ]
    return html.page(picture.title, body)


def render_picture_as(picture: GraphPicture, fmt: str, engine: str = "auto") -> str | bytes:
    """A picture in one of the graph formats (everything but text); PNG comes back as bytes."""
    from growsearch.report.graph.export import picture_to_graphml, picture_to_json
    from growsearch.report.graph.render import picture_to_dot, render_picture

    if fmt == "dot":
        return picture_to_dot(picture)
    if fmt == "svg":
        return render_picture(picture, "svg", engine).decode("utf-8")
    if fmt == "png":
        return render_picture(picture, "png", engine)
    if fmt == "html":
        return picture_html(picture, engine)
    if fmt == "graphml":
        return picture_to_graphml(picture)
    if fmt == "json":
        return picture_to_json(picture)
    raise ConfigError(f"--format {fmt!r}; expected one of {', '.join(FORMATS)}")


def render_inspect(
    graph: ModuleGraph,
    task: int,
    fmt: str = "text",
    engine: str = "auto",
    moves: Mapping[int, str] | None = None,
) -> str | bytes:
    """`growsearch inspect` output: text for the view, the whole graph with the view highlighted otherwise
    (`moves`: each task's growth move, where the run records one: its nodes are coloured by it)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "text":
        return render_text(graph, task, moves)
    return render_picture_as(graph_picture(graph, task, moves=moves), fmt, engine)


def recorded_moves(records: list[TaskRecord]) -> dict[int, str]:
    """Each committed task's growth move, where its record names one (auto-grow's `mechanism.move`)."""
    return {r.task: r.mechanism["move"] for r in records if isinstance(r.mechanism.get("move"), str)}
