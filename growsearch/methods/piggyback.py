"""Piggyback: adapting a single network to multiple tasks by learning to mask weights (Mallya, Davis &
Lazebnik, ECCV 2018).

A backbone is trained on the first task (the paper starts from an ImageNet-trained network; split-digits has
none, so the first task plays its part) and then frozen, bit for bit. Every later task learns a real-valued
mask over every backbone weight (`algorithms/weight_masks.py`: initial value 1e-2, binarised at 5e-3, so
training starts from the whole backbone; the straight-through estimator passes the gradient through the
threshold unchanged), together with its own head; biases are not masked. The binary mask is stored as the
task's mask on each backbone node (`Node.masks[t]`, 1 byte per weight here, 1 bit in the paper), and the
task's view computes with the backbone's weights times it. Nothing an earlier task uses ever changes, so
its outputs are bit-identical after later tasks. Task-IL only; one candidate per task.

Departures: masks and head train with one optimiser, the YAML's (the paper: Adam for both,
lr 1e-4, x0.1 every 15 of 30 epochs); on split-digits (about 250 samples a task) 1e-4 barely moves a mask
from 1e-2 to below 5e-3, so the YAML uses Adam at 1e-3 with no schedule. The reference selects the best
epoch on the test set; here the last epoch is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from growsearch.methods.algorithms.weight_masks import mask_training, matrix_parameters
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    Retrain,
    TaskContext,
    Training,
    node_data,
    ops,
    require,
)

PREFIX = "backbone"
BACKBONE = PREFIX + "/L{}"


@dataclass(frozen=True)
class PiggybackOptions:
    mask_init: float = 1e-2  # `mask_scale` with `mask_init='1s'`
    mask_threshold: float = 5e-3  # `DEFAULT_THRESHOLD`

    def validate(self, where: str) -> None:
        require(self.mask_threshold >= 0, f"{where}.mask_threshold", "expected a number >= 0")
        require(
            self.mask_init > self.mask_threshold,
            f"{where}.mask_init",
            "expected a value above mask_threshold (else the mask starts empty)",
        )


class Piggyback(Method):
    name = "piggyback"
    paper = (
        "Mallya, Davis & Lazebnik 2018, Piggyback: Adapting a Single Network to Multiple Tasks by Learning "
        "to Mask Weights"
    )
    scenarios = ("task-il",)
    Options = PiggybackOptions

    def backbone(self, ctx: TaskContext) -> list[str]:
        return [BACKBONE.format(i) for i in range(len(ctx.specs))]

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        """The first task trains the backbone (and its head); a later one adds only its head, and learns its
        mask."""
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id, owners=False)
        if ctx.task_id > 0:  # batch norm per task beside the mask (no-op on a network without norm)
            graph = node_data.with_task_norms(graph, ctx.task_id, self.backbone(ctx))
        graph = ops.add_head(graph, ctx.task_id, self.backbone(ctx)[-1], ctx.n_outputs)
        return Candidate(graph, training=self.training(graph, ctx) if ctx.task_id > 0 else None)

    def training(self, graph: ModuleGraph, ctx: TaskContext) -> Training:
        """A mask learnt over every backbone weight matrix (the backbone runs per batch)."""
        options = self.options
        return mask_training(
            graph, ctx.task_id, self.backbone(ctx), options.mask_init, options.mask_threshold
        )

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """Freeze what the task trained: the backbone and its head after the first task, else its head."""
        return ops.freeze(chosen, [n for n, node in chosen.nodes() if node.owner == ctx.task_id])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        """The share of the backbone the task newly owns: all of it for the first task, none after."""
        return 1.0 if ctx.task_id == 0 else 0.0

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per backbone layer: the share of its weights the task owns (trained) and the share its mask
        keeps (picked); nothing is ever left free."""
        layers = []
        for i, node_id in enumerate(self.backbone(ctx)):
            node = committed.node(node_id)
            for name in matrix_parameters(committed, node_id):
                mask = node.masks.get(ctx.task_id, {}).get(name)
                picked = 1.0 if mask is None else float(mask.float().mean())
                owned = 1.0 if ctx.task_id == 0 else 0.0
                layers.append({"layer": i, "owned": owned, "picked": picked, "free": 0.0})
        return {"capacity": layers, "capacity_used": self.capacity_used(committed, ctx)}
