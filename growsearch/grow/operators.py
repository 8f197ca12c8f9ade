"""Growth operators: pure functions from a module graph to a new module graph.

Every method's decisions are compositions of these. None of them changes its argument: each returns a
changed copy, so a trial can grow a candidate from the committed graph without touching it.
Node ids are built by `graph.node_ids` (`t{task}/...`, so a reader sees at once which task added a node)
and never parsed back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph, Node
from growsearch.graph.node_ids import head_node, layer_node, task_node
from growsearch.graph.specs import LSTM, Adapter, Conv2d, Head, LastStep, Linear, NodeSpec
from growsearch.grow.backbone import head_spec, reading, split_activation


def add_head(graph: ModuleGraph, task: int, source: str, n_outputs: int) -> ModuleGraph:
    """A classifier for `task` on top of node `source`."""
    grown = graph.copy()
    shape = grown.shapes([source])[source]
    grown.add(head_node(task), head_spec(shape, n_outputs), [source], task)
    grown.set_head(task, head_node(task))
    return grown


def add_class_head(
    graph: ModuleGraph, task: int, source: str, n_classes: int, previous: int | None
) -> ModuleGraph:
    """Class-IL's one classifier: `task`'s head on `source` over the `n_classes` classes seen so far,
    starting as task `previous`'s head (None: fresh) on its classes and the inputs it read, which come
    first (DER, RPS-Net, DGMw)."""
    grown = add_head(graph, task, source, n_classes)
    if previous is not None:
        old, new = grown.node(grown.head(previous)), grown.node(grown.head(task))
        for name, value in old.weights.items():
            new.weights[name][tuple(slice(0, s) for s in value.shape)] = value
    return grown


def add_column(
    graph: ModuleGraph,
    task: int,
    specs: Sequence[NodeSpec],
    n_outputs: int,
    *,
    adapter_hidden: int | None = None,
    laterals: bool = True,
    lateral_tasks: Sequence[int] | None = None,
) -> ModuleGraph:
    """A PNN column for `task` (Rusu et al. 2016, eq. 2 with adapters): one node per layer and a head; each
    layer from the second on (and the head) also receives an adapter over the older columns' previous
    layer outputs, summed with its pre-activation. `adapter_hidden` None: the paper's n_{i-1} units.
    `lateral_tasks`: the earlier tasks whose paths the laterals read (every task's when None; a layer
    output two paths share is read once).

    A recurrent layer is a GIM module (Cossu et al. 2020, A-LSTM): at every step it reads its input
    concatenated with the older columns' hidden states at the same layer, so its input weights hold the
    lateral maps (PNN's sum of U^{k:j} h^j inside each gate); the layer after it gets no adapter over
    that layer, whose older states it has read already. With laterals, a column's last recurrent layer
    keeps its whole sequence (`L{i}.seq`) for later columns and passes its last step on (`L{i}`)."""
    grown = graph.copy()
    tasks = grown.tasks if lateral_tasks is None else list(lateral_tasks)
    old_columns = [grown.layer_nodes(t) for t in tasks] if laterals else []
    shapes = grown.shapes()
    head = head_spec(_output_shape(specs, grown.input_shape), n_outputs)
    previous = INPUT
    for layer, spec in enumerate([*specs, head]):
        is_head = layer == len(specs)
        base_id = head_node(task) if is_head else layer_node(task, layer)
        layer_index = None if is_head else layer
        if isinstance(spec, LSTM):
            older = [_sequence_of(grown, column[layer]) for column in old_columns if layer in column]
            previous = _add_recurrent(grown, task, base_id, spec, [previous, *older], shapes, laterals, layer)
            continue
        after_recurrent = layer > 0 and isinstance(specs[layer - 1], LSTM)
        sources = [column[layer - 1] for column in old_columns if layer > 0 and layer - 1 in column]
        sources = list(dict.fromkeys(sources))  # paths that share a layer: its output read once
        if not sources or after_recurrent:
            grown.add(base_id, spec, [previous], task, layer=layer_index)
            previous = base_id
            continue
        pre_spec, join_spec = split_activation(spec)
        grown.add(f"{base_id}.pre", pre_spec, [previous], task, layer=layer_index)
        adapter_id = task_node(task, f"lateral{layer}")
        adapter = _lateral_spec([shapes[n] for n in sources], pre_spec, adapter_hidden)
        grown.add(
            adapter_id,
            adapter,
            sources,
            task,
            merge="concat" if len(sources) > 1 else None,
            layer=layer_index,
        )
        grown.add(base_id, join_spec, [f"{base_id}.pre", adapter_id], task, merge="sum", layer=layer_index)
        previous = base_id
    grown.set_head(task, head_node(task))
    return grown


def _add_recurrent(
    grown: ModuleGraph,
    task: int,
    base_id: str,
    spec: LSTM,
    inputs: list[str],
    shapes: dict[str, tuple[int, ...]],
    keep_sequence: bool,
    layer: int,
) -> str:
    """A column's LSTM layer reading `inputs` (its own previous output, then older columns' sequences)
    concatenated step by step; the id of its output node."""
    extra = sum(shapes[n][1] for n in inputs[1:])
    merge = "concat" if len(inputs) > 1 else None
    if spec.return_sequence or not keep_sequence:
        grown.add(
            base_id, replace(spec, input_size=spec.input_size + extra), inputs, task, merge=merge, layer=layer
        )
        return base_id
    sequence = replace(spec, input_size=spec.input_size + extra, return_sequence=True)
    grown.add(f"{base_id}.seq", sequence, inputs, task, merge=merge, layer=layer)
    grown.add(base_id, LastStep(), [f"{base_id}.seq"], task, layer=layer)
    return base_id


def _sequence_of(graph: ModuleGraph, node_id: str) -> str:
    """The node holding a recurrent layer's whole sequence: the layer's node, or what its LastStep reads."""
    node = graph.node(node_id)
    return node.inputs[0] if isinstance(node.spec, LastStep) else node_id


def _output_shape(specs: Sequence[NodeSpec], shape: tuple[int, ...]) -> tuple[int, ...]:
    for spec in specs:
        shape = spec.output_shape(shape)
    return shape


def _lateral_spec(source_shapes: list[tuple[int, ...]], target: NodeSpec, hidden: int | None) -> Adapter:
    """One adapter reads the older columns' layer outputs, concatenated; its hidden layer projects onto
    as many units (channels) as one column's source layer has, unless `hidden` says otherwise."""
    width = hidden or source_shapes[0][0]  # units of a dense source, channels of a conv source
    if isinstance(target, Conv2d):
        channels = sum(s[0] for s in source_shapes)
        return Adapter(
            channels, target.out_channels, width, target.kernel_size, target.stride, target.padding
        )
    if not isinstance(target, Linear):
        raise GraphError(f"no lateral adapter into a {target.kind} node")
    features = sum(math.prod(s) for s in source_shapes)
    return Adapter(features, target.out_features, width, flatten=len(source_shapes[0]) > 1)


def reuse_prefix(
    graph: ModuleGraph, task: int, source_task: int | None, k: int, specs: Sequence[NodeSpec], n_outputs: int
) -> ModuleGraph:
    """MNTDP's local perturbation: keep `source_task`'s (frozen) modules below layer `k`, add new trainable
    modules for layers `k` and up, and a new head. `k == 0` is a fresh path; `k == len(specs)` reuses every
    layer and trains only a new head."""
    if not 0 <= k <= len(specs):
        raise GraphError(f"reuse depth k={k} is outside 0..{len(specs)}")
    if k > 0 and source_task is None:
        raise GraphError(f"reuse depth k={k} needs a source task whose path to reuse")
    grown = graph.copy()
    source_layers = grown.layer_nodes(source_task) if k > 0 and source_task is not None else {}
    missing = [i for i in range(k) if i not in source_layers]
    if missing:
        raise GraphError(f"task {source_task}'s path has no node at layers {missing} to reuse")
    previous = source_layers[k - 1] if k > 0 else INPUT
    for layer in range(k, len(specs)):
        node_id = layer_node(task, layer)
        spec = reading(specs[layer], grown.shapes([previous])[previous])  # a widened source is wider
        grown.add(node_id, spec, [previous], task, layer=layer)
        previous = node_id
    return add_head(grown, task, previous, n_outputs)


def freeze(graph: ModuleGraph, node_ids: Iterable[str]) -> ModuleGraph:
    """The nodes no longer train: their weights are fixed for every later task."""
    grown = graph.copy()
    for node_id in node_ids:
        grown.node(node_id).frozen = True
    return grown


def track_owners(graph: ModuleGraph, node_ids: Iterable[str]) -> ModuleGraph:
    """Start weight-level ownership for the nodes' parameters: every entry begins FREE."""
    grown = graph.copy()
    for node_id in node_ids:
        node = grown.node(node_id)
        for name, value in node.weights.items():
            node.owners.setdefault(name, torch.full(value.shape, FREE, dtype=torch.int16))
    return grown


def claim_free(
    graph: ModuleGraph, task: int, node_ids: Iterable[str], params: Iterable[str] = ()
) -> ModuleGraph:
    """Give `task` every FREE entry of the named owner-tracked parameters (all of them when none named)."""
    grown = graph.copy()
    wanted = set(params)
    for node_id in node_ids:
        node = grown.node(node_id)
        for name, owners in node.owners.items():
            if not wanted or name in wanted:
                owners[owners == FREE] = task
    return grown


def claim_entries(
    graph: ModuleGraph, task: int, entries: Mapping[str, Mapping[str, torch.Tensor]]
) -> ModuleGraph:
    """Give `task` the FREE entries of owner-tracked parameters where `entries` (node id -> parameter ->
    bool, the parameter's shape) is True (CPG's and PAE's kept weights); every other entry keeps its
    owner."""
    grown = graph.copy()
    for node_id, named in entries.items():
        node = grown.node(node_id)
        for name, where in named.items():
            if name not in node.owners or tuple(where.shape) != tuple(node.owners[name].shape):
                raise GraphError(f"node {node_id!r}: no owner-tracked {name!r} of shape {tuple(where.shape)}")
            owners = node.owners[name]
            owners[(owners == FREE) & where.to(torch.bool)] = task
    return grown


def prune(graph: ModuleGraph, task: int, fraction: float, node_ids: Iterable[str]) -> ModuleGraph:
    """PackNet's pruning: in each owner-tracked weight matrix of the nodes, among the entries still FREE
    (the ones `task` trained), give `task` the largest-magnitude (1 - fraction) and zero the rest, which
    stay FREE for later tasks. Biases and one-dimensional parameters are left to `claim_free`."""
    if not 0.0 <= fraction < 1.0:
        raise GraphError(f"prune fraction {fraction} is outside [0, 1)")
    grown = graph.copy()
    for node_id in node_ids:
        node = grown.node(node_id)
        for name, owners in node.owners.items():
            weight = node.weights[name]
            free = owners == FREE
            if weight.dim() < 2 or not free.any():
                continue
            free_index = free.flatten().nonzero().squeeze(1)
            n_kept = free_index.numel() - int(round(fraction * free_index.numel()))
            # exactly n_kept winners, ties broken by position (many trained-from-zero weights stay 0)
            order = weight.flatten()[free_index].abs().argsort(descending=True, stable=True)
            keep = torch.zeros(weight.numel(), dtype=torch.bool)
            keep[free_index[order[:n_kept]]] = True
            keep = keep.view(weight.shape)
            owners[keep] = task
            node.weights[name] = torch.where(free & ~keep, torch.zeros_like(weight), weight)
    return grown


def widen(graph: ModuleGraph, node_id: str, extra: int) -> ModuleGraph:
    """Add `extra` units (or channels) to a dense or conv node. Old units keep their weights; the new ones
    are freshly initialised; every consumer gets zero weights from the new units, so every existing
    task's outputs are unchanged. Owner-tracked entries that are new start FREE."""
    if extra < 1:
        raise GraphError(f"widen needs at least one extra unit, got {extra}")
    grown = graph.copy()
    node = grown.node(node_id)
    if not isinstance(node.spec, Linear | Conv2d) or isinstance(node.spec, Head):
        raise GraphError(f"widen works on Linear and Conv2d nodes; {node_id!r} is a {node.spec.kind}")
    sharing = [n for n, other in grown.nodes() if other.shares == node_id or (n == node_id and node.shares)]
    sharing += [c for c in grown.successors(node_id) if grown.node(c).shares]
    if sharing:
        raise GraphError(f"cannot widen {node_id!r}: nodes {sharing} share weights with it or its consumers")
    field = "out_features" if isinstance(node.spec, Linear) else "out_channels"
    old_width = getattr(node.spec, field)
    node.spec = replace(node.spec, **{field: old_width + extra})
    _grow_tensors(node, node.spec, axis=0)
    for consumer_id in grown.successors(node_id):
        consumer = grown.node(consumer_id)
        if len(consumer.inputs) > 1 or not isinstance(consumer.spec, Linear | Conv2d):
            raise GraphError(
                f"cannot widen {node_id!r}: consumer {consumer_id!r} is a {consumer.spec.kind} "
                f"with {len(consumer.inputs)} inputs; expected one dense or conv consumer"
            )
        if isinstance(consumer.spec, Linear):
            spatial = consumer.spec.in_features // old_width  # H*W when a dense layer reads a flattened conv
            consumer.spec = replace(consumer.spec, in_features=consumer.spec.in_features + extra * spatial)
        else:
            consumer.spec = replace(consumer.spec, in_channels=consumer.spec.in_channels + extra)
        _grow_tensors(consumer, consumer.spec, axis=1, zero_new=True)
    grown.shapes()
    return grown


def _grow_tensors(node: Node, spec: NodeSpec, axis: int, zero_new: bool = False) -> None:
    """Resize the node's tensors to the spec's shapes along `axis`, keeping old entries in place."""
    fresh = spec.build().state_dict()
    for name, new in fresh.items():
        old = node.weights[name]
        if new.shape == old.shape:
            continue
        if new.dim() <= axis:  # e.g. a consumer's bias when growing inputs
            continue
        value = torch.zeros_like(new) if zero_new else new.clone()
        index = tuple(slice(0, s) for s in old.shape)
        value[index] = old
        node.weights[name] = value
        if name in node.owners:
            owners = torch.full(new.shape, FREE, dtype=node.owners[name].dtype)
            owners[index] = node.owners[name]
            node.owners[name] = owners


def shared_layer_ids(prefix: str, n_layers: int) -> list[str]:
    """The node ids of a shared stack's layers: `{prefix}/L{i}`."""
    return [f"{prefix}/L{i}" for i in range(n_layers)]


def shared_stack(
    graph: ModuleGraph, prefix: str, specs: Sequence[NodeSpec], owner: int, *, owners: bool = True
) -> ModuleGraph:
    """One network of `specs` shared by every task: nodes `{prefix}/L{i}`, created by `owner`, or the
    graph as it is when they exist. With `owners`, weight-level ownership starts with every weight FREE
    (PackNet, DEN); without, tasks share every weight and protect theirs otherwise (HAT's gates)."""
    node_ids = shared_layer_ids(prefix, len(specs))
    if node_ids[0] in graph:
        return graph
    grown, previous = graph.copy(), INPUT
    for layer, (node_id, spec) in enumerate(zip(node_ids, specs, strict=True)):
        grown.add(node_id, spec, [previous], owner, layer=layer)
        previous = node_id
    return track_owners(grown, node_ids) if owners else grown
