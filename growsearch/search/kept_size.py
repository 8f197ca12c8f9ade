"""What a run keeps to answer after a task, counted whole: the graph's weights are only part of it.

Parts, in floats (a binary entry counts 1/32 of one):
- `weights`: every node's weights and each task's own normalisation (`ModuleGraph.n_parameters`, what
  `parameters` has always counted);
- `state`: tensors a method keeps with its nodes from task to task (DGMw's generator, CCGN's task
  classifier, a stabiliser's importances);
- `gates`: each task's per-unit gate values (HAT's, XdG's, DER's...);
- `masks`: each task's binary weight masks (Piggyback, CPG, auto-grow), in bits;
- `owners`: which task owns each owner-tracked entry (PackNet, CPG, PAE...), in bits: enough to name every
  task seen, or none;
- `task_inference`: the models that infer a test sample's task (ExpertGate's autoencoders, one per task
  seen; the task classifier), beside the method's network.
`kept_parameters` is their sum, what MS (the survey's eq. 12) reads. Exemplar memories (a rehearsal
method's, the task classifier's) are samples, not parameters: `memory` gives their samples and bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from growsearch.graph.module_graph import ModuleGraph

BITS_PER_FLOAT = 32


def _entries(tensors: Any) -> int:
    return sum(math.prod(t.shape) for t in tensors)


def _is_sample(name: str) -> bool:
    """A memory's sample tensor (`class.C.x`), as `ExemplarMemory.tensors` names them."""
    return name.startswith("class.") and name.endswith(".x")


def kept_size(
    graph: ModuleGraph, n_tasks_seen: int, files: Sequence[Mapping[str, torch.Tensor]]
) -> dict[str, Any]:
    """The parts of what the run keeps after a task: `graph` committed, and `files` the tensor files kept
    beside it (each task-inference model seen so far, the task classifier with its memory, a method's
    exemplar memory). Memories' samples are counted apart, in samples and bytes."""
    nodes = [graph.node(n) for n in graph.node_ids()]
    owner_bits = math.ceil(math.log2(n_tasks_seen + 1))  # every task seen, or FREE
    parts = {
        "weights": graph.n_parameters(),
        "state": sum(_entries(node.state.values()) for node in nodes),
        "gates": sum(_entries(node.gates.values()) for node in nodes),  # a tensor per task
        "mask_bits": sum(_entries(m.values()) for node in nodes for m in node.masks.values()),
        "owner_bits": owner_bits * sum(_entries(node.owners.values()) for node in nodes),
        "task_inference": 0,
    }
    samples, sample_bytes = 0, 0
    for tensors in files:
        for name, value in tensors.items():
            if _is_sample(name):
                samples += value.shape[0]
                sample_bytes += value.numel() * value.element_size()
            elif name.startswith("network.") or name in (
                "mean",
                "std",
            ):  # an autoencoder, the task classifier
                parts["task_inference"] += value.numel()
    floats = sum(v for k, v in parts.items() if not k.endswith("_bits"))
    bits = parts["mask_bits"] + parts["owner_bits"]
    return {
        **parts,
        "kept_parameters": floats + math.ceil(bits / BITS_PER_FLOAT),
        "memory": {"samples": samples, "bytes": sample_bytes},
    }
