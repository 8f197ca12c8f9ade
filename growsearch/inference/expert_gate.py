"""ExpertGate's gate (Aljundi, Chakravarty & Tuytelaars, CVPR 2017): which task a sample belongs to.

One undercomplete autoencoder per task, trained on that task's inputs only: the input is standardised with
the task's own training statistics and squashed by a sigmoid into (0, 1); the encoder is one dense layer
with a ReLU, the decoder one dense layer with a sigmoid, trained to reconstruct (mean squared error,
through the one trainer with a `loss=`). A sample goes to the task whose autoencoder reconstructs it best:
the softmax with temperature t over the negative reconstruction errors (the paper's t = 2) picks it.

The same errors give the paper's task relatedness, `1 - (Er_k - Er_a) / Er_a`, where Er_a is the new
task's own autoencoder's error on the new task's data and Er_k an earlier task's autoencoder's error on
it: the most related earlier task is the expert a new one starts from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from growsearch.config.space import InferenceConfig
from growsearch.config.training import OptimizerSettings
from growsearch.train.trainer import Batch, Minibatches, fit

EVAL_BATCH = 4096
STD_FLOOR = 1e-3  # features constant over a task (a digit's blank border) are not divided by zero


@dataclass
class TaskAutoencoder:
    """One task's autoencoder and the statistics its input is standardised with."""

    mean: torch.Tensor  # (features,)
    std: torch.Tensor
    network: nn.Sequential  # Linear, ReLU, Linear, Sigmoid

    def prepared(self, x: torch.Tensor) -> torch.Tensor:
        """The autoencoder's input and target: standardised with the task's statistics, then a sigmoid."""
        return torch.sigmoid((x.flatten(1) - self.mean) / self.std)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample's reconstruction error (mean squared over its features)."""
        out = []
        self.network.eval()
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                target = self.prepared(x[start : start + EVAL_BATCH])
                out.append(((self.network(target) - target) ** 2).mean(1))
        return torch.cat(out) if out else torch.empty(0)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the run folder keeps of it (safetensors)."""
        state = {f"network.{k}": v.detach().clone() for k, v in self.network.state_dict().items()}
        return {"mean": self.mean.clone(), "std": self.std.clone(), **state}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TaskAutoencoder:
        weights = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")}
        features, code = weights["0.weight"].shape[1], weights["0.weight"].shape[0]
        network = _network(features, code)
        network.load_state_dict(weights)
        return cls(tensors["mean"], tensors["std"], network)


def _network(features: int, code: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, code), nn.ReLU(), nn.Linear(code, features), nn.Sigmoid())


def train_autoencoder(x: torch.Tensor, config: InferenceConfig, seed: int) -> TaskAutoencoder:
    """The autoencoder of a task whose training inputs are `x` (its initial weights and batches seeded)."""
    flat = x.flatten(1).float()
    mean, std = flat.mean(0), flat.std(0).clamp(min=STD_FLOOR)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = _network(flat.shape[1], min(config.code_size, flat.shape[1]))
    autoencoder = TaskAutoencoder(mean, std, network)
    target = autoencoder.prepared(flat)
    batches = Minibatches([target], torch.zeros(len(target), dtype=torch.long), config.batch_size, seed)

    def reconstruction(output: torch.Tensor, batch: Batch) -> torch.Tensor:
        return nn.functional.mse_loss(output, batch.inputs[0])

    fit(
        network,
        batches,
        list(network.parameters()),
        OptimizerSettings("adam", config.lr),
        epochs=config.epochs,
        loss=reconstruction,
    )
    return autoencoder


def task_probabilities(
    autoencoders: list[TaskAutoencoder], x: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(samples, tasks): the softmax with temperature over the negative reconstruction errors."""
    errors = torch.stack([ae.errors(x) for ae in autoencoders], dim=1)
    return torch.softmax(-errors / temperature, dim=1)


def route(autoencoders: list[TaskAutoencoder], x: torch.Tensor, temperature: float) -> torch.Tensor:
    """The task each sample goes to: the one whose autoencoder reconstructs it best."""
    return task_probabilities(autoencoders, x, temperature).argmax(1)


def relatedness(earlier: TaskAutoencoder, new: TaskAutoencoder, x_new: torch.Tensor) -> float:
    """The paper's relatedness of an earlier task to a new one, from the reconstruction errors of both
    autoencoders on the new task's data: 1 - (Er_earlier - Er_new) / Er_new (1 when the earlier task's
    autoencoder reconstructs the new data as well as the new task's own)."""
    er_new, er_earlier = float(new.errors(x_new).mean()), float(earlier.errors(x_new).mean())
    return 1.0 - (er_earlier - er_new) / er_new if er_new > 0 else math.nan
