"""RPS-Net's network of parallel modules, as graph data, and its path saturation (Rajasegaran et al.,
NeurIPS 2019, "Random Path Selection for Incremental Learning"; the saturation from the adaptive version,
arXiv:1906.01120v3).

Every layer l has M parallel modules, the node `pool/L{l}/M{m}` once a task has trained it. A path picks
modules per layer. Task t's view sums, per layer, the pre-activations of every module trained so far and of
its path's (the authors' `infer_path`: the fixed modules and the path), plus the layer's input where the
shapes match (the skip connection), then applies the activation: the join `t{t}/L{l}`. A node has one fixed
input, so a frozen module that now reads a different join below is a node `pool/L{l}/M{m}@t{t}` sharing its
weights (PathNet's device); an identical join, or a module already reading it, is reused as it stands.

The saturation of a path is measured on what it has learnt: the diagonal Fisher information of the path's
trainable weights (EWC's, `train.stabilisers.fisher_information`), and the share of those weights whose
information reaches `floor` times the mean. A path whose weights all carry information has no room left.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from growsearch.methods.toolkit import (
    INPUT,
    Activation,
    ModuleGraph,
    NodeSpec,
    Split,
    compile_view,
    fisher_information,
    layer_node,
)

Path = tuple[tuple[int, ...], ...]  # per layer, the path's modules (distinct, increasing)


def pool_id(layer: int, module: int) -> str:
    return f"pool/L{layer}/M{module}"


def shared_id(original: str, task: int) -> str:
    """The node through which task `task`'s view reads a frozen module behind a different join."""
    return f"{original}@t{task}"


def is_module(graph: ModuleGraph, node_id: str) -> bool:
    """A module of the pool (its original node, or a node sharing its weights): a layer's node other than
    the joins (heads and the input belong to no layer)."""
    node = graph.node(node_id)
    return node.layer is not None and not isinstance(node.spec, Activation)


def original(graph: ModuleGraph, node_id: str) -> str:
    """The module whose weights a node computes with (itself, or the node it shares)."""
    return graph.node(node_id).shares or node_id


def trained_modules(graph: ModuleGraph, layer: int, n_modules: int) -> list[int]:
    """The modules of layer `layer` that some task has trained (they are in the graph)."""
    return [m for m in range(n_modules) if pool_id(layer, m) in graph]


def add_path_view(
    graph: ModuleGraph,
    task: int,
    layers: Sequence[tuple[NodeSpec, Activation]],
    path: Path,
    n_modules: int,
    skip: bool,
) -> tuple[ModuleGraph, str]:
    """`graph` plus task `task`'s view up to its last join (a new graph), and that join. `layers`: per
    layer the module (no activation) and the join applying the activation. Modules the graph lacks are
    added freshly initialised (torch's global random stream), owned by `task`."""
    grown = graph.copy()
    previous = INPUT
    for layer, (module_spec, join_spec) in enumerate(layers):
        members = sorted(set(trained_modules(grown, layer, n_modules)) | set(path[layer]))
        inputs = [_module_node(grown, task, layer, m, module_spec, previous) for m in members]
        shapes = grown.shapes([previous, inputs[0]])
        if skip and shapes[previous] == shapes[inputs[0]]:
            inputs.append(previous)
        previous = _join(grown, task, layer, inputs, join_spec)
    return grown, previous


def _module_node(
    grown: ModuleGraph, task: int, layer: int, module: int, spec: NodeSpec, previous: str
) -> str:
    module_id = pool_id(layer, module)
    if module_id not in grown:
        grown.add(module_id, spec, [previous], task, layer=layer)
        return module_id
    for node_id in [module_id, *(shared_id(module_id, t) for t in range(task))]:
        if node_id in grown and grown.node(node_id).inputs == (previous,):
            return node_id
    sharing = shared_id(module_id, task)  # a frozen module behind a join that now sums more modules
    grown.add(sharing, spec, [previous], grown.node(module_id).owner, layer=layer, shares=module_id)
    return sharing


def _join(grown: ModuleGraph, task: int, layer: int, inputs: list[str], spec: Activation) -> str:
    for node_id, node in grown.nodes():
        if node.layer == layer and isinstance(node.spec, Activation) and node.inputs == tuple(inputs):
            return node_id
    join_id = layer_node(task, layer)
    grown.add(join_id, spec, inputs, task, merge="sum" if len(inputs) > 1 else None, layer=layer)
    return join_id


def path_saturation(
    graph: ModuleGraph,
    task: int,
    modules: Sequence[str],
    train: Split,
    *,
    floor: float,
    samples: int,
    seed: int,
) -> float:
    """The share of the trainable weights of `modules` (nodes of task `task`'s view) whose Fisher
    information on `train` reaches `floor` times their mean: 1 when the path has nothing left to train."""
    if not modules:
        return 1.0
    compiled = compile_view(graph, task, train=True)
    parameters = {
        (node_id, name): parameter
        for node_id in modules
        for name, parameter in compiled.node_modules[node_id].named_parameters()
    }
    fisher = fisher_information(compiled.module.eval(), parameters, train, samples, seed)
    values = torch.cat([v.flatten() for v in fisher.values()]).double()
    mean = values.mean()
    if mean <= 0:
        return 0.0
    return float((values >= floor * mean).double().mean())
