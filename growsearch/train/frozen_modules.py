"""A task's compiled frozen nodes, kept across its trials: the compiled view of the committed graph.

Compiling a candidate (`graph.compile.compile_for_training`) builds a module for every node of its view,
the committed columns too: their weights copied into modules, moved to the device. Those nodes do not
change while the task searches. `FrozenModules` keeps the modules built for a task's frozen nodes and hands
them to a later candidate's compile (`modules=`) where the node is the same: the same spec and equal
weights, owners and masks for the task, compared entry by entry (cheaper than copying them into a new
module, and on a GPU than moving them there again). It keeps only nodes that compile the same way every
time: frozen, sharing no other node's weights, without a normalisation, in a plain training (a method's
`Training` may attach to modules: `train_candidate` then compiles afresh). In one process: a Ray worker
starts with an empty one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from growsearch.graph.module_graph import INPUT, ModuleGraph, Node
from growsearch.graph.specs import NodeSpec, norm_entries


@dataclass
class _Kept:
    spec: NodeSpec
    tensors: dict[str, torch.Tensor]  # copies of what the module was built from
    module: nn.Module


class FrozenModules:
    """Compiled modules of one task's frozen nodes, reused across the task's trials."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int, bool], _Kept] = {}

    def for_graph(self, graph: ModuleGraph, task: int, include_free: bool) -> dict[str, nn.Module]:
        """The kept modules of `graph`'s frozen nodes (in task `task`'s view) that are still the same."""
        found = {}
        for node_id in graph.view(task):
            kept = self._kept.get((node_id, task, include_free))
            if kept is None or not _keepable(graph, node_id):
                continue
            node = graph.node(node_id)
            if node.spec == kept.spec and _equal(_tensors(node, task), kept.tensors):
                found[node_id] = kept.module
        return found

    def keep(
        self, graph: ModuleGraph, task: int, include_free: bool, modules: Mapping[str, nn.Module]
    ) -> None:
        """Keep the compiled modules of `graph`'s frozen nodes (`modules`: node id -> module) for later."""
        for node_id, module in modules.items():
            key = (node_id, task, include_free)
            if not _keepable(graph, node_id) or (key in self._kept and self._kept[key].module is module):
                continue
            node = graph.node(node_id)
            tensors = {name: value.detach().clone() for name, value in _tensors(node, task).items()}
            self._kept[key] = _Kept(node.spec, tensors, module)

    def __getstate__(self) -> dict:
        """Shipped (to a Ray worker) empty: what it keeps is this process's."""
        return {"_kept": {}}


def _keepable(graph: ModuleGraph, node_id: str) -> bool:
    if node_id == INPUT:
        return False
    node = graph.node(node_id)
    return node.frozen and not node.shares and bool(node.weights) and not norm_entries(node.spec)


def _tensors(node: Node, task: int) -> dict[str, torch.Tensor]:
    """What a frozen node's module is built from for task `task`."""
    tensors = {f"weight:{k}": v for k, v in node.weights.items()}
    tensors |= {f"owners:{k}": v for k, v in node.owners.items()}
    tensors |= {f"mask:{k}": v for k, v in node.masks.get(task, {}).items()}
    return tensors


def _equal(tensors: dict[str, torch.Tensor], kept: dict[str, torch.Tensor]) -> bool:
    if tensors.keys() != kept.keys():
        return False
    return all(
        value.shape == kept[name].shape and value.dtype == kept[name].dtype and torch.equal(value, kept[name])
        for name, value in tensors.items()
    )
