"""Reusing an earlier task's layer on another input (Learn to Grow's reuse and adapt, auto-grow's adapt).

A layer of a task's path is the nodes that compute its output from the previous layer's (one node, or a
column layer's pre-activation, lateral and join). Applied to a different input, the layer is repeated by
nodes that share its weights (frozen, storing none), so the function is stored, and counted, once.
"""

from __future__ import annotations

from growsearch.methods.toolkit import INPUT, GraphError, ModuleGraph


def layer_members(graph: ModuleGraph, source_in: str, source_out: str) -> list[str]:
    """The nodes computing `source_out` from `source_in` (one node, or an adapted layer's three)."""
    below = graph.ancestors(source_in) | {source_in}
    members = (graph.ancestors(source_out) | {source_out}) - below
    order = [n for n in graph if n in members]
    for node_id in order:
        outside = [i for i in graph.node(node_id).inputs if i not in members and i != source_in]
        if outside:
            raise GraphError(
                f"layer node {node_id!r} reads {outside}, outside its layer; it cannot be reused"
            )
    return order


def reuse_layer(
    graph: ModuleGraph, source_in: str, source_out: str, new_in: str, name: str, task: int, layer: int
) -> str:
    """The source layer computing `source_out` from `source_in`, applied to `new_in`: the layer itself when
    it already reads `new_in`, else nodes that share its weights (in place on `graph`, a copy the caller
    owns). Returns the node giving the layer's output."""
    if new_in == source_in:
        return source_out
    members = layer_members(graph, source_in, source_out)
    names = {source_in: new_in}
    for k, node_id in enumerate(members):
        node = graph.node(node_id)
        names[node_id] = name + ("" if node_id == source_out else f".{k}")
        inputs = [names[i] for i in node.inputs]
        if node.weights or node.shares:
            shares = node.shares or node_id
            graph.add(names[node_id], node.spec, inputs, task, merge=node.merge, layer=layer, shares=shares)
        else:  # a parameter-free join
            graph.add(
                names[node_id],
                node.spec,
                inputs,
                task,
                merge=node.merge,
                layer=layer,
                frozen=True,
                weights={},
            )
    return names[source_out]


def reusable_path(graph: ModuleGraph, task: int) -> bool:
    """Whether every layer of `task`'s path computes from the layer below alone, so each can be reused on
    another input (a column with laterals, or a widened path whose old units read their own path, cannot)."""
    path = graph.layer_nodes(task)
    try:
        for layer, node_id in path.items():
            layer_members(graph, path.get(layer - 1, INPUT), node_id)
    except GraphError:
        return False
    return True
