"""Where each node of a grown graph goes in a picture: columns by layer, rows by owner task.

Columns run left to right: the input, then each layer index, then the heads (nodes without a layer index).
A layer whose nodes feed each other (a PNN layer: pre-activation and lateral adapter, then their sum) gets
one sub-column per depth inside the layer, so no edge runs vertically. Rows are grouped in one band per
owner task, in task order: PNN-like growth shows one band (a task's column, drawn sideways) per task, and
a layer shared by several tasks' modules (an MNTDP or PathNet module pool) shows as a stack of nodes of
different owners in the same column. The layout depends only on the graph's structure, so the same node
is at the same place in every renderer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from growsearch.graph.module_graph import INPUT, ModuleGraph

HEAD_GROUP = 1 << 30  # sorts after every layer index


@dataclass(frozen=True)
class Placement:
    column: int  # 0 = the input, increasing with depth
    row: float  # 0 = top; a band of rows per owner task
    group: int  # layer index, -1 for the input, HEAD_GROUP for heads


@dataclass(frozen=True)
class Layout:
    places: dict[str, Placement]
    columns: list[tuple[int, str]]  # (first column, label) of each layer group: "input", "L0", ..., "head"
    n_columns: int
    n_rows: int
    bands: dict[int, tuple[int, int]]  # owner task -> (first row, number of rows)
    owners: dict[str, int]  # node -> owner task

    def xy(self, node_id: str) -> tuple[float, float]:
        """Plot coordinates: x = column, y = -row (the first task's band on top)."""
        place = self.places[node_id]
        return float(place.column), -place.row

    def pools(self) -> dict[int, dict[int, list[str]]]:
        """Per layer index: owner task -> that task's nodes there; a layer with several owners is a pool."""
        pools: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for node_id, place in sorted(self.places.items()):
            if 0 <= place.group < HEAD_GROUP:
                pools[place.group][self.owners[node_id]].append(node_id)
        return {layer: dict(owners) for layer, owners in pools.items()}


def _group(graph: ModuleGraph, node_id: str) -> int:
    if node_id == INPUT:
        return -1
    layer = graph.node(node_id).layer
    return HEAD_GROUP if layer is None else layer


def layout_graph(graph: ModuleGraph) -> Layout:
    """Columns by layer (sub-columns for nodes that feed each other inside a layer), rows by owner."""
    groups = {node_id: _group(graph, node_id) for node_id in graph}
    depth: dict[str, int] = {}
    for node_id in graph:  # topological order: every input's depth is known first
        inside = [s for s in graph.node(node_id).inputs if groups[s] == groups[node_id]]
        depth[node_id] = 1 + max(depth[s] for s in inside) if inside else 0
    group_ids = sorted(set(groups.values()))
    first_column: dict[int, int] = {}
    column = 0
    for group in group_ids:
        first_column[group] = column
        column += 1 + max(depth[n] for n in groups if groups[n] == group)
    columns = {n: first_column[groups[n]] + depth[n] for n in groups}
    owners = {node_id: graph.node(node_id).owner for node_id in graph}

    cells: dict[tuple[int, int], list[str]] = defaultdict(list)  # (owner, column) -> nodes
    for node_id in sorted(groups):
        if node_id != INPUT:
            cells[(owners[node_id], columns[node_id])].append(node_id)
    band_owners = sorted({owner for owner, _ in cells})
    bands: dict[int, tuple[int, int]] = {}
    start = 0
    for owner in band_owners:
        height = max(len(nodes) for (o, _), nodes in cells.items() if o == owner)
        bands[owner] = (start, height)
        start += height
    n_rows = max(start, 1)

    places = {INPUT: Placement(0, (n_rows - 1) / 2, -1)}
    for (owner, col), nodes in cells.items():
        first, height = bands[owner]
        offset = (height - len(nodes)) / 2
        for index, node_id in enumerate(nodes):
            places[node_id] = Placement(col, first + offset + index, groups[node_id])
    labels = [
        (first_column[g], "input" if g == -1 else ("head" if g == HEAD_GROUP else f"L{g}")) for g in group_ids
    ]
    return Layout(places, labels, column, n_rows, bands, owners)
