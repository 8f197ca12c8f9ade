"""CCGN's task paths over a shared stack (Abati et al., CVPR 2020): per task, one `ConditionalGate` node
per shared layer, wrapping it (`t{task}/gate{i}`, each reading the one before it, the first the input), so a
task computes every shared layer with its own input-conditional gates on the layer's units.

A committed task's gate node holds `allowed`: the units its gates may open, those that were important to
it. The units any earlier task holds this way are frozen in the shared layer (their rows of weights, every
input column, and bias: the paper's frozen kernels); the others are free for later tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import ConditionalGate


def path_ids(task: int, n_layers: int) -> list[str]:
    """The node ids of task `task`'s gated path, one per shared layer."""
    return [f"t{task}/gate{i}" for i in range(n_layers)]


def add_gated_path(
    graph: ModuleGraph, task: int, shared: Sequence[str], hidden: int, temperature: float
) -> ModuleGraph:
    """Task `task`'s gated path over the shared layers `shared` (a chain from the input), its gating modules
    freshly initialised (torch's global random stream) with every unit allowed."""
    grown, previous = graph.copy(), INPUT
    for i, (node_id, layer_id) in enumerate(zip(path_ids(task, len(shared)), shared, strict=True)):
        shape = grown.shapes([previous])[previous]
        spec = ConditionalGate.over(grown.node(layer_id).spec, shape, hidden, temperature)
        grown.add(node_id, spec, [previous], task, layer=i, shares=layer_id)
        previous = node_id
    return grown


def allowed_units(graph: ModuleGraph, node_id: str) -> torch.Tensor:
    """The units a gate node's gates may open (bool)."""
    return graph.node(node_id).weights["allowed"] > 0.5


def frozen_units(graph: ModuleGraph, shared: Sequence[str], before: int) -> dict[str, torch.Tensor]:
    """Per shared layer, the units a task before `before` holds (bool): frozen for task `before`."""
    frozen = {}
    for i, layer_id in enumerate(shared):
        units = graph.shapes([layer_id])[layer_id][0]
        held = torch.zeros(units, dtype=torch.bool)
        for task in graph.tasks:
            gate_id = path_ids(task, len(shared))[i]
            if task < before and gate_id in graph:
                held |= allowed_units(graph, gate_id)
        frozen[layer_id] = held
    return frozen


def keep_units(graph: ModuleGraph, task: int, important: Mapping[str, torch.Tensor]) -> ModuleGraph:
    """A copy in which task `task`'s gates may open only the units `important` names per gate node."""
    grown = graph.copy()
    for node_id, units in important.items():
        node = grown.node(node_id)
        if node.owner != task or not isinstance(node.spec, ConditionalGate):
            raise GraphError(f"{node_id!r} is not a gate node of task {task}")
        node.weights["allowed"] = units.to(node.weights["allowed"].dtype)
    return grown


def reinitialise_units(graph: ModuleGraph, free: Mapping[str, torch.Tensor], seed: int) -> ModuleGraph:
    """A copy in which each shared layer's `free` units (their rows of every weight, and bias) start again
    from a fresh initialisation drawn from `seed` (torch's global stream is left as it was)."""
    grown = graph.copy()
    for i, (node_id, units) in enumerate(free.items()):
        node = grown.node(node_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            fresh = node.spec.build().state_dict()
        for name, value in node.weights.items():
            rows = units.view(-1, *([1] * (value.dim() - 1))).expand(value.shape)
            node.weights[name] = torch.where(rows, fresh[name].to(value.dtype), value)
    return grown
