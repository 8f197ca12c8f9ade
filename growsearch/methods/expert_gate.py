"""ExpertGate: lifelong learning with a network of experts (Aljundi, Chakravarty & Tuytelaars, CVPR 2017).

Each task gets an expert: a whole network of its own (a column of the base architecture with its head, no
lateral connections), frozen once the task is learnt, so no old task's outputs ever change. Each task also
gets an autoencoder (the paper's gate): an undercomplete autoencoder trained on the task's inputs
(`growsearch.inference.autoencoders`), trained before the task's search. At test time a sample goes to
the expert whose autoencoder reconstructs it best: the YAML asks for `inference: expert-gate`, so even a
task-IL run is scored with the task inferred, as the paper evaluates it.

The autoencoders also measure how related an earlier task is to the new one,
`Rel = 1 - (Er_k - Er_new) / Er_new` on the new task's training inputs (sec. 4.2). The new expert starts
from the most related earlier expert (its weights copied; a fresh head for the new classes) and is trained
from there by fine-tuning, or, when the relatedness reaches `lwf_threshold` (the paper's 0.85), by Learning
without Forgetting (Li & Hoiem 2016): a copy of the related expert's head rides along on the new expert's
last hidden layer and is trained to keep answering, on the new task's inputs, what the old expert
answered, with the distillation loss at temperature 2 weighted `lwf_weight` (1, LwF's lambda_o). The first
task's expert starts from scratch.

With `search: true` each later task searches what the paper decides by rule: the expert to start from
(any earlier one, or none) and how to transfer (fine-tune or LwF); the paper's choice is the first trial.
Departures: no pretrained ImageNet model to start the first expert from (none can be loaded here), and
LwF's warm-up of the new head alone is left out (the whole expert trains from the first step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    GraphError,
    Method,
    ModuleGraph,
    SearchPlan,
    TaskContext,
    Training,
    TrainingRun,
    compile_view,
    node_data,
    ops,
    relatedness,
    require,
    spend_macs,
)

SCRATCH = "scratch"
TRANSFERS = ("lwf", "fine-tune")
LWF_TEMPERATURE = 2.0  # Li & Hoiem 2016, sec. 3


@dataclass(frozen=True)
class ExpertGateOptions:
    lwf_threshold: float = 0.85  # relatedness from which the new expert learns with LwF, not fine-tuning
    lwf_weight: float = 1.0  # LwF's lambda_o: the distillation term's weight against the new task's loss
    search: bool = False  # true: each later task searches the expert to start from and how to transfer

    def validate(self, where: str) -> None:
        require(self.lwf_weight >= 0, f"{where}.lwf_weight", f"expected a number >= 0, got {self.lwf_weight}")


def expert_id(task: int) -> str:
    return f"task-{task}"


class ExpertGate(Method):
    name = "expert-gate"
    paper = "Aljundi, Chakravarty & Tuytelaars 2017, Expert Gate: Lifelong Learning with a Network of Experts"
    scenarios = ("task-il",)
    Options = ExpertGateOptions
    reads_autoencoders = True

    # ---- the search ------------------------------------------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """The first task trains one expert from scratch; with `search`, a later task's search starts from
        the paper's choice."""
        if ctx.task_id == 0:
            return SearchPlan(budget=1)
        plan = super().search_plan(ctx)
        if not self.options.search:
            return plan
        source, transfer, _ = self.paper_choice(ctx)
        return dataclasses.replace(plan, initial=({"source": source, "transfer": transfer},))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search or ctx.task_id == 0:
            return {}
        sources = [expert_id(k) for k in range(ctx.task_id)] + [SCRATCH]
        decisions: Decisions = {"source": trial.suggest_categorical("source", sources)}
        if decisions["source"] != SCRATCH:
            decisions["transfer"] = trial.suggest_categorical("transfer", TRANSFERS)
        return decisions

    def relatedness(self, ctx: TaskContext) -> dict[str, float]:
        """Each earlier task's relatedness to the new one, from their autoencoders."""
        if len(ctx.autoencoders) != ctx.task_id + 1:
            raise GraphError(
                f"ExpertGate needs the autoencoders of tasks 0..{ctx.task_id} to build task {ctx.task_id}'s "
                f"expert, got {len(ctx.autoencoders)}"
            )
        new = ctx.autoencoders[ctx.task_id]
        x = ctx.task.train.x
        return {expert_id(k): relatedness(ctx.autoencoders[k], new, x) for k in range(ctx.task_id)}

    def paper_choice(self, ctx: TaskContext) -> tuple[str, str, dict[str, float]]:
        """The paper's rule: start from the most related expert; LwF when it is related enough."""
        related = self.relatedness(ctx)
        if not related:
            return SCRATCH, SCRATCH, related
        source = max(related, key=lambda k: related[k])
        return source, "lwf" if related[source] >= self.options.lwf_threshold else "fine-tune", related

    # ---- the expert ------------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        paper_source, paper_transfer, related = self.paper_choice(ctx)
        source = str(decisions.get("source", paper_source))
        transfer = SCRATCH if source == SCRATCH else str(decisions.get("transfer", paper_transfer))
        graph = ops.add_column(ctx.committed, ctx.task_id, ctx.specs, ctx.n_outputs, laterals=False)
        training = None
        if source != SCRATCH:  # the related expert's weights; a fresh head
            k, new = _task_of(source, ctx), graph.layer_nodes(ctx.task_id)
            old = graph.layer_nodes(k)
            graph = node_data.with_weights(graph, {n: graph.node(old[i]).weights for i, n in new.items()})
            if transfer == "lwf":  # the old head reads the new expert's last hidden layer
                training = _LwF(ctx.committed, k, new[max(new)], self.options.lwf_weight).training()
        mechanism = {
            "relatedness": related,
            "most_related": paper_source if related else None,
            "source": None if source == SCRATCH else source,
            "transfer": transfer,
            "paper_choice": source == paper_source and transfer == paper_transfer,
        }
        return Candidate(graph, {"source": source, "transfer": transfer}, mechanism, training)


def _task_of(expert: str, ctx: TaskContext) -> int:
    """The earlier task whose expert is `expert` (an `expert_id`)."""
    return {expert_id(k): k for k in range(ctx.task_id)}[expert]


class _LwF:
    """Learning without Forgetting's distillation: the old expert's answers on each batch, kept by a copy
    of its head trained on the new expert's last hidden layer (`features_node`: what the old head reads)."""

    def __init__(self, committed: ModuleGraph, source: int, features_node: str, weight: float):
        self.committed, self.source, self.features_node, self.weight = (
            committed,
            source,
            features_node,
            weight,
        )
        old_head = committed.node(committed.head(source))
        self.head = old_head.spec.build()
        self.head.load_state_dict(old_head.weights)
        self.old_expert: nn.Module | None = None
        self.seen: dict[str, torch.Tensor] = {}  # the batch's inputs and the new expert's features
        # per sample: the old expert's pass, and the head copy's forward and backward
        head_macs = committed.macs([committed.head(source)])
        self.macs = committed.macs(committed.view(source)) + 3 * head_macs

    def training(self) -> Training:
        return Training(start=self.start, penalty=self.distillation, parameters=tuple(self.head.parameters()))

    def start(self, run: TrainingRun) -> None:
        device, program = run.batches.y.device, run.program
        self.old_expert = compile_view(self.committed, self.source).module.to(device).eval()
        self.head.to(device)
        if program.prefix is not None:
            raise GraphError("an ExpertGate expert trains whole: its first layer must read the input")
        program.suffix.register_forward_pre_hook(self.keep_input)
        _last_call(program.full.node_modules[self.features_node]).register_forward_hook(self.keep_features)

    def keep_input(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.seen["x"] = args[0]

    def keep_features(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        self.seen["features"] = output

    def distillation(self) -> torch.Tensor:
        with torch.no_grad():
            recorded = F.softmax(self.old_expert(self.seen["x"]) / LWF_TEMPERATURE, dim=1)
        spend_macs(self.macs * len(self.seen["x"]))
        return self.weight * F.cross_entropy(self.head(self.seen["features"]) / LWF_TEMPERATURE, recorded)


def _last_call(module: nn.Module) -> nn.Module:
    """The module whose output is `module`'s: compiled code calls a Sequential's leaves one by one."""
    while isinstance(module, nn.Sequential):
        module = [m for m in module if not isinstance(m, nn.Identity)][-1]
    return module
