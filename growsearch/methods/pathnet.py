"""PathNet (Fernando et al. 2017, "PathNet: Evolution Channels Gradient Descent in Super Neural Networks",
arXiv:1701.08734).

A pool of L layers x M modules (each module is the YAML's layer l: e.g. a 20-unit ReLU layer); a path is an
N x L genome of module indices; the outputs of a layer's active modules are summed and fed to the next
layer's active modules, then to the task's own head. Paths evolve by binary tournaments
(`growsearch.search.tournament`): two paths each train a few minibatches on the shared pool and are scored
by their training accuracy; the loser becomes a mutated copy of the winner. After a task, the best path's
modules are frozen; the next task evolves a fresh population that may route through them. Task-IL.

How it fits the controller. The contestants share and update the pool's weights, so tournaments are not
independent trials: one Optuna trial runs the whole GA of a task on its own copy of the pool (its trial
seed gives the GA seed, the population and the fresh modules), then returns the committed graph plus the
best path (its new modules, sum joins, head) with the weights the tournaments gave them; the controller
trains that path for `training.epochs` more (the YAML sets 1, the minimum). Trials of a task are therefore
independent restarts: they run in parallel on Ray, one GA per worker, and the best on validation is
committed. `suggest` samples nothing, so a Ray driver never runs a GA. The tournament history, the GA's
multiply-adds (`search_macs`) and the chosen genome are trial attributes; `decisions` reports the genome.

The graph. The pool module (l, m) is the node `pool/L{l}/M{m}`, added by the task that first trained it;
a path's layer l is a parameter-free sum join `t{task}/L{l}` over its modules. Only modules on committed
paths are kept: the rest of the pool is drawn afresh for every task, as PathNet re-initialises the
parameters off the optimal paths. The graph has no weight tying, and a node has one fixed input: where a
later path routes a frozen module behind a different layer below, it gets a frozen copy
`pool/L{l}/M{m}@t{task}` (same weights, owned by the module's trainer); an identical prefix reuses the
old nodes themselves. Such copies count as parameters in the graph's totals (`tied_copies` names them).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn

from growsearch.config_schema import require
from growsearch.data.task import Split
from growsearch.errors import GraphError
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Activation, NodeSpec
from growsearch.grow.backbone import head_spec
from growsearch.methods import register_method
from growsearch.methods.base import Method, TaskContext
from growsearch.search.tournament import Genome, active_modules, evolve, genome_to_json, random_population
from growsearch.search.training import TrainingConfig

Active = tuple[tuple[int, ...], ...]  # the distinct modules a path uses, per layer


@dataclass(frozen=True)
class PathNetOptions:
    modules_per_layer: int = 10  # M
    active_per_layer: int = 3  # N: genes per layer (distinct ones are active)
    population: int = 64
    generations: int = 500  # binary tournaments per task (one generation = one tournament)
    minibatches: int = 50  # T: minibatches (of training.batch_size) each contestant trains before scoring
    mutation_shift: int = 2  # a mutated gene moves by a random integer in [-shift, shift]
    target_fitness: float | None = 0.998  # stop once a contestant's training accuracy reaches it; null: never

    def validate(self, where: str) -> None:
        for name in ("modules_per_layer", "active_per_layer", "generations", "minibatches"):
            require(getattr(self, name) >= 1, f"{where}.{name}", "expected an integer >= 1")
        require(
            self.active_per_layer <= self.modules_per_layer,
            f"{where}.active_per_layer",
            f"expected at most modules_per_layer ({self.modules_per_layer}), got {self.active_per_layer}",
        )
        require(self.population >= 2, f"{where}.population", "expected an integer >= 2 (two per tournament)")
        require(self.mutation_shift >= 0, f"{where}.mutation_shift", "expected an integer >= 0")
        target = self.target_fitness
        require(target is None or 0 < target <= 1, f"{where}.target_fitness", "expected null or (0, 1]")


def _optimizer(parameters: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    """The `training:` section's optimiser, fresh for each contestant (no momentum carried between them)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def pool_id(layer: int, module: int) -> str:
    return f"pool/L{layer}/M{module}"


class BatchStream:
    """Minibatches of a split, drawn from successive seeded permutations (each contestant continues it)."""

    def __init__(self, split: Split, batch_size: int, seed: int, device: torch.device):
        self.x, self.y = split.x.to(device), split.y.to(device)
        self.batch_size, self.device = batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position = torch.empty(0, dtype=torch.long), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position >= len(self.order):
            self.order, self.position = torch.randperm(len(self.y), generator=self.generator), 0
        index = self.order[self.position : self.position + self.batch_size].to(self.device)
        self.position += self.batch_size
        return self.x[index], self.y[index]


class ModulePool(nn.Module):
    """The task's L x M modules and its head. Modules on earlier tasks' committed paths are loaded from
    the graph and frozen (no gradient, never in an optimiser); the others are freshly initialised."""

    def __init__(self, committed: ModuleGraph, specs: tuple[NodeSpec, ...], n_modules: int, n_outputs: int):
        super().__init__()
        self.specs = specs
        self.layers = nn.ModuleList()
        self.frozen: list[list[bool]] = []
        self.input_shapes: list[tuple[int, ...]] = []
        shape = committed.input_shape
        for layer, spec in enumerate(specs):
            row, flags = nn.ModuleList(), []
            for m in range(n_modules):
                module = spec.build()
                reused = pool_id(layer, m) in committed
                if reused:
                    node = committed.node(pool_id(layer, m))
                    if node.spec != spec:
                        raise GraphError(f"{pool_id(layer, m)} is a {node.spec}; the network asks for {spec}")
                    module.load_state_dict(node.weights)
                    module.requires_grad_(False)
                row.append(module)
                flags.append(reused)
            self.layers.append(row)
            self.frozen.append(flags)
            self.input_shapes.append(shape)
            shape = spec.output_shape(shape)
        self.feature_shape = shape
        self.head_spec = head_spec(shape, n_outputs)
        self.head = self.head_spec.build()

    def forward(self, active: Active, x: torch.Tensor) -> torch.Tensor:
        for layer, modules in enumerate(active):
            outputs = [self.layers[layer][m](x) for m in modules]
            x = outputs[0]
            for out in outputs[1:]:
                x = x + out
        return self.head(x)

    def macs(self, active: Active) -> int:
        """Multiply-adds of one forward pass of one sample along the path."""
        total = sum(len(ms) * self.specs[i].macs(self.input_shapes[i]) for i, ms in enumerate(active))
        return total + self.head_spec.macs(self.feature_shape)

    def train_path(
        self, active: Active, batches: BatchStream, steps: int, config: TrainingConfig
    ) -> tuple[float, int]:
        """Train the path's unfrozen modules and the head for `steps` minibatches, in place; return the
        training accuracy over those minibatches (PathNet's fitness) and the number of samples seen.
        A contestant whose loss diverges loses: the shared modules get back their weights from before
        its training (so it cannot poison the pool) and its fitness is 0."""
        parameters = [p for p in self.head.parameters()]
        for layer, modules in enumerate(active):
            for m in modules:
                if not self.frozen[layer][m]:
                    parameters.extend(self.layers[layer][m].parameters())
        optimizer = _optimizer(parameters, config)
        before = [p.detach().clone() for p in parameters]
        loss_fn = nn.CrossEntropyLoss()
        correct = seen = 0
        for _ in range(steps):
            x, y = batches.next()
            logits = self(active, x)
            loss = loss_fn(logits, y)
            seen += len(y)
            if not math.isfinite(loss.item()):
                with torch.no_grad():
                    for parameter, value in zip(parameters, before, strict=True):
                        parameter.copy_(value)
                return 0.0, seen
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.detach().argmax(1) == y).sum())
        return correct / seen, seen

    def weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def add_path(graph: ModuleGraph, task: int, pool: ModulePool, active: Active) -> ModuleGraph:
    """`graph` plus task `task`'s path through `pool` and its head (a new graph). New modules and the head
    take the pool's weights; frozen modules are reused as they stand (or as frozen copies, see above)."""
    grown = graph.copy()
    previous = INPUT
    for layer, modules in enumerate(active):
        members = [_module_node(grown, task, pool, layer, m, previous) for m in modules]
        previous = _join(grown, task, layer, members)
    head = f"t{task}/head"
    grown.add(head, pool.head_spec, [previous], task, weights=pool.weights(pool.head))
    grown.set_head(task, head)
    return grown


def _module_node(grown: ModuleGraph, task: int, pool: ModulePool, layer: int, m: int, previous: str) -> str:
    original = pool_id(layer, m)
    if original not in grown:  # a module this task trains
        grown.add(
            original,
            pool.specs[layer],
            [previous],
            task,
            layer=layer,
            weights=pool.weights(pool.layers[layer][m]),
        )
        return original
    for node_id in [original, *(f"{original}@t{t}" for t in grown.tasks)]:
        if node_id in grown and grown.node(node_id).inputs == (previous,):
            return node_id
    source = grown.node(original)
    copy_id = f"{original}@t{task}"
    weights = {k: v.clone() for k, v in source.weights.items()}
    grown.add(copy_id, source.spec, [previous], source.owner, layer=layer, frozen=True, weights=weights)
    return copy_id


def _join(grown: ModuleGraph, task: int, layer: int, members: list[str]) -> str:
    """The path's layer output: a parameter-free sum of its modules (reusing an identical earlier join)."""
    for node_id, node in grown.nodes():
        if node.layer == layer and isinstance(node.spec, Activation) and node.inputs == tuple(members):
            return node_id
    join_id = f"t{task}/L{layer}"
    merge = "sum" if len(members) > 1 else None
    grown.add(join_id, Activation(activation=None), members, task, merge=merge, layer=layer)
    return join_id


@register_method
class PathNet(Method):
    name = "pathnet"
    paper = "Fernando et al. 2017, PathNet: Evolution Channels Gradient Descent in Super Neural Networks"
    scenarios = ("task-il",)
    Options = PathNetOptions

    def suggest(self, trial: optuna.Trial, ctx: TaskContext) -> None:
        """Nothing to sample: the GA's seed is the trial's seed (a Ray driver must not run the GA)."""

    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        started = time.perf_counter()
        options, config = self.options, self.space.training
        ga_seed = int(torch.randint(0, 2**31 - 1, ()).item())  # torch's RNG is seeded per trial
        pool = ModulePool(ctx.committed, ctx.specs, options.modules_per_layer, ctx.n_outputs)
        device = config.torch_device()
        pool.to(device)
        batches = BatchStream(ctx.task.train, config.batch_size, ga_seed, device)
        rng = random.Random(ga_seed)
        population = random_population(
            rng, options.population, len(ctx.specs), options.modules_per_layer, options.active_per_layer
        )
        macs = 0

        def fitness(genome: Genome) -> float:
            nonlocal macs
            active = active_modules(genome)
            accuracy, seen = pool.train_path(active, batches, options.minibatches, config)
            macs += 3 * pool.macs(active) * seen  # forward + backward ~ 3 forward passes
            return accuracy

        evolution = evolve(
            population,
            fitness,
            rng,
            options.modules_per_layer,
            options.generations,
            target=options.target_fitness,
            shift=options.mutation_shift,
        )
        best = evolution.best()
        active = active_modules(best)
        graph = add_path(ctx.committed, ctx.task_id, pool.to("cpu"), active)
        reused = [pool_id(layer, m) for layer, ms in enumerate(active) for m in ms if pool.frozen[layer][m]]
        attrs: dict[str, Any] = {
            "path": genome_to_json(best),
            "path_modules": [list(ms) for ms in active],
            "reused_modules": reused,
            "tied_copies": sorted(n for n in graph.nx if "@t" in n and n not in ctx.committed),
            "ga_seed": ga_seed,
            "best_fitness": evolution.best_fitness(),
            "reached_target": evolution.reached_target,
            "generations_run": len(evolution.history),
            "tournaments": [record.to_json() for record in evolution.history],
            "search_macs": int(macs),
            "search_seconds": time.perf_counter() - started,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return graph

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        attrs = trial.user_attrs
        keys = ("path", "path_modules", "reused_modules", "ga_seed", "best_fitness", "generations_run")
        return {key: attrs.get(key) for key in keys}
