"""How a method changes the training of its candidate: one object, `Training`, handed to the one trainer.

A method returns it with its candidate (`Candidate.training`); inner training loops (DARTS's search, a
GAN, a distillation) hand it to `fit` directly. Every field is optional; `PLAIN` changes nothing. What the
fields do, in the order the trainer meets them:

- when the candidate is compiled: `gates` (node id -> a module multiplying that node's output while the
  task trains: HAT's attention being learnt; such a node runs per batch even when frozen), `train_masks`
  (node id -> parameter -> which entries train; the others are held exactly: HAT's used weights) and
  `changing` (frozen nodes whose output changes as the task trains: a weight mask being learnt);
- once, before the first step: `start(TrainingRun)`, which sees the compiled candidate, its batches and
  how many steps training takes (an annealing schedule's length; Piggyback attaches its masks here);
- every step: `phases` (extra optimiser steps on their own parameters and batches: DARTS's architecture
  step, a GAN's discriminator step), `before_step`, the loss with `penalty` (a term: DEN's L2, HAT's
  attention regulariser) and `batch_penalty` (a term from the step's logits and batch: DER's auxiliary
  classifier, distillation), `parameters` trained besides the model by the same optimiser (LwF's copy of
  an old head), then `after_step` (under no_grad: proximal steps, clamps) and `should_stop`;
- a loss that is not finite: `on_divergence` "fail" (a `TrainingError` naming epoch and step) or
  "restore" (parameters put back, the result marked diverged: PathNet's losing contestant);
- after the last step: `finish(graph, program)` returns the trained graph with what the task learnt
  besides weights (its gates, its masks), through growth operators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from growsearch.config.training import OptimizerSettings
from growsearch.train.batches import Batch, Minibatches

if TYPE_CHECKING:
    from growsearch.graph.compile import TrainingProgram
    from growsearch.graph.module_graph import ModuleGraph

Penalty = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class StepOutcome:
    step: int  # 1-based, counted over the whole fit
    loss: float  # the step's cross-entropy (or its `loss=`)
    batch: Batch


@dataclass(frozen=True)
class Phase:
    """An optimiser step taken before every training step, on its own parameters and batches, minimising
    cross-entropy plus `penalty` (DARTS's architecture step: the architecture weights on a validation
    batch, with Learn to Grow's cost term), or its own `loss` of the model on its batch (a GAN's
    discriminator step before each generator step; it may differentiate through gradients:
    `train.trainer.input_gradients`)."""

    parameters: Sequence[nn.Parameter]
    settings: OptimizerSettings
    batches: Minibatches
    penalty: Penalty | None = None
    macs_per_sample: int = 0
    loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None


@dataclass(frozen=True)
class TrainingRun:
    """What `Training.start` sees: the compiled candidate, its batches, and the length of its training."""

    program: TrainingProgram
    batches: Minibatches
    epochs: int

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.batches) // self.batches.batch_size))

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Training:
    """How one training differs from plain cross-entropy on the trainable weights (see the module doc)."""

    gates: Mapping[str, nn.Module] = field(default_factory=dict)
    train_masks: Mapping[str, Mapping[str, torch.Tensor]] | None = None
    changing: tuple[str, ...] = ()
    start: Callable[[TrainingRun], None] | None = None
    phases: tuple[Phase, ...] = ()
    before_step: Callable[[int], None] | None = None
    penalty: Penalty | None = None
    batch_penalty: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None
    parameters: tuple[nn.Parameter, ...] = ()
    after_step: Callable[[StepOutcome], None] | None = None  # runs under no_grad, after the optimiser
    should_stop: Callable[[StepOutcome], bool] | None = None  # after a step: stop early (DEN's rule)
    on_divergence: Literal["fail", "restore"] = "fail"
    finish: Callable[[ModuleGraph, TrainingProgram], ModuleGraph] | None = None


PLAIN = Training()
