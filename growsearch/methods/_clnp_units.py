"""CLNP's unit-level rules on a gated shared stack (`clnp.py` alone uses them): the activation statistic a
unit is pruned by, the graceful-forgetting choice of the pruning threshold, re-initialising free units and
severing the interference weights (both return a changed copy of the graph).

A task's active units are its gate (`gates[t]`, see the toolkit's `unit_gates`): every unit an earlier
task keeps, and the free units it keeps itself. The weights from a unit no task <= t keeps into a unit some
task <= t keeps are CLNP's interference weights: zero, and (the kept rows being held) zero for ever, so
whatever later tasks train into the free units never reaches an old task's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from growsearch.methods.toolkit import ModuleGraph, node_data, unit_gates


def unit_sums(outputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per unit (feature, or channel), the sum of `outputs` (batch first) over samples and positions, and
    how many values each sum adds: summed over batches, their ratio is the unit's mean activation."""
    dims = [0, *range(2, outputs.dim())]
    return outputs.sum(dim=dims), outputs.numel() // max(outputs.shape[1], 1)


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # free units whose mean activation is below it are pruned
    accuracy: float  # validation accuracy once they are
    unpruned_accuracy: float
    evaluated: int  # thresholds whose pruned network was evaluated


def choose_threshold(
    activations: torch.Tensor, accuracy_at: Callable[[float], float], tolerance: float
) -> ThresholdChoice:
    """Graceful forgetting: the largest threshold whose pruned network's validation accuracy
    (`accuracy_at(threshold)`, pruning the prunable units whose `activations` are below it) is within
    `tolerance` of the unpruned network's. The candidates are every distinct activation (each prunes the
    units strictly below it; the smallest prunes none) and one just above the largest (prunes them all);
    they are tried from the largest down, so the first within tolerance is the answer."""
    values = torch.unique(activations.detach().cpu())  # sorted ascending
    if not len(values):
        accuracy = accuracy_at(0.0)
        return ThresholdChoice(0.0, accuracy, accuracy, 1)
    # in the activations' own precision, so comparing them with a candidate prunes what it should
    above = torch.nextafter(values[-1:], torch.tensor([math.inf], dtype=values.dtype))
    candidates = torch.cat([values, above]).tolist()
    unpruned = accuracy_at(candidates[0])
    evaluated = 1
    for threshold in reversed(candidates[1:]):
        accuracy = accuracy_at(threshold)
        evaluated += 1
        if accuracy >= unpruned - tolerance - 1e-12:  # 1e-12: a float tolerance is not a sample lost
            return ThresholdChoice(threshold, accuracy, unpruned, evaluated)
    return ThresholdChoice(candidates[0], unpruned, unpruned, evaluated)


def kept_units(active_before: torch.Tensor, activations: torch.Tensor, threshold: float) -> torch.Tensor:
    """Task t's active units in a layer: those earlier tasks keep, and the free ones whose mean
    activation on t's data reaches the threshold."""
    return active_before | (activations.to(active_before.device) >= threshold)


def reinitialise_free(graph: ModuleGraph, layers: Sequence[str], task: int) -> ModuleGraph:
    """`graph` with fresh values, from each layer's own initialisation (torch's global random stream), for
    the rows (incoming weights and bias) of the units no task before `task` keeps: a unit an earlier task
    trained and pruned is mostly a dead ReLU, which would never train again."""
    fresh_weights: dict[str, dict[str, torch.Tensor]] = {}
    for node_id in layers:
        free = ~unit_gates.used_before(graph, node_id, task)
        if not free.any():
            continue
        node = graph.node(node_id)
        fresh = node.spec.build().state_dict()
        fresh_weights[node_id] = {
            name: torch.where(mask, fresh[name], node.weights[name])
            for name, mask in unit_gates.connection_masks(graph, node_id, free, None).items()
        }
    return node_data.with_weights(graph, fresh_weights)


def sever_interference(graph: ModuleGraph, layers: Sequence[str], task: int) -> tuple[ModuleGraph, int]:
    """`graph` with every weight from a unit no task <= `task` keeps into a unit some task <= `task` keeps
    (layers after the first: the first reads the data), and the columns of `task`'s head reading such
    units, set to zero; and how many of those entries were not zero already."""
    active = {n: unit_gates.used_before(graph, n, task + 1) for n in layers}
    masks: dict[str, dict[str, torch.Tensor]] = {}
    for previous, node_id in zip(layers, layers[1:], strict=False):
        connections = unit_gates.connection_masks(graph, node_id, active[node_id], ~active[previous])
        masks[node_id] = {name: m for name, m in connections.items() if m.dim() >= 2}
    head = graph.head(task)
    columns = unit_gates.input_units(graph, head, ~active[layers[-1]])
    weights = graph.node(head).weights
    masks[head] = {name: columns.view(1, -1).expand(w.shape) for name, w in weights.items() if w.dim() == 2}
    zeroed: dict[str, dict[str, torch.Tensor]] = {}
    changed = 0
    for node_id, named in masks.items():
        for name, mask in named.items():
            weight = graph.node(node_id).weights[name]
            changed += int((weight[mask] != 0).sum())
            zeroed.setdefault(node_id, {})[name] = weight.masked_fill(mask, 0.0)
    return node_data.with_weights(graph, zeroed), changed
