"""Unit-level growth of dense layers: DEN's expansion and split (Yoon et al., ICLR 2018).

`append_units` is `operators.widen` with values: the new units' incoming weights and biases are given, and
so are, optionally, the weights each consumer gives them; every other consumer column is zero. Entries
that already existed are never touched, and new owner-tracked entries start FREE, so tasks that cannot see
the new entries (PackNet-style owner masks: entries owned by later tasks are invisible) keep their outputs.

The other functions work on a dense stack as tensors before it is written into the graph: `w[l]` is layer
l's (units_l, units_{l-1}) weight matrix, `b[l]` its bias, the head last. DEN adds k units per layer when
its loss stays above tau (`expand_units`, then `drop_empty_units` after group sparsity), finds the units
the new head depends on (`reachable_units`), and duplicates every unit that drifted beyond sigma
(`split_units`): the copy carries the new task's weights, the original keeps the old ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import INPUT, ModuleGraph, Node
from growsearch.graph.specs import Head, Linear, Shape
from growsearch.grow.operators import widen


def dense_parameters(node: Node) -> tuple[str, str | None]:
    """The names of a dense node's weight matrix and bias (None when it has none)."""
    if not isinstance(node.spec, Linear):
        raise GraphError(f"expected a dense (Linear) node, got a {node.spec.kind}")
    weight = [name for name, value in node.weights.items() if value.dim() == 2]
    bias = [name for name, value in node.weights.items() if value.dim() == 1]
    return weight[0], bias[0] if bias else None


def append_units(
    graph: ModuleGraph,
    node_id: str,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    consumer_columns: Mapping[str, torch.Tensor] | None = None,
) -> ModuleGraph:
    """Add `len(weight)` units to the dense node `node_id`: row i of `weight` (`in_features` wide) and
    `bias[i]` are unit i's incoming weights and bias. `consumer_columns[c]` (rows x new units) gives the
    weights dense consumer `c` reads the new units with; consumers not named read them with zeros."""
    node = graph.node(node_id)
    if not isinstance(node.spec, Linear) or isinstance(node.spec, Head):
        raise GraphError(f"append_units works on hidden dense nodes; {node_id!r} is a {node.spec.kind}")
    extra = int(weight.shape[0])
    if weight.dim() != 2 or weight.shape[1] != node.spec.in_features:
        raise GraphError(
            f"new units of {node_id!r} need weights of shape (n, {node.spec.in_features}), got "
            f"{tuple(weight.shape)}"
        )
    columns = dict(consumer_columns or {})
    unknown = set(columns) - set(graph.successors(node_id))
    if unknown:
        consumers = sorted(graph.successors(node_id))
        raise GraphError(f"{sorted(unknown)} do not read {node_id!r}; its consumers are {consumers}")
    if extra == 0:
        return graph.copy()
    grown = widen(graph, node_id, extra)
    node = grown.node(node_id)
    weight_name, bias_name = dense_parameters(node)
    node.weights[weight_name][-extra:] = weight.to(node.weights[weight_name].dtype)
    if bias_name is not None:
        node.weights[bias_name][-extra:] = 0.0 if bias is None else bias.to(node.weights[bias_name].dtype)
    for consumer_id, values in columns.items():
        consumer = grown.node(consumer_id)
        if consumer.spec.in_features != node.spec.out_features:
            raise GraphError(f"consumer {consumer_id!r} reads {node_id!r} flattened; expected a dense read")
        name, _ = dense_parameters(consumer)
        target = consumer.weights[name]
        if tuple(values.shape) != (target.shape[0], extra):
            raise GraphError(
                f"consumer {consumer_id!r} needs columns of shape ({target.shape[0]}, {extra}) for the new "
                f"units, got {tuple(values.shape)}"
            )
        target[:, -extra:] = values.to(target.dtype)
    return grown


def _dense_weights(spec: Linear, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """`weight` and `bias` under the names the spec's module gives them."""
    with torch.device("meta"):
        names = spec.build().state_dict()
    return {name: (weight if value.dim() == 2 else bias).clone() for name, value in names.items()}


def dense_stack(
    input_shape: Shape, task: int, w: list[torch.Tensor], b: list[torch.Tensor], acts: list[str | None]
) -> ModuleGraph:
    """A dense stack held as tensors (hidden layers `L0`, `L1`, ..., then `head`) as a graph of task `task`,
    so that it runs through the compiler like any other view."""
    graph, previous = ModuleGraph(input_shape), INPUT
    flatten = len(input_shape) > 1
    for i, (weight, bias) in enumerate(zip(w, b, strict=True)):
        is_head = i == len(w) - 1
        cls, act = (Head, None) if is_head else (Linear, acts[i])
        spec = cls(weight.shape[1], weight.shape[0], activation=act, flatten=flatten and i == 0)
        node_id = "head" if is_head else f"L{i}"
        graph.add(node_id, spec, [previous], task, weights=_dense_weights(spec, weight, bias))
        previous = node_id
    graph.set_head(task, previous)
    return graph


def stack_tensors(graph: ModuleGraph) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The weights and biases of a `dense_stack` graph, layer by layer, the head last."""
    w, b = [], []
    for node_id in [n for n in graph.node_ids() if n != INPUT]:
        weight, bias = dense_parameters(graph.node(node_id))
        w.append(graph.node(node_id).weights[weight].clone())
        b.append(graph.node(node_id).weights[bias].clone())
    return w, b


def reachable_units(w: list[torch.Tensor]) -> list[torch.Tensor]:
    """Breadth-first search from the head along non-zero weights: a bool mask per hidden layer of the units
    the head depends on."""
    reach = (w[-1] != 0).any(0)
    selected = [reach]
    for layer in range(len(w) - 2, 0, -1):
        reach = (w[layer][reach] != 0).any(0)
        selected.insert(0, reach)
    return selected


def expand_units(w: list[torch.Tensor], b: list[torch.Tensor], k: int) -> dict[int, torch.Tensor]:
    """k fresh units per hidden layer, bottom up (in place); consumers read them with small random weights.
    Returns the new units' rows per layer."""
    groups = {}
    for layer in range(len(w) - 1):
        fresh = torch.nn.Linear(w[layer].shape[1], k)
        groups[layer] = torch.arange(len(b[layer]), len(b[layer]) + k)
        w[layer] = torch.cat([w[layer], fresh.weight.detach()])
        b[layer] = torch.cat([b[layer], fresh.bias.detach()])
        bound = (w[layer + 1].shape[1] + k) ** -0.5
        reads = torch.empty(len(w[layer + 1]), k).uniform_(-bound, bound)
        w[layer + 1] = torch.cat([w[layer + 1], reads], 1)
    return groups


def drop_empty_units(
    w: list[torch.Tensor], b: list[torch.Tensor], groups: dict[int, torch.Tensor]
) -> list[int]:
    """Remove (in place) the units among `groups` left without an incoming weight, and their outgoing
    columns. Returns how many went per layer."""
    dropped = []
    for layer, rows in groups.items():
        keep = torch.ones(len(b[layer]), dtype=torch.bool)
        keep[rows] = (w[layer][rows] != 0).any(1)
        w[layer], b[layer] = w[layer][keep], b[layer][keep]
        w[layer + 1] = w[layer + 1][:, keep]
        dropped.append(int((~keep).sum()))
    return dropped


def split_units(
    w: list[torch.Tensor],
    b: list[torch.Tensor],
    prev: list[torch.Tensor],
    prev_b: list[torch.Tensor],
    split: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """DEN's split/duplication on a dense stack (in place). Hidden layer l holds `len(prev_b[l])` old units
    (their weights were `prev[l]`, `prev_b[l]`), maybe followed by new ones; `split[l]` are old units to
    duplicate. Layout after: [old units | new units | copies of the split units]. Old units get their old
    weights back and read no copy; a copy takes its unit's current weights; the task's own units (new units,
    copies, the head) read a copy wherever they read its unit before, so the task's function is unchanged
    but for the old units' reverted drift. Returns masks of the entries that are not old (the task's)."""
    depth = len(w) - 1
    free_w, free_b = [], []
    for layer in range(depth + 1):
        weight, bias = w[layer], b[layer]
        below = split[layer - 1] if layer > 0 else torch.arange(0)
        relinked = torch.cat([weight.index_fill(1, below, 0.0), weight[:, below]], 1)  # the task's rows
        if layer == depth:
            w[layer] = relinked
            free_w.append(torch.ones_like(relinked, dtype=torch.bool))
            free_b.append(torch.ones_like(bias, dtype=torch.bool))
            continue
        n, n_in = len(prev_b[layer]), prev[layer].shape[1]
        old_rows = relinked[:n].clone()
        old_rows[:, :n_in] = prev[layer]
        old_rows[split[layer], n_in:] = 0.0  # the original of a split unit keeps only its old inputs
        old_rows[:, weight.shape[1] :] = 0.0  # nothing from the copies below
        w[layer] = torch.cat([old_rows, relinked[n:], relinked[split[layer]]])
        b[layer] = torch.cat([prev_b[layer], bias[n:], bias[split[layer]]])
        mask = torch.ones_like(w[layer], dtype=torch.bool)
        mask[:n, :n_in] = False
        free_w.append(mask)
        free_b.append(torch.arange(len(b[layer])) >= n)
    return free_w, free_b
