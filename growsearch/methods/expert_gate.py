"""ExpertGate: lifelong learning with a network of experts (Aljundi, Chakravarty & Tuytelaars, CVPR 2017).

Each task gets an expert: a whole network of its own (a column of the base architecture with its head, no
lateral connections), frozen once the task is learnt, so no old task's outputs ever change. Each task also
gets a gate: an undercomplete autoencoder trained on the task's inputs (`growsearch.inference`), trained
before the task's search. At test time the gate sends a sample to the expert whose autoencoder
reconstructs it best: the YAML asks for `inference: expert-gate`, so even a task-IL run is scored with
the task inferred, as the paper evaluates it.

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

from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn
from torch.nn import functional as F

from growsearch.config.schema import require
from growsearch.errors import GraphError
from growsearch.graph.compile import TrainingProgram, compile_view
from growsearch.grow import operators as ops
from growsearch.inference.expert_gate import relatedness
from growsearch.methods.base import Candidate, Decisions, Method, TaskContext
from growsearch.train.candidate import TrainingPlan
from growsearch.train.trainer import Minibatches, TrainingHooks

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
    reads_task_gates = True

    # ---- the search ------------------------------------------------------------------------------------
    def trial_budget(self, ctx: TaskContext) -> int:
        return 1 if ctx.task_id == 0 else super().trial_budget(ctx)

    def initial_trials(self, ctx: TaskContext) -> list[Decisions]:
        if not self.options.search or ctx.task_id == 0:
            return []
        source, transfer, _ = self.paper_choice(ctx)
        return [{"source": source, "transfer": transfer}]

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
        if len(ctx.gates) != ctx.task_id + 1:
            raise GraphError(
                f"ExpertGate needs the autoencoders of tasks 0..{ctx.task_id} to build task {ctx.task_id}'s "
                f"expert, got {len(ctx.gates)}"
            )
        new = ctx.gates[ctx.task_id]
        x = ctx.task.train.x
        return {expert_id(k): relatedness(ctx.gates[k], new, x) for k in range(ctx.task_id)}

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
        if source != SCRATCH:
            old, new = graph.layer_nodes(int(source.removeprefix("task-"))), graph.layer_nodes(ctx.task_id)
            for layer, node_id in new.items():  # the related expert's weights; a fresh head
                graph.node(node_id).weights = {
                    k: v.clone() for k, v in graph.node(old[layer]).weights.items()
                }
        mechanism = {
            "relatedness": related,
            "most_related": paper_source if related else None,
            "source": None if source == SCRATCH else source,
            "transfer": transfer,
            "paper_choice": source == paper_source and transfer == paper_transfer,
        }
        return Candidate(graph, decisions={"source": source, "transfer": transfer}, mechanism=mechanism)

    def training_plan(self, candidate: Candidate, ctx: TaskContext) -> TrainingPlan | None:
        if candidate.decisions["transfer"] != "lwf":
            return None
        source = int(str(candidate.decisions["source"]).removeprefix("task-"))
        expert = candidate.graph.layer_nodes(ctx.task_id)
        last_hidden = expert[max(expert)]  # the new expert's last hidden layer: what the old head reads
        return TrainingPlan(
            prepare=lambda program, batches: self._lwf_hooks(program, batches, ctx, source, last_hidden)
        )

    def _lwf_hooks(
        self,
        program: TrainingProgram,
        batches: Minibatches,
        ctx: TaskContext,
        source: int,
        features_node: str,
    ) -> TrainingHooks:
        """LwF's distillation: the old expert's answers on the batch, kept by a copy of its head trained on
        the new expert's last hidden layer."""
        device = batches.y.device
        committed = ctx.committed
        old_expert = compile_view(committed, source).module.to(device).eval()
        old_head = committed.node(committed.head(source))
        head = old_head.spec.build().to(device)
        head.load_state_dict(old_head.weights)
        if program.prefix is not None:
            raise GraphError("an ExpertGate expert trains whole: its first layer must read the input")
        seen: dict[str, torch.Tensor] = {}

        def keep_input(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen["x"] = args[0]

        def keep_features(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            seen["features"] = output

        program.suffix.register_forward_pre_hook(keep_input)
        _last_call(program.full.node_modules[features_node]).register_forward_hook(keep_features)
        weight = self.options.lwf_weight

        def distillation() -> torch.Tensor:
            with torch.no_grad():
                recorded = F.softmax(old_expert(seen["x"]) / LWF_TEMPERATURE, dim=1)
            return weight * F.cross_entropy(head(seen["features"]) / LWF_TEMPERATURE, recorded)

        return TrainingHooks(penalty=distillation, parameters=tuple(head.parameters()))


def _last_call(module: nn.Module) -> nn.Module:
    """The module whose output is `module`'s: compiled code calls a Sequential's leaves one by one."""
    while isinstance(module, nn.Sequential):
        module = [m for m in module if not isinstance(m, nn.Identity)][-1]
    return module
