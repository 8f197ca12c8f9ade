"""Synaptic stabilisers: a pull of each weight towards the value the previous task left, weighted by its
importance to earlier tasks, `strength * sum_k Omega_k (theta_k - theta*_k)^2`, Omega summed over tasks
and theta* the weights after the previous task (as Masse, Grant & Freedman's XdG code combines them; no
1/2 factor). It is part of a training (`train.extension.Training`: a penalty, and for SI a callback
around each step), so any method can add it to its training.

- SI (Zenke, Poole & Ganguli, ICML 2017), as XdG's code computes it: while a task trains,
  omega_k += -delta_theta_k * g_k after every step, g the gradient of the task's loss alone (the
  penalty's own gradient taken out); after the task, Omega_k += relu(omega_k) / (xi + (theta_end -
  theta_start)^2).
- EWC (Kirkpatrick et al., PNAS 2017), as XdG's code computes it: after a task, Omega_k += F_k, the
  Fisher information with labels drawn from the model's own softmax, averaged over the task's training
  samples (at most `fisher_samples`).

The importance and the anchor of each parameter are kept in its node's `state` (`importance/<param>`,
`anchor/<param>`), so they are saved with every checkpoint and a resumed run stabilises as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.data.task import Split
from growsearch.graph.compile import TrainingProgram
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow.node_data import with_state
from growsearch.train.extension import Penalty, StepOutcome
from growsearch.train.trainer import spend_macs

KINDS = ("none", "si", "ewc")
IMPORTANCE, ANCHOR = "importance/", "anchor/"
Key = tuple[str, str]  # (node id, parameter name)


class Stabiliser:
    """One task's stabiliser over the parameters of `node_ids`: built from the committed graph (what
    earlier tasks made important), bound to the compiled candidate, consolidated into the trained graph."""

    def __init__(
        self,
        kind: str,
        strength: float,
        graph: ModuleGraph,
        node_ids: Sequence[str],
        *,
        damping: float = 0.01,
        fisher_samples: int = 1024,
        seed: int = 0,
    ):
        if kind not in KINDS:
            raise ValueError(f"stabiliser {kind!r}; expected one of {KINDS}")
        self.kind, self.strength, self.damping = kind, strength, damping
        self.fisher_samples, self.seed = fisher_samples, seed
        self.node_ids = list(node_ids)
        self.importance: dict[Key, torch.Tensor] = {}
        self.anchor: dict[Key, torch.Tensor] = {}
        self.start: dict[Key, torch.Tensor] = {}
        for node_id in self.node_ids:
            node = graph.node(node_id)
            for name, value in node.weights.items():
                self.start[(node_id, name)] = value.clone()
                if IMPORTANCE + name in node.state:
                    self.importance[(node_id, name)] = node.state[IMPORTANCE + name]
                    self.anchor[(node_id, name)] = node.state[ANCHOR + name]
        self.parameters: dict[Key, nn.Parameter] = {}
        self.path: dict[Key, torch.Tensor] = {}  # SI's omega
        self.before: dict[Key, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def bind(self, program: TrainingProgram) -> None:
        """Bind to the compiled candidate's parameters (`Training.start`)."""
        for node_id in self.node_ids:
            for name, parameter in program.full.node_modules[node_id].named_parameters():
                key = (node_id, name)
                self.parameters[key] = parameter
                if key in self.importance:
                    self.importance[key] = self.importance[key].to(parameter.device)
                    self.anchor[key] = self.anchor[key].to(parameter.device)
        if self.active:
            self.path = {k: torch.zeros_like(p) for k, p in self.parameters.items()}

    @property
    def penalty(self) -> Penalty | None:
        """The pull towards the anchors (None: no stabiliser, or no earlier task made anything important)."""
        return self._penalty if self.active and self.importance else None

    @property
    def before_step(self) -> Callable[[int], None] | None:
        """SI's: remember the weights before each step."""
        return self._remember if self.kind == "si" else None

    @property
    def after_step(self) -> Callable[[StepOutcome], None] | None:
        """SI's: integrate the path after each step."""
        return self._integrate if self.kind == "si" else None

    def _penalty(self) -> torch.Tensor:
        terms = [
            (self.importance[k] * (p - self.anchor[k]) ** 2).sum()
            for k, p in self.parameters.items()
            if k in self.importance
        ]
        return self.strength * torch.stack(terms).sum()

    def _remember(self, step: int) -> None:
        self.before = {k: p.detach().clone() for k, p in self.parameters.items()}

    def _integrate(self, outcome: StepOutcome) -> None:
        for key, parameter in self.parameters.items():
            if parameter.grad is None:
                continue
            grad = parameter.grad
            if key in self.importance:  # the task loss's gradient alone
                grad = grad - 2 * self.strength * self.importance[key] * (self.before[key] - self.anchor[key])
            self.path[key] -= (parameter.detach() - self.before[key]) * grad

    def consolidate(self, trained: ModuleGraph, program: TrainingProgram, train: Split) -> ModuleGraph:
        """`trained` with this task's importance added to the earlier tasks' and the anchors at the trained
        weights, in its nodes' state."""
        if not self.active:
            return trained
        if self.kind == "ewc":
            added = self._fisher(program, train)
            spend_macs(
                3 * trained.macs(trained.view(program.full.task)) * min(len(train), self.fisher_samples)
            )
        else:
            added = self._path_importance(trained)
        state: dict[str, dict[str, torch.Tensor]] = {}
        for (node_id, name), value in added.items():
            before = self.importance.get((node_id, name))
            total = value.cpu() if before is None else before.cpu() + value.cpu()
            state.setdefault(node_id, {})[IMPORTANCE + name] = total
            state[node_id][ANCHOR + name] = trained.node(node_id).weights[name]
        return with_state(trained, state)

    def _path_importance(self, trained: ModuleGraph) -> dict[Key, torch.Tensor]:
        added = {}
        for key, omega in self.path.items():
            moved = trained.node(key[0]).weights[key[1]] - self.start[key]
            added[key] = torch.relu(omega.cpu()) / (self.damping + moved**2)
        return added

    def _fisher(self, program: TrainingProgram, train: Split) -> dict[Key, torch.Tensor]:
        return fisher_information(
            program.full.module.eval(), self.parameters, train, self.fisher_samples, self.seed
        )


def fisher_information(
    module: nn.Module, parameters: Mapping[Key, nn.Parameter], train: Split, samples: int, seed: int
) -> dict[Key, torch.Tensor]:
    """The diagonal Fisher information of `parameters` (of `module`, in evaluation mode): the mean squared
    gradient of log p(y_hat | x), y_hat drawn from the model's softmax (seeded), over at most `samples` of
    `train`'s samples. EWC's importance; RPS-Net's path saturation."""
    device = next(iter(parameters.values())).device
    generator = torch.Generator().manual_seed(seed)
    n = min(len(train), samples)
    chosen = torch.randperm(len(train), generator=generator)[:n]
    squares = {k: torch.zeros_like(p) for k, p in parameters.items()}
    for index in chosen.tolist():
        logits = module(train.x[index : index + 1].to(device))
        probabilities = F.softmax(logits.detach(), dim=1).cpu()
        drawn = int(torch.multinomial(probabilities[0], 1, generator=generator))
        gradients = torch.autograd.grad(
            F.log_softmax(logits, dim=1)[0, drawn],
            list(parameters.values()),
            allow_unused=True,
        )
        for key, gradient in zip(parameters, gradients, strict=True):
            if gradient is not None:
                squares[key] += gradient.detach() ** 2
    return {k: v / max(n, 1) for k, v in squares.items()}
