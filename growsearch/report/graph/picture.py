"""What a picture of a grown graph shows, independent of how it is drawn.

`graph_picture(graph, task)` describes every node of the graph (not only the task's view): owner, layer,
whether it is frozen, its parameter count, for owner-tracked nodes the share of weights the task uses, owns
and leaves free (pruned or masked), for gated nodes the same of units (a unit belongs to the first task
whose gate opens it), for masked nodes the share of weights the task's mask keeps, whether it is
highlighted (on the task's view, or added by a later task in a diff), the growth move that added it where
the run records one (auto-grow: the node is then coloured by the move), and where the layout puts it. It
also counts the parameters each task owns, so every renderer (DOT, SVG/PNG, GraphML, JSON, HTML) shows the
same facts. It reads a node's tensors as numpy arrays: a graph held in memory (torch tensors) and one read
for a report without torch (`graph.checkpoint.read_graph`) give the same picture.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph, Node
from growsearch.report.graph.layout import Layout, layout_graph

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
INPUT_COLOUR = "#dddddd"
# a run that records each task's growth move (auto-grow) colours a node by the move that added it
MOVE_COLOURS = {
    "reuse_below": "#4e79a7",
    "reuse_above": "#76b7b2",
    "column": "#f28e2b",
    "widen": "#e15759",
    "backbone": "#59a14f",
    "compact": "#8cd17d",
    "mask": "#edc948",
    "adapt": "#b07aa1",
}
OTHER_MOVE_COLOUR = "#9c755f"


def task_colour(owner: int) -> str:
    return INPUT_COLOUR if owner < 0 else PALETTE[owner % len(PALETTE)]


def move_colour(move: str) -> str:
    return MOVE_COLOURS.get(move, OTHER_MOVE_COLOUR)


@dataclass(frozen=True)
class PictureNode:
    node_id: str
    kind: str
    owner: int
    layer: int | None
    frozen: bool
    parameters: int
    used_fraction: float | None  # owner-tracked nodes: share of the weights the selected task uses
    own_fraction: float | None  # ... owned by the selected task itself
    free_fraction: float | None  # ... owned by no task (pruned for the selected task, free for later ones)
    highlighted: bool
    column: int
    row: float
    shares: tuple[tuple[int, float], ...] = ()  # (owner task or FREE, share of the weights or units)
    granularity: str = "weights"  # what the fractions and shares count: weights (owners) or units (gates)
    mask_kept: float | None = None  # masked nodes: share of the weights the selected task's mask keeps
    move: str | None = None  # the growth move that added the node (its owner task's), where runs record one

    @property
    def colour(self) -> str:
        return move_colour(self.move) if self.move else task_colour(self.owner)

    def detail_lines(self) -> list[str]:
        """The lines under the node id: kind, parameter count, frozen, weight or unit shares, mask, move."""
        lines = [f"{self.kind} · {self.parameters:,} params" + (" · frozen" if self.frozen else "")]
        if self.move:
            lines.append(f"added by task {self.owner}'s {self.move}")
        if self.used_fraction is not None:
            prefix = "units: " if self.granularity == "units" else ""
            lines.append(
                f"{prefix}uses {_percent(self.used_fraction)} · own {_percent(self.own_fraction)} · "
                f"free {_percent(self.free_fraction)}"
            )
        if self.mask_kept is not None:
            lines.append(f"mask keeps {_percent(self.mask_kept)} of weights")
        return lines


@dataclass(frozen=True)
class GraphPicture:
    title: str
    task: int
    nodes: list[PictureNode]
    edges: list[tuple[str, str, bool]]  # source, target, highlighted (both ends highlighted)
    layout: Layout
    task_parameters: dict[int, int]  # parameters each task owns (owner-tracked weights by entry)
    view_parameters: dict[int, int]  # parameters in each task's view
    free_parameters: int  # owner-tracked weights no task owns
    total_parameters: int
    moves: dict[int, str] = field(default_factory=dict)  # each task's growth move, where the run records one

    def node(self, node_id: str) -> PictureNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    @property
    def tasks(self) -> list[int]:
        return sorted(self.view_parameters)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


@dataclass(frozen=True)
class Capacity:
    """How a task uses a node whose weights (owner-tracked) or units (gated) are shared out among tasks."""

    granularity: str  # "weights" or "units"
    used: float | None  # share the task's view uses (units: its gate opens)
    own: float  # share the task claimed first
    free: float  # share no task has claimed
    shares: tuple[tuple[int, float], ...]  # (owner task or FREE, share), tasks in order, FREE last


def as_array(tensor: Any) -> np.ndarray:
    """A node's tensor as a numpy array: a torch tensor's values (on the CPU, without its gradient), or the
    numpy array a graph read without torch holds."""
    return tensor.numpy(force=True) if hasattr(tensor, "numpy") else np.asarray(tensor)


def _counts(values: np.ndarray) -> dict[int, int]:
    found, amounts = np.unique(values, return_counts=True)
    return dict(zip(found.tolist(), amounts.tolist(), strict=True))


def unit_owners(node: Node) -> np.ndarray | None:
    """Per output unit of a gated node, the first task whose gate opens it (FREE: none); None: no gates."""
    if not node.gates:
        return None
    first = next(iter(node.gates.values()))
    owners = np.full(tuple(first.shape), FREE, dtype=np.int16)
    for task in sorted(node.gates):
        owners[(as_array(node.gates[task]) > 0.5) & (owners == FREE)] = task
    return owners


def node_capacity(graph: ModuleGraph, node_id: str, task: int) -> Capacity | None:
    node = graph.node(node_id)
    if node.owners:
        tensors, granularity = [as_array(o) for o in node.owners.values()], "weights"
        total = sum(o.size for o in tensors)
        used: float | None = sum(int(((o >= 0) & (o <= task)).sum()) for o in tensors) / total
    else:
        owners = unit_owners(node)
        if owners is None:
            return None
        tensors, granularity, total = [owners], "units", owners.size
        gate = node.gates.get(task)
        used = None if gate is None else int((as_array(gate) > 0.5).sum()) / total
    counts: Counter[int] = Counter()
    for tensor in tensors:
        counts.update(_counts(tensor))
    order = sorted(counts, key=lambda owner: (owner == FREE, owner))
    shares = tuple((int(owner), counts[owner] / total) for owner in order)
    return Capacity(granularity, used, counts.get(task, 0) / total, counts.get(FREE, 0) / total, shares)


def mask_kept(graph: ModuleGraph, node_id: str, task: int) -> float | None:
    """The share of the weights task `task`'s masks keep on this node; None: it has no mask there."""
    masks = graph.node(node_id).masks.get(task)
    if not masks:
        return None
    kept = sum(float((as_array(m) != 0).sum()) for m in masks.values())
    return kept / sum(math.prod(m.shape) for m in masks.values())


def parameters_by_owner(graph: ModuleGraph) -> Counter[int]:
    """Parameters owned by each task; owner-tracked weights count per entry, FREE (-1) for unclaimed ones."""
    counts: Counter[int] = Counter()
    for _node_id, node in graph.nodes():
        for name, tensor in node.weights.items():
            owners = node.owners.get(name)
            if owners is None:
                counts[node.owner] += math.prod(tensor.shape)
                continue
            for value, amount in _counts(as_array(owners)).items():
                counts[int(value)] += int(amount)
    return counts


def graph_picture(
    graph: ModuleGraph,
    task: int,
    highlight: Iterable[str] | None = None,
    title: str | None = None,
    moves: Mapping[int, str] | None = None,
) -> GraphPicture:
    """Describe the whole graph for drawing; `highlight` defaults to the nodes of `task`'s view; `moves`:
    each task's growth move (the nodes it added are coloured by it)."""
    moves = dict(moves or {})
    lit = set(graph.view(task) if highlight is None else highlight)
    layout = layout_graph(graph)
    nodes = []
    for node_id, node in graph.nodes():
        capacity = node_capacity(graph, node_id, task)
        place = layout.places[node_id]
        nodes.append(
            PictureNode(
                node_id=node_id,
                kind=node.spec.kind,
                owner=node.owner,
                layer=node.layer,
                frozen=node.frozen and node_id != INPUT,
                parameters=node.n_parameters,
                used_fraction=capacity.used if capacity else None,
                own_fraction=capacity.own if capacity else None,
                free_fraction=capacity.free if capacity else None,
                highlighted=node_id in lit,
                column=place.column,
                row=place.row,
                shares=capacity.shares if capacity else (),
                granularity=capacity.granularity if capacity else "weights",
                mask_kept=mask_kept(graph, node_id, task),
                move=moves.get(node.owner),
            )
        )
    edges = [(s, t, s in lit and t in lit) for s, t in sorted(graph.edges())]
    by_owner = parameters_by_owner(graph)
    total = graph.n_parameters()
    if title is None:
        title = (
            f"graph after task {max(graph.tasks)}, task {task}'s view highlighted: "
            f"{graph.view_parameters(task):,} of {total:,} parameters"
        )
    return GraphPicture(
        title=title,
        task=task,
        nodes=nodes,
        edges=edges,
        layout=layout,
        task_parameters={t: by_owner.get(t, 0) for t in graph.tasks},
        view_parameters={t: graph.view_parameters(t) for t in graph.tasks},
        free_parameters=by_owner.get(FREE, 0),
        total_parameters=total,
        moves=moves,
    )
