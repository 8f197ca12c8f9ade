"""The one training loop of growsearch.

`fit` batches in-memory tensors, steps optimisers built by the one factory (`train.optim`), checks every
loss, and counts multiply-adds. Methods change what a step does through `TrainingHooks`, never by writing
a loop of their own:
- `penalty`: a term added to every step's loss (DEN's L2 and drift terms); `batch_penalty`, one computed
  from the step's logits and batch (DER's auxiliary classifier); `parameters`, what such terms train
  besides the model (LwF's copy of an old head);
- `before_step` / `after_step`: callbacks around each optimiser step (MNTDP-S picks the candidate a step
  trains and updates its path distribution; DEN's proximal L1 and group-lasso steps);
- `phases`: extra optimiser steps taken before each training step on their own parameters and batches
  (DARTS's architecture step on a validation batch);
- `on_divergence`: a NaN or infinite loss fails the training with a `TrainingError` naming the epoch and
  step ("fail", the default), or puts the parameters back as they were when `fit` started and returns
  a result marked `diverged` ("restore": PathNet's diverged contestant loses);
- `should_stop`: asked after every step whether to stop early (DEN's validation-loss plateau).

Multiply-adds are counted per sample as forward + backward ~ 3 forward passes, and added to the
`MacCounter` of the enclosing `count_macs()` block, so a trial's compute is counted whatever trains it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.config.training import OptimizerSettings
from growsearch.errors import TrainingError
from growsearch.graph.compile import MaskedParameter
from growsearch.train.optim import make_optimizer


# ---- compute ---------------------------------------------------------------------------------------------
@dataclass
class MacCounter:
    """Multiply-adds spent inside a `count_macs()` block."""

    macs: int = 0


_COUNTERS: ContextVar[tuple[MacCounter, ...]] = ContextVar("growsearch_mac_counters", default=())


@contextmanager
def count_macs() -> Iterator[MacCounter]:
    """Count the multiply-adds every `fit` (and `spend_macs`) inside the block spends; blocks nest."""
    counter = MacCounter()
    token = _COUNTERS.set((*_COUNTERS.get(), counter))
    try:
        yield counter
    finally:
        _COUNTERS.reset(token)


def spend_macs(macs: int) -> None:
    """Add compute done outside `fit` (e.g. a frozen prefix computed once) to the enclosing counters."""
    for counter in _COUNTERS.get():
        counter.macs += int(macs)


# ---- data --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    inputs: tuple[torch.Tensor, ...]  # what the model is called with
    y: torch.Tensor


class Minibatches:
    """Seeded minibatches of tensors already in memory. Every pass over the samples is a fresh permutation
    drawn from the seeded generator: `epoch()` yields one pass, `next()` continues the stream where the
    previous call stopped (a new pass when one is used up). `transform` computes the model's inputs from
    a batch of the stored ones (a frozen prefix too large to cache)."""

    def __init__(
        self,
        inputs: Sequence[torch.Tensor],
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        transform: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    ):
        self.inputs, self.y, self.batch_size = tuple(inputs), y, batch_size
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position = torch.empty(0, dtype=torch.long), 0

    def __len__(self) -> int:
        return len(self.y)

    def _batch(self, index: torch.Tensor) -> Batch:
        if self.transform is not None:
            return Batch(tuple(self.transform(self.inputs[0][index.cpu()])), self.y[index])
        return Batch(tuple(t[index] for t in self.inputs), self.y[index])

    def _permutation(self) -> torch.Tensor:
        return torch.randperm(len(self.y), generator=self.generator).to(self.y.device)

    def epoch(self) -> Iterator[Batch]:
        for index in self.epoch_indices():
            yield self._batch(index)

    def epoch_indices(self) -> Iterator[torch.Tensor]:
        """One pass's sample indices, batch by batch (what `epoch` yields the samples of)."""
        order = self._permutation()
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def next(self) -> Batch:
        if self.position >= len(self.order):
            self.order, self.position = self._permutation(), 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self._batch(index)


# ---- hooks -------------------------------------------------------------------------------------------------
Penalty = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """An optimiser step taken before every training step, on its own parameters and batches, minimising
    cross-entropy plus `penalty` (DARTS's architecture step: the architecture weights on a validation
    batch, with Learn to Grow's cost term)."""

    parameters: Sequence[nn.Parameter]
    settings: OptimizerSettings
    batches: Minibatches
    penalty: Penalty | None = None
    macs_per_sample: int = 0
    # the phase's own loss of the model on its batch instead of the cross-entropy (a GAN's discriminator
    # step before each generator step)
    loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None


@dataclass(frozen=True)
class StepOutcome:
    step: int  # 1-based, counted over the whole fit
    loss: float  # the step's cross-entropy
    batch: Batch


@dataclass(frozen=True)
class TrainingHooks:
    penalty: Penalty | None = None
    before_step: Callable[[int], None] | None = None
    after_step: Callable[[StepOutcome], None] | None = None  # runs under no_grad, after the optimiser
    phases: tuple[Phase, ...] = ()
    on_divergence: Literal["fail", "restore"] = "fail"
    should_stop: Callable[[StepOutcome], bool] | None = None  # after a step: stop early (DEN's rule)
    # a term added to every step's loss from the step's logits and batch (DER's auxiliary classifier)
    batch_penalty: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None
    # trained besides the model's own parameters, by the same optimiser: what a penalty learns with
    # (LwF's copy of an old task's head, kept outside the graph)
    parameters: tuple[nn.Parameter, ...] = ()


NO_HOOKS = TrainingHooks()


# ---- results -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 0-based
    train_loss: float  # mean cross-entropy of the epoch's batches
    train_accuracy: float | None  # on those batches, as they were trained (None: not tracked)
    val_accuracy: float | None = None

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
        }


EpochCallback = Callable[[EpochStats], None]  # may raise (a pruner stopping the trial)


@dataclass(frozen=True)
class FitResult:
    epochs: tuple[EpochStats, ...]
    steps: int
    samples: int
    train_accuracy: float | None  # over every trained batch (None: not tracked)
    macs: int
    diverged: bool = False  # with on_divergence="restore": a loss was not finite, parameters put back
    stopped_early: bool = False  # `should_stop` ended the training
    last_step_loss: float = math.nan  # the cross-entropy of the last batch trained

    @property
    def last_loss(self) -> float:
        return self.epochs[-1].train_loss if self.epochs else math.nan


class _Diverged(Exception):
    """A loss was not finite under on_divergence="restore"."""


def _finite(value: float, what: str, epoch: int, step: int, hooks: TrainingHooks) -> float:
    """`value`, or the divergence policy's answer to a NaN or infinite loss: a TrainingError naming the
    epoch and step, or (restore) a `_Diverged` that puts the parameters back."""
    if math.isfinite(value):
        return value
    if hooks.on_divergence == "restore":
        raise _Diverged
    raise TrainingError(
        f"the {what} became {value} at epoch {epoch + 1}, step {step}; expected a finite loss "
        "(try a lower training.lr)"
    )


def _phase_step(
    phase: Phase,
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    epoch: int,
    step: int,
    hooks: TrainingHooks,
) -> int:
    batch = phase.batches.next()
    if phase.loss is not None:
        loss = phase.loss(model, batch)
    else:
        loss = F.cross_entropy(model(*batch.inputs), batch.y)
    if phase.penalty is not None:
        loss = loss + phase.penalty()
    _finite(loss.item(), "loss of an extra optimiser phase", epoch, step, hooks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return len(batch.y)


def fit(
    model: nn.Module,
    batches: Minibatches,
    parameters: Sequence[nn.Parameter],
    settings: OptimizerSettings,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    masked: Sequence[MaskedParameter] = (),
    hooks: TrainingHooks = NO_HOOKS,
    validate: Callable[[], float] | None = None,
    on_epoch: EpochCallback | None = None,
    macs_per_sample: int | Callable[[], int] = 0,
    track_accuracy: bool = False,
    loss: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
) -> FitResult:
    """Train `parameters` of `model` (called as `model(*batch.inputs)`, returning logits) on `batches`
    for `epochs` passes, or for `steps` minibatches continuing the batch stream. `masked` parameters train
    only where their mask allows: their gradient is masked and their other entries are put back after
    every step, whatever the optimiser does. `validate` is called after each epoch. `macs_per_sample` is
    one sample's forward pass (a callable when it changes from step to step: MNTDP-S's candidates).
    `track_accuracy` measures the training accuracy of the batches as they train (PathNet's fitness).
    `loss` computes a step's loss from the logits and the batch instead of their cross-entropy (a pack of
    candidates: the sum of each one's own)."""
    if (epochs is None) == (steps is None):
        raise ValueError("fit takes epochs or steps, not both")
    optimizer = make_optimizer(parameters, settings)
    extra = [(phase, make_optimizer(phase.parameters, phase.settings)) for phase in hooks.phases]
    handles = [m.parameter.register_hook(lambda g, keep=m.trainable: g * keep) for m in masked]
    restorable = [*parameters, *(p for phase in hooks.phases for p in phase.parameters)]
    snapshot = [p.detach().clone() for p in restorable] if hooks.on_divergence == "restore" else []
    history: list[EpochStats] = []
    step = samples = correct_total = spent = 0
    diverged = stopped = False
    last_loss = math.nan

    def charge(macs: int) -> None:
        nonlocal spent
        spent += macs
        spend_macs(macs)

    try:
        for epoch in range(1 if steps is not None else epochs):
            model.train()
            loss_sum, correct, seen = 0.0, torch.zeros((), dtype=torch.long, device=batches.y.device), 0
            stream = batches.epoch() if steps is None else (batches.next() for _ in range(steps))
            try:
                for batch in stream:
                    step += 1
                    for phase, phase_optimizer in extra:
                        n = _phase_step(phase, phase_optimizer, model, epoch, step, hooks)
                        charge(3 * phase.macs_per_sample * n)
                    if hooks.before_step is not None:
                        hooks.before_step(step)
                    per_sample = macs_per_sample() if callable(macs_per_sample) else macs_per_sample
                    logits = model(*batch.inputs)
                    ce = F.cross_entropy(logits, batch.y) if loss is None else loss(logits, batch)
                    value = _finite(ce.item(), "training loss", epoch, step, hooks)
                    total = ce
                    if hooks.penalty is not None:
                        total = total + hooks.penalty()
                    if hooks.batch_penalty is not None:
                        total = total + hooks.batch_penalty(logits, batch)
                    if total is not ce:
                        _finite(total.item(), "training loss with its penalty", epoch, step, hooks)
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    optimizer.step()
                    for m in masked:
                        m.restore_frozen()
                    if hooks.after_step is not None:
                        with torch.no_grad():
                            hooks.after_step(StepOutcome(step, value, batch))
                    n = len(batch.y)
                    last_loss = value
                    loss_sum += value * n
                    if track_accuracy:
                        correct += (logits.detach().argmax(1) == batch.y).sum()
                    seen += n
                    charge(3 * per_sample * n)
                    if hooks.should_stop is not None and hooks.should_stop(StepOutcome(step, value, batch)):
                        stopped = True
                        break
            except _Diverged:
                with torch.no_grad():
                    for parameter, before in zip(restorable, snapshot, strict=True):
                        parameter.copy_(before)
                diverged = True
            samples += seen
            correct_total += int(correct)
            if diverged:
                break
            model.eval()
            val = validate() if validate is not None else None
            accuracy = int(correct) / max(seen, 1) if track_accuracy else None
            stats = EpochStats(epoch, loss_sum / max(seen, 1), accuracy, val)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if stopped:
                break
    finally:
        for handle in handles:
            handle.remove()
    accuracy = correct_total / max(samples, 1) if track_accuracy else None
    return FitResult(tuple(history), step, samples, accuracy, spent, diverged, stopped, last_loss)
