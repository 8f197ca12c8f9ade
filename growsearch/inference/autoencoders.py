"""ExpertGate's gate (Aljundi, Chakravarty & Tuytelaars, CVPR 2017): which task a sample belongs to.

One undercomplete autoencoder per task, trained on that task's inputs only: the input is standardised with
the task's own training statistics and squashed by a sigmoid into (0, 1); the encoder is one dense layer
with a ReLU, the decoder one dense layer with a sigmoid, trained to reconstruct (mean squared error,
through the one trainer with a `loss=`). A sample goes to the task whose autoencoder reconstructs it best:
the softmax with temperature t over the negative reconstruction errors (the paper's t = 2) picks it.

On sequence inputs (`(steps, features)` per sample: GIM, Cossu et al. 2020) the autoencoder is recurrent,
as GIM's gate: an LSTM encoder whose last state is the code, an LSTM decoder reading the code at every step
and a dense sigmoid output per step (`inference.autoencoder`: auto picks it for sequences).

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
from growsearch.errors import ConfigError
from growsearch.seeds import seed_torch
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.module_macs import module_macs
from growsearch.train.trainer import fit

EVAL_BATCH = 4096
STD_FLOOR = 1e-3  # features constant over a task (a digit's blank border) are not divided by zero


@dataclass
class TaskAutoencoder:
    """One task's autoencoder and the statistics its input is standardised with."""

    mean: torch.Tensor  # (features,) of the flattened input
    std: torch.Tensor
    network: nn.Module  # dense: Linear, ReLU, Linear, Sigmoid; recurrent: `SequenceAutoencoder`

    @property
    def recurrent(self) -> bool:
        return isinstance(self.network, SequenceAutoencoder)

    def prepared(self, x: torch.Tensor) -> torch.Tensor:
        """The autoencoder's input and target: standardised with the task's statistics, then a sigmoid
        (flat for the dense autoencoder, as (steps, features) for the recurrent one)."""
        squashed = torch.sigmoid((x.flatten(1) - self.mean) / self.std)
        return squashed.view(x.shape) if self.recurrent else squashed

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample's reconstruction error (mean squared over its features)."""
        out = []
        self.network.eval()
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                target = self.prepared(x[start : start + EVAL_BATCH])
                out.append(((self.network(target) - target) ** 2).flatten(1).mean(1))
        return torch.cat(out) if out else torch.empty(0)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the run folder keeps of it (safetensors)."""
        state = {f"network.{k}": v.detach().clone() for k, v in self.network.state_dict().items()}
        return {"mean": self.mean.clone(), "std": self.std.clone(), **state}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TaskAutoencoder:
        weights = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")}
        network: nn.Module
        if "encoder.weight_ih_l0" in weights:
            code, features = (
                weights["encoder.weight_hh_l0"].shape[1],
                weights["encoder.weight_ih_l0"].shape[1],
            )
            network = SequenceAutoencoder(features, code)
        else:
            network = _network(weights["0.weight"].shape[1], weights["0.weight"].shape[0])
        network.load_state_dict(weights)
        return cls(tensors["mean"], tensors["std"], network)


class SequenceAutoencoder(nn.Module):
    """GIM's gate for sequences: an LSTM encoder's last state is the code; an LSTM decoder reads the code
    at every step, and a dense sigmoid layer gives each step's features back."""

    def __init__(self, features: int, code: int):
        super().__init__()
        self.encoder = nn.LSTM(features, code, batch_first=True)
        self.decoder = nn.LSTM(code, code, batch_first=True)
        self.output = nn.Linear(code, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (code, _) = self.encoder(x)
        repeated = code[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        decoded, _ = self.decoder(repeated)
        return torch.sigmoid(self.output(decoded))


def _network(features: int, code: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, code), nn.ReLU(), nn.Linear(code, features), nn.Sigmoid())


def _is_sequence(x: torch.Tensor) -> bool:
    return x.dim() == 3  # (samples, steps, features); images are (samples, C, H, W)


def train_autoencoder(x: torch.Tensor, config: InferenceConfig, seed: int) -> TaskAutoencoder:
    """The autoencoder of a task whose training inputs are `x` (its initial weights and batches seeded)."""
    flat = x.flatten(1).float()
    mean, std = flat.mean(0), flat.std(0).clamp(min=STD_FLOOR)
    recurrent = config.autoencoder == "lstm" or (config.autoencoder == "auto" and _is_sequence(x))
    if recurrent and not _is_sequence(x):
        raise ConfigError(
            f"inference.autoencoder: lstm reads (steps, features) sequences; the inputs have shape "
            f"{tuple(x.shape[1:])}: expected a sequence benchmark, or autoencoder auto or dense"
        )
    with torch.random.fork_rng():
        seed_torch(seed)
        if recurrent:
            network: nn.Module = SequenceAutoencoder(
                x.shape[2], min(config.code_size, x.shape[2] * x.shape[1])
            )
        else:
            network = _network(flat.shape[1], min(config.code_size, flat.shape[1]))
    autoencoder = TaskAutoencoder(mean, std, network)
    target = autoencoder.prepared(x.float())
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
        macs_per_sample=module_macs(network, x.shape[1] if recurrent else 1),
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
