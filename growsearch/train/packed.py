"""Train K candidates of one task at once (a pack): one vectorised computation instead of K trainings.

The candidates are aligned into one template graph (`graph.align`); each candidate's weights, padded to
the template, are stacked along a leading dimension, and the template's trainable suffix runs over all of
them: one forward, one backward and one optimiser step per batch for the whole pack, batched matrix
products instead of K small ones (`train.stacked_suffix` where the suffix is dense layers, else
`torch.func.vmap` of `functional_call`). The frozen prefix (old columns, reused modules) is computed once
for the pack, or read from the task's `PrefixCache`.

Each candidate sees what it would see trained alone by `train_candidate`: its own initial weights, its own
seeded batch order (every candidate has the same number of samples, so the packs' batches line up), and
an optimiser state of its own: the optimisers growsearch builds act entry by entry, so one optimiser over
the stacked tensors is K independent ones. The loss is the sum of the candidates' mean cross-entropies,
so each candidate's gradient is its own; entries a candidate does not train (its padding, weights owned
by others) have their gradient masked and are put back after every step, as `fit` does. Results match
unpacked training to float tolerance (summation order differs). A candidate whose loss is not finite
fails alone (a `TrainingError` naming the epoch and step), and one whose epoch callback raises (a pruner,
successive halving) stops alone; the others go on, and after that epoch the stacked tensors (with their
optimiser state) hold only their rows.

Only candidates trained without a method's `Training` pack (no gates, masks or hooks being learnt), on
parameter-only modules (no batch norm); `NotPackable` says why not, and the caller trains them one by one
(or, where only the padding was too costly, in smaller packs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from growsearch.config.training import TrainingConfig
from growsearch.data.task import Split
from growsearch.errors import GraphError, TrainingError
from growsearch.graph.align import Alignment, align
from growsearch.graph.compile import MaskedParameter, compile_for_training, frozen_prefix
from growsearch.graph.module_graph import ModuleGraph
from growsearch.journal_writes import together
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.candidate import (
    EVAL_BATCH,
    MAX_CACHED_BYTES,
    TrainingResult,
    cached_prefix_outputs,
    prefix_outputs,
    resolve_device,
)
from growsearch.train.extension import Training
from growsearch.train.frozen_modules import FrozenModules
from growsearch.train.prefix_cache import PrefixCache
from growsearch.train.stacked_suffix import stacked_suffix
from growsearch.train.trainer import EpochCallback, EpochStats, fit, mask_gradient


class NotPackable(Exception):
    """These candidates cannot train as one pack (the message says why); train them one by one, or, where
    `padding` is set (padding them to one template would multiply their compute by that much), in smaller
    packs."""

    def __init__(self, message: str, padding: float | None = None):
        super().__init__(message)
        self.padding = padding


@dataclass(frozen=True)
class PackMember:
    graph: ModuleGraph  # the candidate, with its initial weights
    seed: int  # its batch order's seed, as `train_candidate` takes it
    on_epoch: EpochCallback | None = None  # may raise (a pruner stopping this candidate)


@dataclass(frozen=True)
class PackedOutcome:
    result: TrainingResult | None  # None when the candidate failed or was stopped
    error: BaseException | None  # the TrainingError of a diverged candidate, or what its callback raised
    train_macs: int  # its own compute, counted as `train_candidate` counts it alone


def _macs(graph: ModuleGraph, task: int) -> tuple[int, int]:
    """One sample's multiply-adds through the candidate's frozen prefix and through the rest."""
    view = graph.view(task)
    fixed = frozen_prefix(graph, view)
    total = graph.macs(view)
    prefix = total - graph.macs([n for n in view if n not in fixed])
    return prefix, total - prefix


class _Stack:
    """The pack's trainable tensors: per template parameter, K candidates' padded weights, which entries
    each trains, and the values the others are put back to. It masks their gradients itself (`hooks`,
    removed by `close`) and puts the held entries back after each step (`restore_held`, through the
    trainer's `MaskedParameter`): `fit` holds its parameters for the whole training, a pack replaces them
    when it sheds rows (`keep`)."""

    def __init__(self, alignment: Alignment, names: dict[tuple[str, str], str], device: torch.device):
        """`names`: (node, parameter) -> the parameter's name in the compiled suffix."""
        self.params: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.gradient_masks: dict[str, torch.Tensor] = {}
        for (node_id, name), key in names.items():
            padded = [alignment.padded(k, node_id, name) for k in range(len(alignment.candidates))]
            self.params[key] = torch.stack([p for p, _ in padded]).to(device).requires_grad_()
            self.masks[key] = torch.stack([m for _, m in padded]).to(device)
            self.gradient_masks[key] = self.masks[key].to(self.params[key].dtype)  # no casting per step
        # entries held at zero (padding, weights a candidate drops) stay zero by themselves once their
        # gradient is masked: every optimiser here moves a zero entry with zero gradient by zero (weight
        # decay and momentum included); only parameters holding non-zero values need putting back
        self.held = {
            key: value.detach().clone()
            for key, value in self.params.items()
            if bool(((~self.masks[key]) & (value != 0)).any())
        }
        self.hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.restoring: list[MaskedParameter] = []
        self._attach()

    def _attach(self) -> None:
        """Hooks zeroing the gradient of every entry a candidate does not train, and what puts the held
        entries back, on the current tensors."""
        self.close()
        self.hooks = [
            mask_gradient(param, self.gradient_masks[key])
            for key, param in self.params.items()
            if not bool(self.masks[key].all())  # all trained: nothing to mask
        ]
        self.restoring = [
            MaskedParameter(self.params[k], self.masks[k], held) for k, held in self.held.items()
        ]

    def restore_held(self, _: object = None) -> None:
        """Put back the held entries whatever the optimiser did to them (weight decay, momentum)."""
        for masked in self.restoring:
            masked.restore_frozen()

    def keep(self, rows: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Only these rows train on: every stacked tensor is replaced by one holding them alone, in `params`
        (the dict the model reads), in the optimiser with its state, and in the masks, the held values and
        the hooks. A step then costs what a pack of the rows kept costs."""
        per_parameter = optimizer.state  # (the optimiser's, not a graph node's)
        with torch.no_grad():
            for key, old in list(self.params.items()):
                new = old.detach().index_select(0, rows).requires_grad_()
                self.params[key] = new
                state = per_parameter.pop(old, {})
                per_parameter[new] = {  # per-entry state (momentum, Adam's moments) keeps the rows too
                    name: value.index_select(0, rows)
                    if isinstance(value, torch.Tensor) and value.shape == old.shape
                    else value
                    for name, value in state.items()
                }
                for group in optimizer.param_groups:
                    group["params"] = [new if p is old else p for p in group["params"]]
                for tensors in (self.masks, self.gradient_masks, self.held):
                    if key in tensors:
                        tensors[key] = tensors[key].index_select(0, rows)
        self._attach()

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


@dataclass(frozen=True)
class PackedTraining:
    outcomes: list[PackedOutcome]  # one per member, in order
    layout: list[dict[str, Any]]  # the template the pack trained in (`Alignment.layout`)


def train_packed(
    members: Sequence[PackMember],
    task: int,
    train: Split,
    val: Split,
    config: TrainingConfig,
    *,
    epochs: int | None = None,
    layout: Sequence[Mapping[str, Any]] | None = None,
    max_padding: float | None = None,
    prefix_cache: PrefixCache | None = None,
    frozen_modules: FrozenModules | None = None,
) -> PackedTraining:
    """Train every member's candidate for `task` (copies; the graphs given are untouched), as one pack;
    in the template `layout` when given (the pack they were first trained in: its rounding is theirs).
    Raises NotPackable before training anything when the candidates cannot share a template, or (without
    a layout) when padding them to it would multiply their compute by more than `max_padding`.
    `prefix_cache`: the task's frozen-prefix outputs kept from its earlier trials (each member is charged
    the prefix's pass over the training samples where it ran for the pack); `frozen_modules`: its
    compiled frozen nodes."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    try:
        alignment = align([m.graph.sharing_copy() for m in members], task, layout)
    except GraphError as error:
        raise NotPackable(str(error)) from None
    per_sample = [_macs(m.graph, task) for m in members]
    padding = len(members) * _macs(alignment.template, task)[1] / max(sum(s for _, s in per_sample), 1)
    if layout is None and max_padding is not None and padding > max_padding:
        raise NotPackable(f"padding to one template would multiply the compute by {padding:.2f}", padding)
    reused = frozen_modules.for_graph(alignment.template, task, True) if frozen_modules is not None else None
    program = compile_for_training(alignment.template, task, modules=reused)
    if frozen_modules is not None:
        frozen_modules.keep(alignment.template, task, True, program.full.node_modules)
    suffix = program.suffix.to(device)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in suffix.modules()):
        raise NotPackable("the candidates have batch norm, whose running statistics do not vectorise")
    if program.prefix is not None:
        program.prefix.to(device)
    in_suffix = {id(p): name for name, p in suffix.named_parameters()}
    names = {
        (node_id, name): in_suffix[id(p)]
        for node_id in alignment.trainable
        for name, p in program.full.node_modules[node_id].named_parameters()
    }
    one = prefix_outputs(program, train.x[:1], device)
    if sum(t.numel() * t.element_size() for t in one) * len(train) > MAX_CACHED_BYTES:
        raise NotPackable("the frozen prefix's outputs are too large to keep for the task")
    train_inputs, computed = cached_prefix_outputs(program, train.x, device, prefix_cache)
    val_inputs = cached_prefix_outputs(program, val.x, device, prefix_cache)[0]
    y_train, y_val = train.y.to(device), val.y.to(device)
    stack = _Stack(alignment, names, device)

    model = _StackedModel(suffix, stack.params, len(train_inputs))
    k_count = len(members)
    batches = _PackBatches([Minibatches(train_inputs, y_train, config.batch_size, m.seed) for m in members])
    macs = [prefix * len(train) if computed else 0 for prefix, _ in per_sample]
    errors: list[BaseException | None] = [None] * k_count
    histories: list[list[EpochStats]] = [[] for _ in members]
    epoch_losses, seen, step = [0.0] * k_count, [0], [0]
    rows = list(range(k_count))  # the member each row of the stacked tensors holds (the pack shrinks)
    correct = [torch.zeros(k_count, dtype=torch.long, device=device)]  # per row; read once per epoch
    optimizers: list[torch.optim.Optimizer] = []  # the one `fit` builds

    def live() -> list[int]:
        return [k for k in rows if errors[k] is None]

    def pack_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The sum of the live candidates' own mean cross-entropies; a non-finite one fails its candidate."""
        step[0] += 1
        ce = (
            F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), reduction="none")
            .view(len(rows), -1)
            .mean(1)
        )
        values = dict(zip(rows, ce.detach().tolist(), strict=True))
        n = batch.y.shape[1]
        for k in live():
            if not math.isfinite(values[k]):
                errors[k] = TrainingError(
                    f"the training loss became {values[k]} at epoch {len(histories[k]) + 1}, step {step[0]}; "
                    "expected a finite loss (try a lower training.lr)"
                )
        training = live()  # less those that just failed
        for k in training:
            epoch_losses[k] += values[k] * n
            macs[k] += 3 * per_sample[k][1] * n
        seen[0] += n
        correct[0].add_((logits.detach().argmax(-1) == batch.y).sum(1))
        if len(training) == len(rows):  # every row trains: no rows to leave out of the loss
            return ce.sum()
        return ce[[rows.index(k) for k in training]].sum()

    def end_epoch(_: EpochStats) -> None:
        """Each live candidate's epoch, told to its own callback (which may stop it alone)."""
        accuracies = dict(zip(rows, _accuracies(model, val_inputs, y_val, len(rows)), strict=True))
        trained = dict(zip(rows, (c / max(seen[0], 1) for c in correct[0].tolist()), strict=True))  # exact
        with together():  # what the members' callbacks write to a run's journal: one append
            for k in live():
                loss = epoch_losses[k] / max(seen[0], 1)
                stats = EpochStats(len(histories[k]), loss, trained[k], accuracies[k])
                histories[k].append(stats)
                if members[k].on_epoch is not None:
                    try:
                        members[k].on_epoch(stats)
                    except Exception as error:  # successive halving's stop: this candidate stops alone
                        errors[k] = error
        epoch_losses[:] = [0.0] * k_count
        seen[0] = 0
        # the candidates that stopped or failed leave the pack: the rest train on without their compute
        kept = [r for r, k in enumerate(rows) if errors[k] is None]
        if kept and len(kept) < len(rows):
            batches.keep(kept)
            stack.keep(torch.tensor(kept, device=device), optimizers[0])
            rows[:] = [rows[r] for r in kept]
        correct[0] = torch.zeros(len(rows), dtype=torch.long, device=device)

    try:
        fit(
            model,
            batches,
            list(stack.params.values()),
            config.optimizer_settings(),
            epochs=config.epochs if epochs is None else epochs,
            training=Training(
                after_step=stack.restore_held if stack.held else None, should_stop=lambda _: not live()
            ),
            on_epoch=end_epoch,
            loss=pack_loss,
            on_optimizer=optimizers.append,
        )
    finally:
        stack.close()
    share = (time.perf_counter() - started) / k_count
    outcomes = []
    for k in range(k_count):
        if errors[k] is not None:
            outcomes.append(PackedOutcome(None, errors[k], macs[k]))
            continue
        for (node_id, name), key in names.items():
            alignment.write(k, node_id, name, stack.params[key][rows.index(k)])
        history = tuple(histories[k])
        val_accuracy = history[-1].val_accuracy if history else float("nan")
        result = TrainingResult(alignment.candidates[k], val_accuracy, history, macs[k], share)
        outcomes.append(PackedOutcome(result, None, macs[k]))
    return PackedTraining(outcomes, alignment.layout())


class _StackedModel(nn.Module):
    """The template's suffix over the stacked weights: inputs (K, batch, ...) to logits (K, batch, C) for
    the K rows the stacked tensors hold (a pack sheds the rows of candidates that stop: `_Stack.keep`)."""

    def __init__(self, suffix: fx.GraphModule, params: dict[str, torch.Tensor], n_inputs: int):
        super().__init__()
        self.suffix, self.params = suffix, params
        # batched operations where the suffix has them (dense layers), else vmap of the suffix
        self.direct = stacked_suffix(suffix, set(params))
        self.per_candidate = vmap(self._logits)
        self.shared_inputs = vmap(self._logits, in_dims=(0, *([None] * n_inputs)))

    def _logits(self, params: dict[str, torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.suffix, params, inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.direct is not None:
            return self.direct(self.params, *inputs)
        return self.per_candidate(self.params, *inputs)

    def on_shared(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Every training candidate's logits for the same samples (batch, ...)."""
        if self.direct is not None:
            return self.direct(self.params, *inputs, shared=True)
        return self.shared_inputs(self.params, *inputs)


class _PackBatches(Minibatches):
    """The members' own seeded batch streams as one stream of stacked batches: inputs (K, batch, ...),
    labels (K, batch). Every member has the same samples, so their batches line up."""

    def __init__(self, streams: list[Minibatches]):
        first = streams[0]
        super().__init__(first.inputs, first.y, first.batch_size, 0)
        self.streams = streams

    def keep(self, kept: Sequence[int]) -> None:
        """Only these streams go on (each keeps its own order)."""
        self.streams = [self.streams[r] for r in kept]

    def epoch(self) -> Iterator[Batch]:
        # each member's pass drawn up front from its own generator (what its `epoch_indices` would draw),
        # so a step slices one (K, batch) block of indices
        orders = torch.stack([s.pass_order() for s in self.streams])
        for start in range(0, orders.shape[1], self.batch_size):
            index = orders[:, start : start + self.batch_size]
            flat = index.reshape(-1)
            inputs = tuple(t.index_select(0, flat).view(*index.shape, *t.shape[1:]) for t in self.inputs)
            yield Batch(inputs, self.y.index_select(0, flat).view(index.shape))

    def next(self) -> Batch:
        raise NotImplementedError("a pack trains by epochs")


def _accuracies(model: _StackedModel, inputs: list[torch.Tensor], y: torch.Tensor, k: int) -> list[float]:
    """Each candidate's accuracy on the same samples (NaN with none)."""
    if len(y) == 0:
        return [float("nan")] * k
    correct = torch.zeros(k, dtype=torch.long, device=y.device)
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            out = model.on_shared(*(t[start : start + EVAL_BATCH] for t in inputs))
            correct += (out.argmax(-1) == y[start : start + EVAL_BATCH]).sum(1)
    return (correct.double() / len(y)).tolist()
