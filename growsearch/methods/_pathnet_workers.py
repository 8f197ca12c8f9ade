"""PathNet's contestants trained together: a wave of tournaments' contestants (`_pathnet_tournament.evolve`)
as one vectorised computation on the shared pool, the paper's parallel workers.

Each contestant is a worker with its own copy of the weights its path uses (its modules and the task's
head, taken from the pool as it stands when the wave starts) and its own minibatches: the next `steps`
minibatches of the task's one stream, in the order the serial GA would give them, so a wave's first
contestant trains exactly as it would serially. The copies are stacked (contestant x slot x parameter)
and every step runs all of them at once: a layer of dense modules, and the head, as one batched matrix
product over every contestant's slots, any other module through `torch.func.vmap` of `functional_call`
(instead of one small training per contestant); a path with fewer distinct modules than a layer's slots
pads it with zero weights whose output counts for nothing.
The loss is the sum of the contestants' own mean cross-entropies, so each copy gets its own gradient, and
the optimiser, which acts entry by entry, is one fresh optimiser per contestant. Frozen modules (earlier
tasks' paths) have their gradient masked and their values held exactly.

When the wave is over, each worker's update lands on the pool: a module (or the head) moves by the sum of
the changes of the contestants that trained it. Where two contestants of a wave share trainable weights
(always the head; a module both paths use), each trained from the weights as they stood before the wave,
not after the other, as asynchronous workers pushing their updates to a shared pool do; serially, the
later one would have started from the earlier one's result. Each contestant's fitness is therefore what
it gets trained alone from the wave's starting pool (a test checks it against `fit`, to float tolerance).
A contestant whose loss stops being finite stops there, scores 0 and its update is dropped (serially: the
pool gets back its weights from before its turn, and the next contestant takes the minibatches it left).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    Batch,
    MaskedParameter,
    Minibatches,
    OptimizerSettings,
    Training,
    fit,
    spend_macs,
)

if TYPE_CHECKING:
    from growsearch.methods.pathnet import ModulePool

Genome = tuple[tuple[int, ...], ...]  # `_pathnet_tournament`'s genome[layer][slot]
Active = tuple[tuple[int, ...], ...]  # the distinct modules a path uses, per layer


def packable(pool: ModulePool) -> bool:
    """Whether the pool's modules can run as stacked copies: parameters only (no running statistics), and
    some in every layer (a layer without weights, a global pool, has nothing to stack: it runs serially)."""
    no_buffers = not any(True for row in pool.layers for module in row for _ in module.buffers())
    return no_buffers and all(any(True for _ in row[0].parameters()) for row in pool.layers)


@dataclass(frozen=True)
class _WaveBatch(Batch):
    weights: torch.Tensor  # (contestants, batch): 1 for a sample, 0 for padding
    counts: torch.Tensor  # (contestants,): samples in each contestant's minibatch
    sizes: list[int]  # the same counts, read


class _WaveBatches(Minibatches):
    """Every contestant's minibatches, step by step: inputs (contestants, batch, ...), labels (contestants,
    batch); a minibatch shorter than the batch size (the end of a pass) is padded with weightless samples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor):
        super().__init__([x], y, y.shape[-1], 0)
        self.weights, self.counts, self.step = weights, weights.sum(-1), 0
        self.count_lists = self.counts.long().tolist()  # read once, not every step

    def next(self) -> Batch:
        step, self.step = self.step, self.step + 1
        weights, counts = self.weights[step], self.counts[step]
        return _WaveBatch((self.inputs[0][step],), self.y[step], weights, counts, self.count_lists[step])


class _Wave(nn.Module):
    """The contestants' copies of their paths' weights, stacked, and their paths run as one computation."""

    def __init__(self, pool: ModulePool, templates: Sequence[nn.Module], actives: Sequence[Active]):
        super().__init__()
        self.actives, self.templates = list(actives), list(templates)
        count = len(actives)
        self.layer_params: list[dict[str, torch.Tensor]] = []
        self.slot_weights: list[torch.Tensor] = []  # (contestants, slots): 1 for a module, 0 for padding
        self.trains: list[torch.Tensor] = []  # (contestants, slots): the slot's module is one it trains
        self.masked: list[MaskedParameter] = []
        for layer, row in enumerate(pool.layers):
            slots = max(len(active[layer]) for active in actives)
            modules = [
                [active[layer][s] if s < len(active[layer]) else None for s in range(slots)]
                for active in actives
            ]
            device = next(row[0].parameters()).device
            real = torch.tensor([[m is not None for m in ms] for ms in modules], device=device)
            trains = torch.tensor(
                [[m is not None and not pool.frozen[layer][m] for m in ms] for ms in modules], device=device
            )
            stacked = {}
            for name, reference in row[0].named_parameters():
                values = [
                    (row[m].get_parameter(name) if m is not None else torch.zeros_like(reference)).detach()
                    for ms in modules
                    for m in ms
                ]
                param = torch.stack(values).view(count, slots, *reference.shape).clone().requires_grad_()
                stacked[name] = param
                keep = trains.view(count, slots, *([1] * reference.dim())).expand_as(param)
                if not bool(keep.all()):  # frozen modules held exactly, whatever the optimiser does
                    self.masked.append(MaskedParameter(param, keep, param.detach().clone()))
            self.layer_params.append(stacked)
            self.slot_weights.append(real.to(next(iter(stacked.values())).dtype))
            self.trains.append(trains)
        self.head_params = {
            name: torch.stack([p.detach()] * count).clone().requires_grad_()
            for name, p in pool.head.named_parameters()
        }
        self.start = [{k: v.detach().clone() for k, v in params.items()} for params in self.layer_params]
        self.head_start = {k: v.detach().clone() for k, v in self.head_params.items()}
        self.layer_runs = [_layer_runner(t) for t in self.templates[:-1]]
        self.head_run = _head_runner(self.templates[-1])

    def parameters_to_train(self) -> list[torch.Tensor]:
        return [*(p for params in self.layer_params for p in params.values()), *self.head_params.values()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (contestants, batch, ...) to logits (contestants, batch, classes)."""
        h = x
        for run, params, weights in zip(self.layer_runs, self.layer_params, self.slot_weights, strict=True):
            h = run(params, weights, h)
        return self.head_run(self.head_params, h)

    @torch.no_grad()
    def land(self, pool: ModulePool, contestants: Sequence[int]) -> None:
        """Add these contestants' changes to the pool's modules and head."""
        for layer, params in enumerate(self.layer_params):
            row, trains = pool.layers[layer], self.trains[layer].tolist()
            for k in contestants:
                for slot, m in enumerate(self.actives[k][layer]):
                    if trains[k][slot]:
                        for name, param in params.items():
                            change = param[k, slot] - self.start[layer][name][k, slot]
                            row[m].get_parameter(name).add_(change)
        for k in contestants:
            for name, param in self.head_params.items():
                pool.head.get_parameter(name).add_(param[k] - self.head_start[name][k])


@dataclass(frozen=True)
class _Dense:
    """A module that is a dense layer and a parameter-free activation (a pool layer of `linear:` modules,
    the head): its slots run as one batched matrix product instead of a vmap over the module."""

    flatten: bool
    weight: str
    bias: str | None
    activation: nn.Module | None


def _dense(template: nn.Module) -> _Dense | None:
    leaves = [m for m in template.modules() if not list(m.children())]
    flatten = bool(leaves) and isinstance(leaves[0], nn.Flatten) and leaves[0].start_dim == 1
    rest = leaves[1:] if flatten else leaves
    if not rest or not isinstance(rest[0], nn.Linear) or len(rest) > 2:
        return None
    activation = rest[1] if len(rest) == 2 else None
    if activation is not None and (list(activation.parameters()) or list(activation.buffers())):
        return None
    names = {id(p): name for name, p in template.named_parameters()}
    bias = names[id(rest[0].bias)] if rest[0].bias is not None else None
    return _Dense(flatten, names[id(rest[0].weight)], bias, activation)


LayerRun = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


def _layer_runner(template: nn.Module) -> LayerRun:
    """(stacked parameters (contestants, slots, ...), slot weights (contestants, slots), inputs (contestants,
    batch, ...)) -> the weighted sum of the slots' outputs (contestants, batch, ...)."""
    dense = _dense(template)
    if dense is None:
        each = vmap(vmap(lambda p, x: functional_call(template, p, (x,)), in_dims=(0, None)))

        def run(params: dict[str, torch.Tensor], weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            out = each(params, x)  # (contestants, slots, batch, ...)
            return (out * weights.view(*weights.shape, *([1] * (out.dim() - 2)))).sum(1)

        return run

    def run_dense(params: dict[str, torch.Tensor], weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        weight = params[dense.weight]  # (contestants, slots, out, in)
        count, slots, width = weight.shape[:3]
        x = x.flatten(2) if dense.flatten else x
        matrix = weight.reshape(count, slots * width, -1).transpose(1, 2)
        if dense.bias is None:
            out = torch.bmm(x, matrix)
        else:
            out = torch.baddbmm(params[dense.bias].reshape(count, 1, slots * width), x, matrix)
        out = out.view(count, -1, slots, width)  # (contestants, batch, slots, out)
        if dense.activation is not None:
            out = dense.activation(out)
        return (out * weights.view(count, 1, slots, 1)).sum(2)

    return run_dense


def _head_runner(template: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """(stacked parameters (contestants, ...), features (contestants, batch, ...)) -> logits."""
    dense = _dense(template)
    if dense is None or dense.activation is not None:
        return vmap(lambda p, x: functional_call(template, p, (x,)))

    def run(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2) if dense.flatten else x
        matrix = params[dense.weight].transpose(1, 2)
        if dense.bias is None:
            return torch.bmm(x, matrix)
        return torch.baddbmm(params[dense.bias].unsqueeze(1), x, matrix)

    return run


class PoolWorkers:
    """`_pathnet_tournament.Workers` over a `ModulePool`: a wave's contestants trained together for `steps`
    minibatches each, drawn from the task's stream `batches` in the serial order."""

    def __init__(
        self,
        pool: ModulePool,
        batches: Minibatches,
        settings: OptimizerSettings,
        steps: int,
        path_of: Callable[[Genome], Active],
    ):
        self.pool, self.batches, self.settings, self.steps = pool, batches, settings, steps
        self.path_of = path_of  # a genome's distinct modules per layer
        self.templates = [copy.deepcopy(row[0]) for row in pool.layers] + [copy.deepcopy(pool.head)]
        self.diverged = 0  # landed contestants whose loss stopped being finite, over every wave
        self._wave: _Wave | None = None
        self._failed: list[bool] = []

    def _wave_batches(self, count: int) -> _WaveBatches:
        """Each contestant takes the stream's next `steps` minibatches, in turn: the serial order."""
        size = self.batches.batch_size
        xs, ys, weights = [], [], []
        for _ in range(count * self.steps):
            batch = self.batches.next()
            (x,), y, missing = batch.inputs, batch.y, size - len(batch.y)
            weight = torch.ones(len(y), device=y.device)
            if missing:
                x = torch.cat([x, x[:1].expand(missing, *x.shape[1:])])
                y = torch.cat([y, y[:1].expand(missing)])
                weight = torch.cat([weight, weight.new_zeros(missing)])
            xs.append(x)
            ys.append(y)
            weights.append(weight)

        def by_step(rows: list[torch.Tensor]) -> torch.Tensor:  # (steps, contestants, batch, ...)
            stacked = torch.stack(rows)
            return stacked.view(count, self.steps, *stacked.shape[1:]).transpose(0, 1).contiguous()

        return _WaveBatches(by_step(xs), by_step(ys), by_step(weights))

    def train(self, genomes: Sequence[Genome]) -> list[float]:
        actives = [self.path_of(g) for g in genomes]
        count = len(actives)
        wave = _Wave(self.pool, self.templates, actives)
        batches = self._wave_batches(count)
        failed = [False] * count
        seen = [0] * count
        correct = torch.zeros(count, dtype=torch.long, device=batches.y.device)

        def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            assert isinstance(batch, _WaveBatch)
            ce = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), reduction="none").view(count, -1)
            own = (ce * batch.weights).sum(1) / batch.counts  # each contestant's mean cross-entropy
            values = own.detach().tolist()
            for k in range(count):
                failed[k] = failed[k] or not math.isfinite(values[k])
                if not failed[k]:
                    seen[k] += batch.sizes[k]
            hits = (logits.detach().argmax(-1) == batch.y) & (batch.weights > 0)
            correct.add_(hits.sum(1))  # a failed contestant's count is never read: it scores 0
            live = [k for k in range(count) if not failed[k]]
            if len(live) == count:
                return own.sum()
            if not live:
                return torch.zeros((), device=logits.device, requires_grad=True)
            return own[live].sum()

        fit(
            wave,
            batches,
            wave.parameters_to_train(),
            self.settings,  # entry by entry: one fresh optimiser per contestant
            steps=self.steps,
            masked=wave.masked,
            training=Training(should_stop=lambda _: all(failed)),
            loss=loss,
        )
        spend_macs(sum(3 * self.pool.macs(a) * n for a, n in zip(actives, seen, strict=True)))
        self._wave, self._failed = wave, failed
        hits = correct.tolist()
        return [0.0 if failed[k] else hits[k] / max(seen[k], 1) for k in range(count)]

    def land(self, count: int) -> None:
        if self._wave is None:
            raise RuntimeError("land follows train")
        self._wave.land(self.pool, [k for k in range(count) if not self._failed[k]])
        self.diverged += sum(self._failed[:count])
        self._wave = None
