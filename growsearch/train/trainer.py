"""The one training loop of growsearch.

`fit` batches in-memory tensors (`train.batches.Minibatches`), steps optimisers built by the one factory
(`train.optim`), checks every loss, and counts multiply-adds. How a method changes a step (penalties,
extra optimiser phases, callbacks around the step, early stopping, the divergence policy) is one
`train.extension.Training` object, never a loop of its own. A penalty may differentiate through gradients
(WGAN-GP's gradient penalty): `input_gradients` is the one place outside `fit` that differentiates, with
a graph the loss then backpropagates through.

Multiply-adds are counted per sample as forward + backward ~ 3 forward passes, and added to the
`MacCounter` of the enclosing `count_macs()` block, so a trial's compute is counted whatever trains it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.config.training import OptimizerSettings
from growsearch.errors import TrainingError
from growsearch.graph.compile import MaskedParameter
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.epoch_stats import EpochStats
from growsearch.train.extension import PLAIN, Phase, StepOutcome, Training
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


# ---- results -----------------------------------------------------------------------------------------------
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


def input_gradients(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d sum(outputs) / d inputs, kept differentiable (create_graph): a penalty on it trains through it
    (WGAN-GP's gradient penalty on the critic's gradient at interpolated samples)."""
    (gradient,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return gradient


class _Diverged(Exception):
    """A loss was not finite under on_divergence="restore"."""


def _finite(value: float, what: str, epoch: int, step: int, training: Training) -> float:
    """`value`, or the divergence policy's answer to a NaN or infinite loss: a TrainingError naming the
    epoch and step, or (restore) a `_Diverged` that puts the parameters back."""
    if math.isfinite(value):
        return value
    if training.on_divergence == "restore":
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
    training: Training,
) -> int:
    batch = phase.batches.next()
    if phase.loss is not None:
        loss = phase.loss(model, batch)
    else:
        loss = F.cross_entropy(model(*batch.inputs), batch.y)
    if phase.penalty is not None:
        loss = loss + phase.penalty()
    _finite(loss.item(), "loss of an extra optimiser phase", epoch, step, training)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return len(batch.y)


def mask_gradient(parameter: torch.Tensor, keep: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Zero the entries of `parameter`'s gradient that `keep` leaves out, in place, once each step's
    gradient is in `.grad` (no tensor made per step)."""

    def mask(tensor: torch.Tensor) -> None:
        assert tensor.grad is not None
        tensor.grad.mul_(keep)

    return parameter.register_post_accumulate_grad_hook(mask)


def fit(
    model: nn.Module,
    batches: Minibatches,
    parameters: Sequence[nn.Parameter],
    settings: OptimizerSettings,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    masked: Sequence[MaskedParameter] = (),
    training: Training = PLAIN,
    validate: Callable[[], float] | None = None,
    on_epoch: EpochCallback | None = None,
    macs_per_sample: int | Callable[[], int] = 0,
    track_accuracy: bool = False,
    loss: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    autocast: torch.dtype | None = None,
    on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
) -> FitResult:
    """Train `parameters` of `model` (called as `model(*batch.inputs)`, returning logits), and the
    `training`'s own parameters, on `batches` for `epochs` passes, or for `steps` minibatches continuing
    the batch stream. `masked` parameters train only where their mask allows: their gradient is masked
    and their other entries are put back after every step, whatever the optimiser does. `validate` is
    called after each epoch. `macs_per_sample` is one sample's forward pass (a callable when it changes
    from step to step: MNTDP-S's candidates). The training accuracy of the batches as they train is
    measured whenever the loss is the cross-entropy with class labels (curves.csv's train_accuracy), and
    with `track_accuracy` whatever the loss (PathNet's fitness); the correct predictions are counted on
    the device and read once per epoch. `loss` computes a step's loss from the logits and the batch
    instead of their cross-entropy (a pack of candidates: the sum of each one's own). `lr_schedule` maps a
    0-based step to the factor of the learning rate (`train.schedules`); `autocast` runs the forward pass
    and the loss in that precision (bf16 on CUDA). `on_optimizer` is called once with the optimiser built
    for `parameters` (a pack sheds the rows of candidates that stop from its state)."""
    if (epochs is None) == (steps is None):
        raise ValueError("fit takes epochs or steps, not both")
    parameters = [*parameters, *training.parameters]
    optimizer = make_optimizer(parameters, settings)
    if on_optimizer is not None:
        on_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule) if lr_schedule else None
    precision = (
        torch.autocast(batches.y.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    )
    extra = [(phase, make_optimizer(phase.parameters, phase.settings)) for phase in training.phases]
    handles = [mask_gradient(m.parameter, m.trainable) for m in masked]
    restorable = [*parameters, *(p for phase in training.phases for p in phase.parameters)]
    snapshot = [p.detach().clone() for p in restorable] if training.on_divergence == "restore" else []
    tracked = track_accuracy or (loss is None and batches.y.dtype == torch.long)
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
                        n = _phase_step(phase, phase_optimizer, model, epoch, step, training)
                        charge(3 * phase.macs_per_sample * n)
                    if training.before_step is not None:
                        training.before_step(step)
                    per_sample = macs_per_sample() if callable(macs_per_sample) else macs_per_sample
                    with precision:
                        logits = model(*batch.inputs)
                        ce = F.cross_entropy(logits, batch.y) if loss is None else loss(logits, batch)
                    value = _finite(ce.item(), "training loss", epoch, step, training)
                    total = ce
                    if training.penalty is not None:
                        total = total + training.penalty()
                    if training.batch_penalty is not None:
                        total = total + training.batch_penalty(logits, batch)
                    if total is not ce:
                        _finite(total.item(), "training loss with its penalty", epoch, step, training)
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    for m in masked:
                        m.restore_frozen()
                    if training.after_step is not None:
                        with torch.no_grad():
                            training.after_step(StepOutcome(step, value, batch))
                    n = len(batch.y)
                    last_loss = value
                    loss_sum += value * n
                    if tracked:
                        correct += (logits.detach().argmax(1) == batch.y).sum()
                    seen += n
                    charge(3 * per_sample * n)
                    if training.should_stop is not None and training.should_stop(
                        StepOutcome(step, value, batch)
                    ):
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
            accuracy = int(correct) / max(seen, 1) if tracked else None
            stats = EpochStats(epoch, loss_sum / max(seen, 1), accuracy, val)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if stopped:
                break
    finally:
        for handle in handles:
            handle.remove()
    accuracy = correct_total / max(samples, 1) if tracked else None
    return FitResult(tuple(history), step, samples, accuracy, spent, diverged, stopped, last_loss)
