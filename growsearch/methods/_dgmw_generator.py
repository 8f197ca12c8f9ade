"""DGMw's generator memory (Ostapenko, Puscas, Klein, Jaehnichen & Nabi, CVPR 2019): a conditional generator
whose hidden weights carry a learned binary mask per task, trained as an AC-GAN with WGAN-GP's losses
through the one trainer.

`GeneratorMemory` is the generator of every task so far as plain tensors (what DGMw keeps in its graph node's
`state`, so the run folder checksums and restores it exactly; a mapping of its own, which DGMw writes back
with `node_data.with_state`): shared hidden weight matrices that only grow, the union of the masks learnt
so far (`used`), and per task its mask per layer, its layer widths when it was learnt, its own biases, label
embedding and output layer, and its classes. Task k's samples are computed with the weights sliced to task
k's widths times task k's binary mask: later tasks train only weights no earlier mask uses, and the weights
they add lie outside the slice, so task k's samples never change.

`TaskGenerator` is the generator being learnt for a new task: every hidden weight is multiplied by
sigmoid(s e), HAT's annealed attention (`hard_attention`) on weights instead of units, binary (e > 0) once
learnt; weights an earlier mask uses are held exactly (the trainer's masked parameters). `train_gan` trains
it with a fresh discriminator (a WGAN critic and an auxiliary classifier over the task's classes) by `fit`,
as WGAN-GP (Gulrajani et al. 2017), the players stepped in turn: the critic's step, whose gradient penalty
differentiates it with respect to its input (`input_gradients`), a phase before every generator step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.methods.algorithms.hard_attention import Annealing, UnitAttention
from growsearch.methods.toolkit import (
    Batch,
    MaskedParameter,
    Minibatches,
    OptimizerSettings,
    Phase,
    StepOutcome,
    Training,
    derived_seed,
    fit,
    input_gradients,
)

EMBEDDING_CLAMP, COSH_CLAMP = 6.0, 50.0  # the authors' thres_emb and thres_cosh (HAT's)


def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """nn.Linear's initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from `generator`."""
    bound = 1 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class GeneratorMemory:
    """Every task's generator, as named tensors (see the module docstring for the layout)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    @classmethod
    def fresh(cls, latent: int, widths: Sequence[int], seed: int) -> GeneratorMemory:
        generator = torch.Generator().manual_seed(seed)
        tensors = {"latent": torch.tensor(latent)}
        reading = latent
        for i, width in enumerate(widths):
            tensors[f"L{i}.weight"] = _uniform((width, reading), reading, generator)
            tensors[f"L{i}.used"] = torch.zeros(width, reading, dtype=torch.bool)
            reading = width
        return cls(tensors)

    @property
    def latent(self) -> int:
        return int(self.tensors["latent"])

    @property
    def n_layers(self) -> int:
        return sum(1 for k in self.tensors if k.endswith(".used"))

    def weight(self, i: int) -> torch.Tensor:
        return self.tensors[f"L{i}.weight"]

    def used(self, i: int) -> torch.Tensor:
        return self.tensors[f"L{i}.used"]

    def widths(self) -> list[int]:
        return [self.weight(i).shape[0] for i in range(self.n_layers)]

    def tasks(self) -> list[int]:
        return sorted(int(k.split(".")[0][1:]) for k in self.tensors if k.endswith(".classes"))

    def classes(self, task: int) -> torch.Tensor:
        return self.tensors[f"t{task}.classes"]

    def mask(self, task: int, i: int) -> torch.Tensor:
        return self.tensors[f"t{task}.L{i}.mask"]

    def free_weights(self) -> list[int]:
        return [int((~self.used(i)).sum()) for i in range(self.n_layers)]

    def generate(self, task: int, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Task `task`'s samples of its classes `labels` (global class ids) from latent codes `z`."""
        local = torch.searchsorted(self.classes(task), labels)
        shape = tuple(self.tensors[f"t{task}.shape"].tolist())
        h = z
        with torch.no_grad():
            for i in range(self.n_layers):
                mask = self.mask(task, i)
                weight = self.weight(i)[: mask.shape[0], : mask.shape[1]].contiguous() * mask
                h = F.linear(h, weight, self.tensors[f"t{task}.L{i}.bias"])
                if i == 0:
                    h = h + self.tensors[f"t{task}.labels"][local]
                h = F.relu(h)
            out = torch.sigmoid(
                F.linear(h, self.tensors[f"t{task}.out.weight"], self.tensors[f"t{task}.out.bias"])
            )
        return out.view(len(z), *shape)

    def expand(self, newly_used: Sequence[int], seed: int) -> list[int]:
        """The paper's dynamic expansion: each hidden layer grows by as many units as hold the weights the
        last task newly reserved (the weights a grown layer gains from its input's new units count too), so
        the number of free weights is at least what it was before the task. Returns the units added."""
        generator = torch.Generator().manual_seed(seed)
        added, previous_added = [], 0
        for i in range(self.n_layers):
            weight, used = self.weight(i), self.used(i)
            rows, columns = weight.shape
            columns_new = columns + previous_added
            gained = previous_added * rows  # new columns of the existing rows: free weights already
            units = math.ceil(max(0, newly_used[i] - gained) / columns_new)
            grown = _uniform((rows + units, columns_new), columns_new, generator)
            grown[:rows, :columns] = weight
            held = torch.zeros(rows + units, columns_new, dtype=torch.bool)
            held[:rows, :columns] = used
            self.tensors[f"L{i}.weight"], self.tensors[f"L{i}.used"] = grown, held
            added.append(units)
            previous_added = units
        return added


class TaskGenerator(nn.Module):
    """Task t's generator while it is learnt: the shared hidden weights (those an earlier mask uses held),
    each multiplied by its attention mask, plus the task's own biases, label embedding and output layer."""

    def __init__(self, memory: GeneratorMemory, classes: torch.Tensor, shape: tuple[int, ...], seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.memory, self.shape = memory, shape
        self.register_buffer("classes", classes.clone())
        self.annealing = Annealing(1.0, 1)
        widths = memory.widths()
        self.weights = nn.ParameterList(memory.weight(i).clone() for i in range(memory.n_layers))
        self.biases = nn.ParameterList(
            _uniform((w,), memory.weight(i).shape[1], generator) for i, w in enumerate(widths)
        )
        self.labels = nn.Parameter(torch.randn(len(classes), widths[0], generator=generator))
        self.output = nn.Linear(widths[-1], math.prod(shape))
        with torch.no_grad():
            self.output.weight.copy_(_uniform(tuple(self.output.weight.shape), widths[-1], generator))
            self.output.bias.copy_(_uniform((math.prod(shape),), widths[-1], generator))
        self.attention = nn.ModuleList(
            UnitAttention(w.numel(), self.annealing, COSH_CLAMP) for w in self.weights
        )
        for mask in self.attention:  # the authors' start: every mask at sigmoid(0), undecided
            nn.init.zeros_(mask.embedding)

    def held(self) -> list[MaskedParameter]:
        """The hidden weights, trainable only where no earlier task's mask uses them."""
        return [
            MaskedParameter(w, ~self.memory.used(i).to(w.device), w.detach().clone(), "generator", f"L{i}")
            for i, w in enumerate(self.weights)
        ]

    def masks(self) -> list[torch.Tensor]:
        return [
            (m.soft() if self.training else m.binary()).view_as(w)
            for m, w in zip(self.attention, self.weights, strict=True)
        ]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = z
        for i, (weight, mask) in enumerate(zip(self.weights, self.masks(), strict=True)):
            h = F.linear(h, weight * mask, self.biases[i])
            if i == 0:
                h = h + self.labels[torch.searchsorted(self.classes, labels)]
            h = F.relu(h)
        return torch.sigmoid(self.output(h)).view(len(z), *self.shape)

    def sparsity(self, weight: float):
        """The paper's regulariser: weight * sum m (1 - used) / sum (1 - used), over the free weights."""
        free = [(~self.memory.used(i)).float() for i in range(len(self.weights))]
        n_free = float(sum(f.sum() for f in free))

        def penalty() -> torch.Tensor:
            pairs = zip(self.attention, free, strict=True)
            used = sum((m.soft() * f.to(m.embedding.device).flatten()).sum() for m, f in pairs)
            return weight * used / max(n_free, 1.0)

        return penalty

    def store(self, task: int) -> list[int]:
        """Write the learnt task into the memory (binary masks, its own parameters, the hidden weights) and
        return, per layer, the weights its mask is the first to use."""
        tensors, newly = self.memory.tensors, []
        for i, (weight, mask) in enumerate(zip(self.weights, self.attention, strict=True)):
            binary = mask.binary().view_as(weight).to("cpu", torch.bool)
            used = self.memory.used(i)
            newly.append(int((binary & ~used).sum()))
            tensors[f"L{i}.weight"] = weight.detach().cpu().clone()
            tensors[f"L{i}.used"] = used | binary
            tensors[f"t{task}.L{i}.mask"] = binary
            tensors[f"t{task}.L{i}.bias"] = self.biases[i].detach().cpu().clone()
        tensors[f"t{task}.labels"] = self.labels.detach().cpu().clone()
        tensors[f"t{task}.out.weight"] = self.output.weight.detach().cpu().clone()
        tensors[f"t{task}.out.bias"] = self.output.bias.detach().cpu().clone()
        tensors[f"t{task}.classes"] = self.classes.cpu().clone()
        tensors[f"t{task}.shape"] = torch.tensor(self.shape)
        return newly


class Discriminator(nn.Module):
    """An MLP with two outputs: the critic's score of a sample (WGAN's, unbounded) and the auxiliary
    classifier (AC-GAN)."""

    def __init__(self, features: int, width: int, n_classes: int):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, width),
            nn.LeakyReLU(0.2),
            nn.Linear(width, width),
            nn.LeakyReLU(0.2),
        )
        self.source, self.classes = nn.Linear(width, 1), nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.source(h).squeeze(1), self.classes(h)


def gradient_penalty(
    discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor, noise: torch.Generator
) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): (||grad_x D(x_hat)||_2 - 1)^2, the mean over random
    interpolates x_hat = a real + (1 - a) fake, a ~ U[0, 1] per sample (drawn from `noise`)."""
    a = torch.rand(len(real), generator=noise).to(real.device).view(-1, *[1] * (real.dim() - 1))
    interpolates = (a * real + (1 - a) * fake).detach().requires_grad_(True)
    score, _ = discriminator(interpolates)
    gradient = input_gradients(score, interpolates)
    return ((gradient.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


class ConditionalGAN(nn.Module):
    """The two players, stepped in turn: the critic's step (`critic_loss`, a phase of the trainer before
    every generator step) on a real batch and samples of its labels, the generator held; then the
    generator's step (`forward`: samples of the batch's labels as the critic judges them, only the
    generator's parameters stepped). One seeded noise stream serves both, and the interpolates."""

    def __init__(self, generator: TaskGenerator, discriminator: Discriminator, seed: int):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.noise = torch.Generator().manual_seed(seed)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(labels), self.generator.memory.latent, generator=self.noise).to(labels.device)
        return self.generator(z, labels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(self.sample(labels))

    def critic_loss(self, batch: Batch, classes: torch.Tensor, penalty_weight: float) -> torch.Tensor:
        """WGAN-GP's critic loss on the real batch and samples of its labels, D(fake) - D(real) plus
        `penalty_weight` times the gradient penalty, and AC-GAN's class loss on the real batch."""
        x, labels = batch.inputs
        with torch.no_grad():
            fake = self.sample(labels)
        real_score, real_classes = self.discriminator(x)
        fake_score, _ = self.discriminator(fake)
        penalty = gradient_penalty(self.discriminator, x, fake, self.noise)
        return (
            fake_score.mean()
            - real_score.mean()
            + penalty_weight * penalty
            + F.cross_entropy(real_classes, torch.searchsorted(classes, batch.y))
        )


@dataclass(frozen=True)
class GANTraining:
    """What training the task's GAN did: steps, and its last step's loss."""

    epochs: int
    steps: int
    last_loss: float


def train_gan(
    generator: TaskGenerator,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: OptimizerSettings,
    *,
    epochs: int,
    batch_size: int,
    discriminator_width: int,
    class_weight: float,
    penalty_weight: float,
    sparsity: float,
    s_max: float,
    seed: int,
) -> GANTraining:
    """Train `generator` on the task's samples `x` of classes `y` (global ids) with a fresh discriminator, as
    WGAN-GP with AC-GAN's classifier: the critic's loss with its gradient penalty (`penalty_weight`) and its
    class loss, one critic step before each generator step; the generator's adversarial loss -D(fake) plus
    `class_weight` times its class loss, and the masks' sparsity; s annealed over the training."""
    classes = generator.classes
    discriminator = Discriminator(math.prod(x.shape[1:]), discriminator_width, len(classes))
    gan = ConditionalGAN(generator, discriminator, seed).to(x.device)
    batches = Minibatches([x, y], y, batch_size, seed)
    generator.annealing.s_max = s_max
    generator.annealing.batches = epochs * math.ceil(len(y) / batch_size)  # one ramp, 1/s_max to s_max

    def generator_loss(outputs: tuple[torch.Tensor, torch.Tensor], batch: Batch) -> torch.Tensor:
        fooled_score, fooled_classes = outputs  # WGAN's, and AC-GAN's class loss
        return -fooled_score.mean() + class_weight * F.cross_entropy(
            fooled_classes, torch.searchsorted(classes, batch.y)
        )

    def clamp(outcome: StepOutcome) -> None:
        for mask in generator.attention:
            mask.embedding.clamp_(-EMBEDDING_CLAMP, EMBEDDING_CLAMP)

    # one sample's multiply-adds: the generator's and the discriminator's weight matrices
    generating = sum(w.numel() for w in generator.weights) + generator.output.weight.numel()
    judging = sum(m.weight.numel() for m in discriminator.modules() if isinstance(m, nn.Linear))
    discriminator_step = Phase(
        list(discriminator.parameters()),
        settings,
        Minibatches([x, y], y, batch_size, derived_seed(seed, "discriminator")),
        # a sample generated; it, a real one and their interpolate judged, and the interpolate's gradient
        macs_per_sample=generating + 4 * judging,
        loss=lambda model, batch: model.critic_loss(batch, classes, penalty_weight),
    )
    training = Training(
        phases=(discriminator_step,),
        before_step=generator.annealing.before_step,
        penalty=generator.sparsity(sparsity),
        after_step=clamp,
    )
    parameters = [p for p in generator.parameters() if p.requires_grad]
    result = fit(
        gan,
        batches,
        parameters,
        settings,
        epochs=epochs,
        masked=generator.held(),
        training=training,
        macs_per_sample=generating + judging,
        loss=generator_loss,
    )
    gan.eval()
    return GANTraining(epochs, result.steps, result.last_step_loss)
