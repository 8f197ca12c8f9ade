"""An exemplar memory: a fixed number of stored training samples, shared equally by the classes seen so far.

What rehearsal methods keep of old tasks (RPS-Net, DER, and iCaRL before them): `capacity` samples in all,
`capacity // classes` per class, so adding a task's classes shrinks every older class's share. Samples are
chosen per class by `herding` (Rebuffi et al. 2017, iCaRL's Algorithm 4: greedily, the sample that brings
the mean of the chosen features closest to the class's mean feature) or at random (a seeded permutation).
Each class keeps its exemplars in the order they were chosen, so shrinking keeps a prefix: under herding,
the exemplars that best approximate the class mean, as iCaRL's reduction does.

The memory is plain tensors (`tensors()` / `from_tensors`), so a run folder keeps it under checksums
beside a task's weights and a resume restores it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from growsearch.data.task import Split
from growsearch.errors import ConfigError

Strategy = Literal["herding", "random"]


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of `count` rows of `features` (one class's samples), chosen greedily without replacement so
    that the running mean of the chosen (L2-normalised) features stays closest to the class mean."""
    normalised = torch.nn.functional.normalize(features.flatten(1).double(), dim=1)
    target = normalised.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(target)
    available = torch.ones(len(normalised), dtype=torch.bool)
    for k in range(1, min(count, len(normalised)) + 1):
        distances = ((target - (total + normalised) / k) ** 2).sum(1)
        distances[~available] = float("inf")
        pick = int(distances.argmin())
        chosen.append(pick)
        available[pick] = False
        total += normalised[pick]
    return torch.tensor(chosen, dtype=torch.long)


@dataclass
class ExemplarMemory:
    """At most `capacity` stored samples, class-balanced; per class, in the order they were chosen."""

    capacity: int
    strategy: Strategy = "herding"
    x: dict[int, torch.Tensor] = field(default_factory=dict)  # class -> its exemplars, chosen order
    task: dict[int, int] = field(default_factory=dict)  # class -> the task it came with

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"exemplar memory capacity: expected an integer >= 1, got {self.capacity}")
        if self.strategy not in ("herding", "random"):
            raise ConfigError(f"exemplar memory strategy: expected herding or random, got {self.strategy!r}")

    @property
    def per_class(self) -> int:
        return self.capacity // max(len(self.x), 1)

    def add_task(
        self,
        task_id: int,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        seed: int,
        features: torch.Tensor | None = None,
    ) -> None:
        """Store exemplars of the classes in `y` (labels as the stream gives them; classes already held
        are refused), then shrink every class to the new equal share. `features` (one row per sample)
        drive herding; without them, the flattened inputs do."""
        new = sorted(int(c) for c in torch.unique(y))
        held = sorted(set(new) & set(self.x))
        if held:
            raise ConfigError(
                f"exemplar memory: classes {held} are already stored; a task brings new classes"
            )
        share = self.capacity // (len(self.x) + len(new))
        if share < 1:
            raise ConfigError(
                f"exemplar memory: {self.capacity} exemplars cannot hold one sample of each of "
                f"{len(self.x) + len(new)} classes; expected a capacity >= the number of classes"
            )
        generator = torch.Generator().manual_seed(seed)
        described = x if features is None else features
        for c in new:
            members = torch.nonzero(y == c).flatten()
            if self.strategy == "herding":
                order = members[herding_order(described[members], share)]
            else:
                order = members[torch.randperm(len(members), generator=generator)[:share]]
            self.x[c] = x[order].clone()
            self.task[c] = task_id
        for c in self.x:
            self.x[c] = self.x[c][:share]

    def samples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every exemplar: inputs, class labels and the task each came with (classes in order)."""
        classes = sorted(self.x)
        if not classes:
            return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        xs = torch.cat([self.x[c] for c in classes])
        ys = torch.cat([torch.full((len(self.x[c]),), c, dtype=torch.long) for c in classes])
        tasks = torch.cat([torch.full((len(self.x[c]),), self.task[c], dtype=torch.long) for c in classes])
        return xs, ys, tasks

    def __len__(self) -> int:
        return sum(len(v) for v in self.x.values())

    def joined(self, split: Split) -> Split:
        """`split`'s samples followed by every exemplar (what a rehearsal method trains a task on)."""
        if not self.x:
            return split
        xs, ys, _ = self.samples()
        return Split(torch.cat([split.x, xs.to(split.x.dtype)]), torch.cat([split.y, ys]))

    def tensors(self) -> dict[str, torch.Tensor]:
        """What a run folder keeps (safetensors): per class, its exemplars in order and its task."""
        out = {"capacity": torch.tensor(self.capacity), "herding": torch.tensor(self.strategy == "herding")}
        for c, x in self.x.items():
            out[f"class.{c}.x"] = x.contiguous()
            out[f"class.{c}.task"] = torch.tensor(self.task[c])
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ExemplarMemory:
        strategy: Strategy = "herding" if bool(tensors["herding"]) else "random"
        memory = cls(int(tensors["capacity"]), strategy)
        classes = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("class.") and k.endswith(".x"))
        for c in classes:
            memory.x[c] = tensors[f"class.{c}.x"].clone()
            memory.task[c] = int(tensors[f"class.{c}.task"])
        return memory


def class_balanced(split: Split, seed: int) -> Split:
    """As many samples of each class of `split` as its rarest class has, drawn at random (seeded): what a
    classifier is rebalanced on after training on a few exemplars of old classes and all of the new."""
    classes = torch.unique(split.y)
    count = min(int((split.y == c).sum()) for c in classes)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = torch.nonzero(split.y == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    index = torch.cat(chosen)
    return Split(split.x[index], split.y[index])
