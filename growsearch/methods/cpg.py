"""CPG: Compacting, Picking and Growing for Unforgetting Continual Learning (Hung, Tu, Wu, Chen, Chan &
Chen, NeurIPS 2019).

One shared owner-tracked network (PackNet's weights: each owned by at most one task) and a head per task.
Per task t (the pipeline is `algorithms/compacting.py`):
- picking and training: t trains every free weight and learns a Piggyback mask (`algorithms/weight_masks`:
  real values from 1e-2, binarised at 5e-3, straight-through gradient) over the earlier tasks' weights,
  which stay fixed: the mask picks which of them t uses (its gradient reaches only those entries);
- growing: if the validation accuracy then misses the task's accuracy goal, or the training accuracy is
  not above `min_train_accuracy` (the authors' exit code 2), the network grows (parameter multiplier
  + `growth_step`, every layer's width times its square root, as the authors' code) and t trains again from
  the committed network, up to `max_size_multiplier`;
- compacting: gradual pruning (Zhu & Gupta's cubic schedule, `algorithms/gradual_pruning.py`) of t's own
  weights through `sparsity_stages`, the picking mask fixed; t keeps the model of the largest sparsity whose
  validation accuracy meets the goal (none: the unpruned model, or the authors' must-prune ratio
  1 - round(1 / (remaining tasks + 1), 1) when the network is at its widest and missed the goal unpruned);
- retraining: the candidate's training by the search (`training.epochs`) retrains t's kept weights and
  its picking mask (the authors' `--finetune_again`).
Task t's view: the weights owned by tasks <= t, times its mask; an old task's outputs are bit-identical
after later tasks. Task-IL only.

The accuracy goal is the paper's individual model, computed cheaply: a fresh network of the base width with
its own head, trained on the task alone for `goal_epochs` with the same optimiser (once per task: cached,
on a random stream of its own so trials do not depend on it); goal = its last validation accuracy minus
`allowed_accuracy_loss`, as the authors' `baseline_acc_file`.

Departures: one optimiser for weights and mask (the YAML's Adam; the authors step the weights with SGD and
the mask with Adam); the retraining resumes the picking mask where training left it (real values 1e-2 where
it keeps a weight, 0 where it drops one) and its model is kept, where the authors restart the mask at 1e-2
and keep the retrained model only if validation accuracy improves (the search keeps what it trains;
resuming starts the retraining from the model that met the goal); epochs scaled down; biases trained by the
task creating them, then fixed, as PackNet's (the authors keep biases and batch norm per task); growth adds
unit groups whose old units get no input from new ones (`algorithms/growing_stack.py`: old tasks stay
bit-identical without slicing views by width). With `search: true` each task's sparsity is an Optuna
decision in `sparsity_range` (one stage to it, the goal still deciding growth), searchable against
`capacity_used`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch

from growsearch.methods.algorithms import compacting
from growsearch.methods.algorithms import growing_stack as stack
from growsearch.methods.algorithms.compacting import CompactingOptions, MaskSettings, Stage
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    Retrain,
    SearchSpace,
    TaskContext,
    derived_seed,
    ops,
    require,
    seed_torch,
    train_candidate,
)

STAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the authors' script


@dataclass(frozen=True)
class CPGOptions(CompactingOptions):
    sparsity_stages: tuple[float, ...] = STAGES
    allowed_accuracy_loss: float = 0.0  # `allow_acc_loss`
    goal_epochs: int = 10  # the individual model's training
    min_train_accuracy: float = 0.95  # the authors' growth rule also asks train accuracy > 0.95
    mask_init: float = 1e-2
    mask_threshold: float = 5e-3

    def validate(self, where: str) -> None:
        super().validate(where)
        stages = self.sparsity_stages
        require(len(stages) >= 1, f"{where}.sparsity_stages", "expected at least one sparsity")
        require(
            all(0 < s < 1 for s in stages) and list(stages) == sorted(set(stages)),
            f"{where}.sparsity_stages",
            f"expected increasing sparsities in (0, 1), got {list(stages)}",
        )
        require(-1 <= self.allowed_accuracy_loss <= 1, f"{where}.allowed_accuracy_loss", "expected [-1, 1]")
        require(self.goal_epochs >= 1, f"{where}.goal_epochs", "expected an integer >= 1")
        require(0 <= self.min_train_accuracy <= 1, f"{where}.min_train_accuracy", "expected [0, 1]")
        require(
            self.mask_init > self.mask_threshold,
            f"{where}.mask_init",
            "expected a value above mask_threshold (else the mask starts empty)",
        )


class CPG(Method):
    name = "cpg"
    paper = (
        "Hung, Tu, Wu, Chen, Chan & Chen 2019, Compacting, Picking and Growing for Unforgetting Continual "
        "Learning"
    )
    scenarios = ("task-il",)
    Options = CPGOptions
    backbones = ("mlp", "conv")
    backbone_note = "its growth adds unit groups to dense or conv layers"

    def __init__(self, space: SearchSpace):
        super().__init__(space)
        self._goals: dict[tuple[int, int], float] = {}  # (task, task seed) -> the individual model's accuracy

    @property
    def mask(self) -> MaskSettings:
        return MaskSettings(self.options.mask_init, self.options.mask_threshold)

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"sparsity": trial.suggest_float("sparsity", *self.options.sparsity_range)}

    # ---- the accuracy goal ---------------------------------------------------------------------------------
    def goal(self, ctx: TaskContext) -> float:
        """The individual model's validation accuracy, less the allowed loss."""
        key = (ctx.task_id, ctx.seed)
        if key not in self._goals:
            self._goals[key] = self.individual_accuracy(ctx)
        return self._goals[key] - self.options.allowed_accuracy_loss

    def individual_accuracy(self, ctx: TaskContext) -> float:
        with torch.random.fork_rng(devices=[]):
            seed_torch(derived_seed(ctx.seed, "cpg goal"))
            empty = ModuleGraph(ctx.committed.input_shape)
            alone = ops.reuse_prefix(empty, ctx.task_id, None, 0, ctx.specs, ctx.n_outputs)
            task = ctx.task
            result = train_candidate(
                alone,
                ctx.task_id,
                task.train,
                task.val,
                self.space.training,
                seed=derived_seed(ctx.seed, "cpg goal batches"),
                epochs=self.options.goal_epochs,
            )
        return result.val_accuracy

    def meets_goal(self, val_accuracy: float, train_accuracy: float, goal: float) -> bool:
        return val_accuracy >= goal and train_accuracy > self.options.min_train_accuracy

    # ---- one candidate -------------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        options, config = self.options, self.space.training
        goal = self.goal(ctx)
        base = compacting.base_stack(ctx)
        attempts = []
        while True:  # train (picking old weights); grow and train again while the goal is missed
            graph = compacting.with_head(base, ctx)
            result = compacting.train(
                graph, ctx, config, options.train_epochs, compacting.picking(graph, ctx, self.mask)
            )
            train_accuracy = compacting.train_accuracy(result.graph, ctx, config)
            met = self.meets_goal(result.val_accuracy, train_accuracy, goal)
            attempts.append(
                {
                    "size_multiplier": compacting.size_multiplier(base, options),
                    "val_accuracy": result.val_accuracy,
                    "train_accuracy": train_accuracy,
                    "goal_met": met,
                }
            )
            if met or not compacting.can_grow(base, options):
                break
            base = compacting.grow(base, ctx, options)
        trained = result.graph
        picked = [c.get("picked") for c in compacting.capacity(trained, ctx)]
        prunable = compacting.prunable_entries(trained, ctx)
        if "sparsity" in decisions:
            stages = compacting.compact(trained, ctx, config, (float(decisions["sparsity"]),), options)
            chosen, rule = stages[0], "decided"
        else:
            stages = compacting.compact(trained, ctx, config, options.sparsity_stages, options)
            unpruned = Stage(0.0, result.val_accuracy, trained, {})
            chosen, rule = self.choose(stages, unpruned, goal, attempts[-1]["goal_met"], ctx)
        graph = compacting.claim_kept(chosen.graph, ctx, chosen.pruned)
        graph, picking = compacting.take_masks(graph, ctx)  # the retraining learns the mask on from here
        mechanism = {
            "accuracy_goal": goal,
            "attempts": attempts,
            "growth_steps": len(attempts) - 1,
            "size_multiplier": compacting.size_multiplier(base, options),
            "picked_after_training": picked,
            "stages": compacting.stage_record(stages, prunable),
            "sparsity": chosen.sparsity,
            "sparsity_rule": rule,
        }
        training = compacting.retraining(graph, ctx, self.mask, picking)
        return Candidate(graph, decisions=dict(decisions), mechanism=mechanism, training=training)

    @staticmethod
    def choose(
        stages: list[Stage], unpruned: Stage, goal: float, unpruned_met: bool, ctx: TaskContext
    ) -> tuple[Stage, str]:
        """The largest sparsity meeting the goal; else the unpruned model, unless it missed the goal too (the
        network is then at its widest): the must-prune ratio (the largest stage not above it)."""
        meeting = [s for s in stages if s.val_accuracy >= goal]
        if meeting:
            return meeting[-1], "goal"
        if unpruned_met:
            return unpruned, "unpruned"
        ratio = compacting.must_prune_ratio(ctx)
        below = [s for s in stages if s.sparsity <= ratio + 1e-9]
        return (below[-1], "must-prune") if below else (unpruned, "unpruned")

    # ---- after the search ----------------------------------------------------------------------------------
    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The task's weights are claimed in `build`; its head is frozen."""
        return ops.freeze(chosen, [chosen.head(ctx.task_id)])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        return compacting.capacity_used(graph, ctx)

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per layer: width, the share this task owns, the share of earlier tasks' weights it picks, the share
        left free; the network's growth so far."""
        return {
            "capacity": compacting.capacity(committed, ctx),
            "capacity_used": self.capacity_used(committed, ctx),
            "network_growth_steps": stack.growth_steps(committed, compacting.PREFIX),
        }
