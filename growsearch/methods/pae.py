"""PAE: packing and expanding (Hung, Lee, Wan, Chen, Chan & Chen, ICMR 2019, "Increasingly Packing Multiple
Facial-Informatics Modules in a Unified Deep-Learning Model via Lifelong Learning").

PackNet's owner-tracked network (each weight owned by at most one task) and a head per task, packed by
gradual pruning and expanded when it fills up. Per task t (the pipeline is `algorithms/compacting.py`, the
one CPG uses, without its picking mask: t uses every earlier task's weight):
- expanding: if some layer's share of FREE weights is below `expand_below` (the authors expand when a new
  task finds no free weight left), the network grows (parameter multiplier + `growth_step`, each layer's
  width times its square root: the authors' 1.2 ratio, filters x sqrt(1.2)) until it is not, up to
  `max_size_multiplier`;
- packing: t trains every free weight, then gradual pruning (Zhu & Gupta's cubic schedule) of what it
  trained to its sparsity (task t: `sparsities[min(t, len - 1)]`), fine-tuning the rest, then it owns what
  it kept;
- retraining: the candidate's training by the search (`training.epochs`) retrains the kept weights.
Task t's view: the weights owned by tasks <= t; an old task's outputs are bit-identical after later tasks.

Departures: the authors choose each task's pruning ratio by inspecting per-stage accuracies and expand by
hand; here the sparsity is a per-task schedule (or, with `search: true`, an Optuna decision in
`sparsity_range`, searchable against `capacity_used`) and expansion is the rule above. Biases are trained
by the task that creates them, then fixed, as in PackNet; expansion adds unit groups whose old units get no
input from new ones (`algorithms/growing_stack.py`: old tasks stay bit-identical). One optimiser (the YAML's
Adam; the authors: Adam too) and epochs scaled down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from growsearch.methods.algorithms import compacting
from growsearch.methods.algorithms import growing_stack as stack
from growsearch.methods.algorithms.compacting import CompactingOptions
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    Retrain,
    TaskContext,
    ops,
    require,
)


@dataclass(frozen=True)
class PAEOptions(CompactingOptions):
    train_epochs: int = 20  # without a picking mask the free weights need longer on split-digits
    sparsities: tuple[float, ...] = (0.5,)  # task t prunes sparsities[min(t, len - 1)] of what it trained
    expand_below: float = 0.1  # expand while a layer's free share is below this
    growth_step: float = 0.2  # the authors' `filters_expand_ratio` 1.2
    max_size_multiplier: float = 2.0  # the PAE script of the CPG repository

    def validate(self, where: str) -> None:
        super().validate(where)
        require(len(self.sparsities) >= 1, f"{where}.sparsities", "expected at least one sparsity")
        for s in self.sparsities:
            require(0 <= s < 1, f"{where}.sparsities", f"expected sparsities in [0, 1), got {s}")
        require(0 <= self.expand_below < 1, f"{where}.expand_below", "expected a number in [0, 1)")

    def sparsity(self, task: int) -> float:
        return self.sparsities[min(task, len(self.sparsities) - 1)]


class PAE(Method):
    name = "pae"
    paper = (
        "Hung, Lee, Wan, Chen, Chan & Chen 2019, Increasingly Packing Multiple Facial-Informatics Modules in "
        "a Unified Deep-Learning Model via Lifelong Learning"
    )
    scenarios = ("task-il",)
    Options = PAEOptions
    backbones = ("mlp", "conv")
    backbone_note = "its expansion adds unit groups to dense or conv layers"

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"sparsity": trial.suggest_float("sparsity", *self.options.sparsity_range)}

    def runs_out(self, graph: ModuleGraph, ctx: TaskContext) -> bool:
        """Whether some layer's free share is below the threshold (and the network may still expand)."""
        below = compacting.free_share(graph, ctx) < self.options.expand_below
        return below and compacting.can_grow(graph, self.options)

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        options, config = self.options, self.space.training
        base = compacting.base_stack(ctx)
        free_before = compacting.free_share(base, ctx)
        expansions = 0
        while self.runs_out(base, ctx):
            base = compacting.grow(base, ctx, options)
            expansions += 1
        graph = compacting.with_head(base, ctx)
        result = compacting.train(graph, ctx, config, options.train_epochs, None)
        sparsity = float(decisions.get("sparsity", options.sparsity(ctx.task_id)))
        prunable = compacting.prunable_entries(result.graph, ctx)
        stages = compacting.compact(result.graph, ctx, config, (sparsity,), options) if sparsity > 0 else []
        chosen = stages[-1] if stages else compacting.Stage(0.0, result.val_accuracy, result.graph, {})
        mechanism = {
            "free_before": free_before,
            "expansions": expansions,
            "free_after_expansion": compacting.free_share(base, ctx),
            "size_multiplier": compacting.size_multiplier(base, options),
            "trained_val_accuracy": result.val_accuracy,
            "stages": compacting.stage_record(stages, prunable),
            "sparsity": sparsity,
        }
        graph = compacting.claim_kept(chosen.graph, ctx, chosen.pruned)
        training = compacting.retraining(graph, ctx, None)
        return Candidate(graph, decisions=dict(decisions), mechanism=mechanism, training=training)

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The task's weights are claimed in `build`; its head is frozen."""
        return ops.freeze(chosen, [chosen.head(ctx.task_id)])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        return compacting.capacity_used(graph, ctx)

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per layer: width, the share this task owns, the share left free; the network's growth so far."""
        return {
            "capacity": compacting.capacity(committed, ctx),
            "capacity_used": self.capacity_used(committed, ctx),
            "network_growth_steps": stack.growth_steps(committed, compacting.PREFIX),
        }
