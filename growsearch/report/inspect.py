"""Describe a task's view of a grown graph: which nodes the task owns, shares, froze and pruned.

`describe_view` gives one row per node; `render_text` and `render_dot` turn the rows into a text tree or a
Graphviz DOT graph (nodes coloured by owner task, frozen ones drawn with a double border).
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


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
    used_fraction: float | None  # owner-tracked nodes: share of weights this task's view uses
    own_fraction: float | None  # ... of them owned by this very task
    free_fraction: float | None  # ... unclaimed (pruned for this task, free for later ones)
    spec: str


def describe_view(graph: ModuleGraph, task: int) -> list[NodeRow]:
    rows = []
    for node_id in graph.view(task):
        node = graph.node(node_id)
        used = own = free = None
        if node.owners:
            total = sum(o.numel() for o in node.owners.values())
            used = sum(int(((o >= 0) & (o <= task)).sum()) for o in node.owners.values()) / total
            own = sum(int((o == task).sum()) for o in node.owners.values()) / total
            free = sum(int((o == FREE).sum()) for o in node.owners.values()) / total
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
                used,
                own,
                free,
                spec,
            )
        )
    return rows


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def render_text(graph: ModuleGraph, task: int) -> str:
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
        flags.append("frozen" if row.frozen else "trainable")
        if row.used_fraction is not None:
            flags.append(
                f"weights used {_percent(row.used_fraction)}, own {_percent(row.own_fraction)}, "
                f"free/pruned {_percent(row.free_fraction)}"
            )
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
    return "\n".join(lines)


def render_dot(graph: ModuleGraph, task: int) -> str:
    rows = describe_view(graph, task)
    lines = [
        f'digraph "task {task}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for row in rows:
        colour = "#dddddd" if row.role == "input" else PALETTE[row.owner % len(PALETTE)]
        label = f"{row.node_id}\\n{row.kind}\\n{row.parameters:,} params"
        if row.used_fraction is not None:
            label += f"\\nuses {_percent(row.used_fraction)}, free {_percent(row.free_fraction)}"
        peripheries = 2 if row.frozen and row.role != "input" else 1
        lines.append(f'  "{row.node_id}" [label="{label}", fillcolor="{colour}", peripheries={peripheries}];')
    for row in rows:
        for source in row.inputs:
            lines.append(f'  "{source}" -> "{row.node_id}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
