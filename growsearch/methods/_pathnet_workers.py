"""PathNet's contestants trained together: a wave of tournaments' contestants (`_pathnet_tournament.evolve`)
as one vectorised computation on the shared pool, the paper's parallel workers in lockstep.

Every contestant is a worker on the one shared pool with its own minibatches: the next `steps`
minibatches of the task's one stream, in the order the serial GA would give them. At each step every
live contestant runs its path on the pool as it stands, and the sum of their gradients (the loss is the
sum of each one's own mean cross-entropy) updates the pool once, as synchronous data-parallel workers
do: a module, or the head, that several paths use gets all their gradients at once. So a contestant sees
the others' training from one step to the next, as workers sharing a pool do (the paper's A3C workers
apply their gradients to it asynchronously), where serially it would see the earlier contestants'
training whole and the later ones' not at all. With plain SGD at a small rate (the shipped YAML) k
contestants' summed gradients on the pool follow what k serial steps would do, and a task's GA needs
about the tournaments the serial one needs to reach its target fitness (split-mnist5k, seed 0: 834
against 791). A test checks the fitnesses and the pool against a reference that, step by step, takes
each contestant's gradient on the pool in turn and applies their sum.

The wave holds, per layer, copies of the modules its paths use as two stacks (module x parameter): the
trainable ones, trained, and the frozen ones (earlier tasks' paths), constants that no gradient reaches;
and a copy of the head. Each step a path gathers its modules' rows: a layer of dense modules runs as one
batched matrix product over every contestant's slots, any other module through `torch.func.vmap` of
`functional_call`, and the head, which every path shares, on all the contestants' features at once; a
path with fewer distinct modules than a layer's slots fills the others with its own first module, whose
output there weighs 0. One optimiser, fresh for the wave, steps the copies (serially: a fresh one per
contestant; the same for plain SGD, but a module's weight decay acts once a step, not once per contestant
training it). On CUDA the gathers' backward pass adds up rows with atomic adds, so a packed GA on a GPU
is not bit-reproducible from its seed (on a CPU it is).

The trained modules and head land on the pool when the wave ends, the tournaments after the one that
ended the GA included (their training is part of the others'). A contestant whose loss stops being finite
scores 0 and leaves the computation before that step's backward pass; if it had trained before, the
modules and head it trained keep their weights from before the wave (serially: the pool gets back its
weights from before its turn; here the others' training of them goes too), and so do the modules only
failed contestants used and any the wave left not finite.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    Batch,
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
    """The pool as a wave trains it: per layer, copies of the parameters of the modules the wave's paths use,
    stacked (module x ...): the trainable ones trained, the frozen ones constants; and a copy of the head.
    Each contestant's path gathers its modules' rows at every step; `land` writes the trained ones back.
    `live` are the contestants still training (one whose loss stops being finite leaves before its
    non-finite values reach the shared weights)."""

    def __init__(self, pool: ModulePool, templates: Sequence[nn.Module], actives: Sequence[Active]):
        super().__init__()
        self.actives = list(actives)
        self.trained: list[list[int]] = []  # per layer: the pool modules of the trained rows, in row order
        self.layer_params: list[dict[str, torch.Tensor]] = []  # trained rows (leaves)
        self.layer_frozen: list[dict[str, torch.Tensor]] = []  # frozen rows (after the trained ones)
        self.rows: list[list[list[int]]] = []  # per layer, per contestant: its slots' stack rows
        self.slot_weights: list[torch.Tensor] = []  # (contestants, slots): 1 for a module, 0 for padding
        self.names: list[list[str]] = []  # per layer: a module's parameter names
        for layer, modules in enumerate(pool.layers):
            # only the modules some path uses: an optimiser's weight decay would move the others
            used = sorted({m for active in actives for m in active[layer]})
            trained = [m for m in used if not pool.frozen[layer][m]]
            frozen = [m for m in used if pool.frozen[layer][m]]
            position = {m: r for r, m in enumerate(trained + frozen)}
            slots = max(len(active[layer]) for active in actives)
            # a padding slot reads the path's own first module (its output weighs 0): never another path's,
            # whose values might stop being finite
            self.rows.append(
                [[position[a[layer][min(s, len(a[layer]) - 1)]] for s in range(slots)] for a in actives]
            )

            def stacked(indices: list[int], name: str, modules: list[nn.Module] = modules) -> torch.Tensor:
                return torch.stack([modules[m].get_parameter(name).detach() for m in indices]).clone()

            names = [name for name, _ in modules[0].named_parameters()]
            self.names.append(names)
            self.trained.append(trained)
            self.layer_params.append({n: stacked(trained, n).requires_grad_() for n in names if trained})
            self.layer_frozen.append({n: stacked(frozen, n) for n in names if frozen})
            real = [[float(s < len(a[layer])) for s in range(slots)] for a in actives]
            reference = next(modules[0].parameters())
            self.slot_weights.append(torch.tensor(real, dtype=reference.dtype, device=reference.device))
        self.head_params = {n: p.detach().clone().requires_grad_() for n, p in pool.head.named_parameters()}
        self.layer_runs = [_layer_runner(t) for t in templates[:-1]]
        head = templates[-1]  # not a submodule: its weights are the template's, not the wave's
        self.run_head = lambda params, x: functional_call(head, params, (x,))
        self.live: list[int] = []
        self.keep(range(len(actives)))

    def keep(self, contestants: Iterable[int]) -> None:
        """Only these contestants train on (`forward` takes every contestant's inputs and runs theirs)."""
        self.live = list(contestants)
        device = self.slot_weights[0].device
        self.live_index = torch.tensor(self.live, dtype=torch.long, device=device)
        self._index = [torch.tensor([rows[k] for k in self.live], device=device) for rows in self.rows]
        self._weights = [weights.index_select(0, self.live_index) for weights in self.slot_weights]

    def parameters_to_train(self) -> list[torch.Tensor]:
        return [*(p for params in self.layer_params for p in params.values()), *self.head_params.values()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every contestant's inputs (contestants, batch, ...) to the live ones' logits (live, batch, ...)."""
        h = x if len(self.live) == len(self.actives) else x.index_select(0, self.live_index)
        layers = zip(
            self.layer_runs,
            self.names,
            self.layer_params,
            self.layer_frozen,
            self._index,
            self._weights,
            strict=True,
        )
        for run, names, params, frozen, index, weights in layers:
            flat = index.view(-1)
            gathered = {}
            for name in names:
                parts = [part[name] for part in (params, frozen) if name in part]
                rows = parts[0] if len(parts) == 1 else torch.cat(parts)
                gathered[name] = rows.index_select(0, flat).view(*index.shape, *rows.shape[1:])
            h = run(gathered, weights, h)
        out = self.run_head(self.head_params, h.flatten(0, 1))
        return out.view(*h.shape[:2], *out.shape[1:])

    @torch.no_grad()
    def land(self, pool: ModulePool, failed: Sequence[bool], undone: Sequence[int]) -> int:
        """Write the trained modules and head back to the pool, but for those kept back: what an `undone`
        contestant trained, what only `failed` contestants used (an optimiser's weight decay alone moved
        it) and whatever the wave left not finite; these keep their weights from before the wave. How
        many were kept back."""
        finished = [k for k, lost in enumerate(failed) if not lost]
        kept_back = 0
        for layer, params in enumerate(self.layer_params):
            by_undone = {m for k in undone for m in self.actives[k][layer]}
            by_finished = {m for k in finished for m in self.actives[k][layer]}
            for r, m in enumerate(self.trained[layer]):
                values = {name: param[r] for name, param in params.items()}
                if m in by_undone or m not in by_finished or not _finite(values):
                    kept_back += 1
                else:
                    _copy_into(pool.layers[layer][m], values)
        if undone or not finished or not _finite(self.head_params):
            return kept_back + 1
        _copy_into(pool.head, self.head_params)
        return kept_back


def _finite(values: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in values.values())


def _copy_into(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    for name, value in values.items():
        module.get_parameter(name).copy_(value)


@dataclass(frozen=True)
class _Dense:
    """A module that is a dense layer and a parameter-free activation (a pool layer of `linear:` modules):
    its slots run as one batched matrix product instead of a vmap over the module."""

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
        self.diverged = 0  # settled contestants whose loss stopped being finite, over every wave
        self.kept_back = 0  # modules (and heads) that kept their weights from before a wave (`_Wave.land`)
        self._wave: _Wave | None = None
        self._failed: list[bool] = []
        self._undone: list[int] = []

    def _wave_batches(self, count: int) -> _WaveBatches:
        """Each contestant takes the stream's next `steps` minibatches, in turn: the serial order."""
        size = self.batches.batch_size
        indices, weights = [], []
        for _ in range(count * self.steps):
            index = self.batches.next_indices()
            missing = size - len(index)
            weight = torch.ones(size, device=index.device)
            if missing:  # the end of a pass: padded with weightless copies of its first sample
                index = torch.cat([index, index[:1].expand(missing)])
                weight[size - missing :] = 0
            indices.append(index)
            weights.append(weight)

        def by_step(rows: list[torch.Tensor]) -> torch.Tensor:  # (steps, contestants, batch)
            return torch.stack(rows).view(count, self.steps, size).transpose(0, 1)

        order = by_step(indices)
        batch = self.batches.take(order.reshape(-1))  # one gather for the wave
        (x,) = batch.inputs
        return _WaveBatches(x.view(*order.shape, *x.shape[1:]), batch.y.view(order.shape), by_step(weights))

    def train(self, genomes: Sequence[Genome]) -> list[float]:
        actives = [self.path_of(g) for g in genomes]
        count = len(actives)
        wave = _Wave(self.pool, self.templates, actives)
        batches = self._wave_batches(count)
        failed = [False] * count
        seen = [0] * count
        correct = torch.zeros(count, dtype=torch.long, device=batches.y.device)

        def own_losses(logits: torch.Tensor, batch: _WaveBatch) -> torch.Tensor:
            """The live contestants' mean cross-entropies."""
            live = wave.live_index
            y, weights = batch.y.index_select(0, live), batch.weights.index_select(0, live)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(live), -1)
            return (ce * weights).sum(1) / batch.counts.index_select(0, live)

        def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            assert isinstance(batch, _WaveBatch)
            live = wave.live_index
            own = own_losses(logits, batch)
            hits = (logits.detach().argmax(-1) == batch.y.index_select(0, live)) & (
                batch.weights.index_select(0, live) > 0
            )
            correct.index_add_(0, live, hits.sum(1))  # a failed contestant's count is never read: it scores 0
            values = own.detach().tolist()
            for k, value in zip(wave.live, values, strict=True):
                failed[k] = not math.isfinite(value)
                seen[k] += 0 if failed[k] else batch.sizes[k]
            if not any(failed[k] for k in wave.live):
                return own.sum()
            # a contestant whose loss stopped being finite leaves the computation before the backward
            # pass: its non-finite activations would reach the shared weights' gradients (0 x inf)
            wave.keep(k for k in wave.live if not failed[k])
            if not wave.live:
                return torch.zeros((), device=logits.device, requires_grad=True)
            return own_losses(wave(*batch.inputs), batch).sum()

        fit(
            wave,
            batches,
            wave.parameters_to_train(),
            self.settings,  # one optimiser for the wave: the pool's, as its parallel workers share it
            steps=self.steps,
            training=Training(should_stop=lambda _: all(failed)),
            loss=loss,
        )
        spend_macs(sum(3 * self.pool.macs(a) * n for a, n in zip(actives, seen, strict=True)))
        # a failed contestant that trained before it failed is undone as serially: what it trained keeps
        # its weights from before the wave (with the others' training of them, which cannot be told apart)
        self._wave, self._undone = wave, [k for k in range(count) if failed[k] and seen[k] > 0]
        self._failed = failed
        hits = correct.tolist()
        return [0.0 if failed[k] else hits[k] / max(seen[k], 1) for k in range(count)]

    def land(self, count: int) -> None:
        """The wave's training lands on the pool whole: the contestants after the tournament that ended
        the GA (past `count`) trained the shared weights with the others, step by step."""
        if self._wave is None:
            raise RuntimeError("land follows train")
        self.kept_back += self._wave.land(self.pool, self._failed, self._undone)
        self.diverged += sum(self._failed[:count])
        self._wave = None
