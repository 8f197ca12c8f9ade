"""A task classifier over an exemplar memory: which task a sample belongs to, learnt by telling the tasks
apart rather than by reconstructing each one (`inference.kind: task-classifier`, auto's choice in class-IL).

ExpertGate's autoencoders read learnt features in the paper (AlexNet's); here on raw pixels they
reconstruct other digits about as well as their own, and split-mnist5k's last task is routed right 0.47
of the time (PNN, seed 0). Autoencoders over the features of a network trained on the first task do
worse still (0.23 to 0.67 on the later tasks: features that tell a 0 from a 1 do not tell the other eight
digits apart). What works is CCGN's task classification (Abati et al. 2020, sec. 3.3): a classifier over
the tasks seen, trained again from scratch after each task on an episodic memory of every task's samples.
CCGN's reads its gated features; here it reads the inputs and learns its own features (one hidden layer),
as the task-IL method under it offers no feature every task shares.

The memory keeps `inference.memory` training samples in all (an `ExemplarMemory` whose classes are the
tasks), shared equally by the tasks seen, each task's chosen at random (seeded; herding on the inputs
routed no better): adding a task shrinks every older task's share, so the memory never exceeds its budget.
When a task is learnt the classifier trains on the older tasks' exemplars and the new task's training
samples, all at hand then (CCGN draws as many of each task as the rarest has; here every sample is kept
and each task weighs the same in the loss: on split-mnist5k, 0.88 of the held-out samples routed right
instead of 0.84 with a memory of 500), with the one trainer (Adam at `inference.lr`,
`inference.batch_size`, `inference.classifier_epochs`), its initial weights and batches seeded and the
global random state untouched (what the method trains is the same with it or without). Only the memory and
the classifier are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.config.space import InferenceConfig
from growsearch.config.training import OptimizerSettings
from growsearch.data.memory import ExemplarMemory
from growsearch.errors import ConfigError
from growsearch.seeds import seed_torch
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.module_macs import module_macs
from growsearch.train.trainer import fit

EVAL_BATCH = 4096
_NETWORK = "network."  # the classifier's weights in `tensors()`; the memory's keep their own names


@dataclass(frozen=True)
class TaskClassifier:
    """The memory after a task and the classifier trained on it, over that task and every earlier one."""

    memory: ExemplarMemory  # classes are tasks: each task's exemplars, labelled with the task
    network: nn.Sequential  # flatten, Linear, ReLU, Linear: one logit per task

    @property
    def n_tasks(self) -> int:
        return len(self.memory.x)

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """The task each sample goes to: the classifier's most likely task."""
        self.network.eval()
        with torch.no_grad():
            parts = [
                self.network(x[s : s + EVAL_BATCH].float()).argmax(1) for s in range(0, len(x), EVAL_BATCH)
            ]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    def cost(self) -> dict[str, Any]:
        """What it keeps beside the method's network: its parameters and the exemplars it stores."""
        samples, _, _ = self.memory.samples()
        return {
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "memory_samples": len(samples),
            "memory_bytes": samples.numel() * samples.element_size(),
            "memory_capacity": self.memory.capacity,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the run folder keeps of it (safetensors): the memory and the classifier's weights."""
        weights = {_NETWORK + k: v.detach().clone() for k, v in self.network.state_dict().items()}
        return {**self.memory.tensors(), **weights}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TaskClassifier:
        memory = ExemplarMemory.from_tensors({k: v for k, v in tensors.items() if not k.startswith(_NETWORK)})
        weights = {k.removeprefix(_NETWORK): v for k, v in tensors.items() if k.startswith(_NETWORK)}
        hidden, features = weights["1.weight"].shape
        network = _network(features, hidden, weights["3.weight"].shape[0])
        network.load_state_dict(weights)
        return cls(memory, network)


def _network(features: int, hidden: int, tasks: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, tasks))


def learn_task(
    previous: TaskClassifier | None, task: int, x: torch.Tensor, config: InferenceConfig, seed: int
) -> TaskClassifier:
    """The classifier over tasks 0..`task`, trained from scratch (seeded) on the exemplars of `previous`
    (the classifier over the tasks before; None for the first) and the task's training inputs `x`, each
    task weighing the same; a copy of the memory takes the task's exemplars (`previous` stays whole)."""
    if task + 1 > config.memory:
        raise ConfigError(
            f"inference.memory: {config.memory} exemplars cannot hold one sample of each of {task + 1} "
            "tasks; expected a memory >= the number of tasks"
        )
    if previous is None:
        memory = ExemplarMemory(config.memory, "random")
    else:
        memory = ExemplarMemory.from_tensors(previous.memory.tensors())  # a copy: `previous` stays whole
    older, older_tasks, _ = memory.samples()
    new_tasks = torch.full((len(x),), task, dtype=torch.long)
    samples = torch.cat([older.view(-1, *x.shape[1:]), x.float()]) if len(older) else x.float()
    tasks = torch.cat([older_tasks, new_tasks])
    counts = torch.bincount(tasks, minlength=task + 1).float()
    weight = counts.sum() / (len(counts) * counts)  # each task weighs the same in the loss

    def balanced(output: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(output, batch.y, weight=weight)

    with torch.random.fork_rng():
        seed_torch(seed)
        network = _network(x[0].numel(), config.classifier_hidden, task + 1)
        batches = Minibatches([samples], tasks, config.batch_size, seed)
        fit(
            network,
            batches,
            list(network.parameters()),
            OptimizerSettings("adam", config.lr),
            epochs=config.classifier_epochs,
            loss=balanced,
            macs_per_sample=module_macs(network),
        )
    memory.add_task(task, x.float(), new_tasks, seed=seed)
    return TaskClassifier(memory, network)
