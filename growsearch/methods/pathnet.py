"""PathNet (Fernando et al. 2017, "PathNet: Evolution Channels Gradient Descent in Super Neural Networks",
arXiv:1701.08734).

A pool of L layers x M modules (each module is the YAML's layer l: e.g. a 20-unit ReLU layer); a path is an
N x L genome of module indices; the outputs of a layer's active modules are summed and fed to the next
layer's active modules, then to the task's own head. Paths evolve by binary tournaments
(`_pathnet_tournament`): two paths each train a few minibatches on the shared pool and are scored
by their training accuracy; the loser becomes a mutated copy of the winner. After a task, the best path's
modules are frozen; the next task evolves a fresh population that may route through them. Task-IL.

How it fits the search. The contestants share and update the pool's weights, so tournaments are not
independent trials: one Optuna trial runs the whole GA of a task on its own copy of the pool (its trial
seed gives the GA seed, the population and the fresh modules), then returns the committed graph plus the
best path (its new modules, sum joins, head) with the weights the tournaments gave them; the search
trains that path for `training.epochs` more. Trials of a task are therefore independent restarts: they
run in parallel on Ray, one GA per worker, and the best on validation is committed. `decide` samples
nothing, so a Ray driver never runs a GA.

Training the contestants. By default (`options.pack_contestants`) a wave of consecutive tournaments whose
contestants are distinct population slots trains as one vectorised computation (`_pathnet_workers`):
each contestant a worker on the shared pool with its own T minibatches, all of them stepping together,
the sum of their gradients updating the pool at every step. Departure: the paper evolves its supervised
tasks serially, and its parallel workers (the A3C runs) update the shared pool asynchronously; here a
wave's contestants see each other's training step by step, where serially each would see the earlier
ones' whole and the later ones' not at all. The GA itself is the serial one: for the same seed it meets
the same pairs and mutates the same genes (`_pathnet_tournament.evolve`), only the fitnesses differ, so
the committed path is the serial one's for as long as the tournaments are won by the same contestants.
With `pack_contestants: false` each contestant is its path compiled as a graph over the pool's module
objects and trained for T minibatches by the one trainer in turn (the paper's serial algorithm). Either
way a contestant whose loss diverges loses with fitness 0 and its training is undone (serially: the pool
gets back its weights from before its turn; in a wave: what it trained keeps its weights from before the
wave, with the other contestants' training of them, recorded as `modules_kept_back`).

The graph. The pool module (l, m) is the node `pool/L{l}/M{m}`, added by the task that first trained it;
a path's layer l is a parameter-free sum join `t{task}/L{l}` over its modules. Only modules on committed
paths are kept: the rest of the pool is drawn afresh for every task, as PathNet re-initialises the
parameters off the optimal paths. A node has one fixed input: where a later path routes a frozen module
behind a different layer below, a node `pool/L{l}/M{m}@t{task}` shares the module's weights (it stores
none of its own: its `shares` names the module); an identical prefix reuses the old nodes themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from growsearch.methods._pathnet_tournament import (
    Genome,
    active_modules,
    evolve,
    genome_to_json,
    random_population,
)
from growsearch.methods._pathnet_workers import PoolWorkers, packable
from growsearch.methods.toolkit import (
    INPUT,
    Activation,
    Candidate,
    Decisions,
    GraphError,
    Method,
    Minibatches,
    ModuleGraph,
    NodeSpec,
    TaskContext,
    Training,
    compile_view,
    fit,
    head_node,
    head_spec,
    layer_node,
    require,
    resolve_device,
)

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
    # train a wave of consecutive tournaments with distinct contestants as one vectorised computation (the
    # paper's parallel workers, `_pathnet_workers`); false: each contestant in turn (its serial algorithm)
    pack_contestants: bool = True
    parallel_tournaments: int = 32  # at most this many tournaments a wave (32: the paper's 64 workers)

    def validate(self, where: str) -> None:
        for name in (
            "modules_per_layer",
            "active_per_layer",
            "generations",
            "minibatches",
            "parallel_tournaments",
        ):
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


@dataclass(frozen=True)
class PathNetSearch:
    """What a task's GA did, recorded on its trial."""

    generations_run: int
    reached_target: bool
    best_fitness: float  # the committed path's fitness at its last tournament
    best_fitness_per_generation: list[float]
    diverged_contestants: int  # contestants whose loss diverged: they lost with fitness 0
    trained_together: bool  # a wave's contestants trained as one computation (else: one after another)
    waves: int  # how many times contestants trained (serially: once a tournament)
    # modules (a head counts as one) a wave left as they were before it: what a contestant that diverged
    # after training trained, what only diverged contestants used, what the wave left not finite
    modules_kept_back: int
    shared_modules: list[str]  # nodes sharing a frozen module's weights behind a new input
    tournaments: list[dict[str, Any]]


def pool_id(layer: int, module: int) -> str:
    return f"pool/L{layer}/M{module}"


def shared_id(original: str, task: int) -> str:
    """The node through which task `task`'s path reads the frozen module `original` behind a new input."""
    return f"{original}@t{task}"


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
        self.input_shape = committed.input_shape
        self.feature_shape = shape
        self.head_spec = head_spec(shape, n_outputs)
        self.head = self.head_spec.build()
        self._programs: dict[Active, nn.Module] = {}

    def macs(self, active: Active) -> int:
        """Multiply-adds of one forward pass of one sample along the path."""
        total = sum(len(ms) * self.specs[i].macs(self.input_shapes[i]) for i, ms in enumerate(active))
        return total + self.head_spec.macs(self.feature_shape)

    def trainable(self, active: Active) -> list[nn.Parameter]:
        """The parameters a contestant on this path trains: its unfrozen modules and the head."""
        parameters = list(self.head.parameters())
        for layer, modules in enumerate(active):
            for m in modules:
                if not self.frozen[layer][m]:
                    parameters.extend(self.layers[layer][m].parameters())
        return parameters

    def path_module(self, active: Active) -> nn.Module:
        """The path compiled as a graph whose nodes are the pool's own modules (trained in place)."""
        if active not in self._programs:
            structure = ModuleGraph(self.input_shape)
            modules: dict[str, nn.Module] = {}
            previous = INPUT
            for layer, ms in enumerate(active):
                members = []
                for m in ms:
                    node_id = pool_id(layer, m)
                    frozen = self.frozen[layer][m]
                    structure.add(node_id, self.specs[layer], [previous], 0, frozen=frozen, weights={})
                    modules[node_id] = self.layers[layer][m]
                    members.append(node_id)
                previous = f"L{layer}"
                merge = "sum" if len(members) > 1 else None
                structure.add(previous, Activation(None), members, 0, merge=merge, weights={})
            structure.add("head", self.head_spec, [previous], 0, weights={})
            structure.set_head(0, "head")
            modules["head"] = self.head
            self._programs[active] = compile_view(structure, 0, train=True, modules=modules).module
        return self._programs[active]

    def weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def add_path(graph: ModuleGraph, task: int, pool: ModulePool, active: Active) -> ModuleGraph:
    """`graph` plus task `task`'s path through `pool` and its head (a new graph). New modules and the head
    take the pool's weights; frozen modules are reused as they stand (or shared, see above)."""
    grown = graph.copy()
    previous = INPUT
    for layer, modules in enumerate(active):
        members = [_module_node(grown, task, pool, layer, m, previous) for m in modules]
        previous = _join(grown, task, layer, members)
    head = head_node(task)
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
    for node_id, node in grown.nodes():  # the module itself, or a node sharing it, behind this input
        if (node_id == original or node.shares == original) and node.inputs == (previous,):
            return node_id
    source = grown.node(original)
    sharing = shared_id(original, task)
    grown.add(sharing, source.spec, [previous], source.owner, layer=layer, shares=original)
    return sharing


def _join(grown: ModuleGraph, task: int, layer: int, members: list[str]) -> str:
    """The path's layer output: a parameter-free sum of its modules (reusing an identical earlier join)."""
    for node_id, node in grown.nodes():
        if node.layer == layer and isinstance(node.spec, Activation) and node.inputs == tuple(members):
            return node_id
    join_id = layer_node(task, layer)
    merge = "sum" if len(members) > 1 else None
    grown.add(join_id, Activation(activation=None), members, task, merge=merge, layer=layer)
    return join_id


class PathNet(Method):
    name = "pathnet"
    paper = "Fernando et al. 2017, PathNet: Evolution Channels Gradient Descent in Super Neural Networks"
    scenarios = ("task-il",)
    Options = PathNetOptions

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        """Run the task's GA on a fresh pool; the best path, with the weights the tournaments gave it."""
        options, config = self.options, self.space.training
        ga_seed = int(torch.randint(0, 2**31 - 1, ()).item())  # torch's RNG is seeded per trial
        pool = ModulePool(ctx.committed, ctx.specs, options.modules_per_layer, ctx.n_outputs)
        device = resolve_device(config.device)
        pool.to(device)
        train = ctx.task.train
        batches = Minibatches([train.x.to(device)], train.y.to(device), config.batch_size, ga_seed)
        rng = random.Random(ga_seed)
        population = random_population(
            rng, options.population, len(ctx.specs), options.modules_per_layer, options.active_per_layer
        )
        settings = config.optimizer_settings()
        restore = Training(on_divergence="restore")
        diverged = [0]

        def fitness(genome: Genome) -> float:
            active = active_modules(genome)
            result = fit(
                pool.path_module(active),
                batches,
                pool.trainable(active),
                settings,  # a fresh optimiser per contestant: no momentum carried between them
                steps=options.minibatches,
                training=restore,
                macs_per_sample=pool.macs(active),
                track_accuracy=True,
            )
            diverged[0] += result.diverged
            return 0.0 if result.diverged else result.train_accuracy

        together = options.pack_contestants and packable(pool)
        workers = (
            PoolWorkers(pool, batches, settings, options.minibatches, active_modules) if together else None
        )
        evolution = evolve(
            population,
            workers or fitness,
            rng,
            options.modules_per_layer,
            options.generations,
            target=options.target_fitness,
            shift=options.mutation_shift,
            parallel=options.parallel_tournaments,
        )
        if workers is not None:
            diverged[0] += workers.diverged
        best = evolution.best()
        active = active_modules(best)
        graph = add_path(ctx.committed, ctx.task_id, pool.to("cpu"), active)
        reused = [pool_id(layer, m) for layer, ms in enumerate(active) for m in ms if pool.frozen[layer][m]]
        decided = {
            "path": genome_to_json(best),
            "path_modules": [list(ms) for ms in active],
            "reused_modules": reused,
            "ga_seed": ga_seed,
        }
        mechanism = PathNetSearch(
            generations_run=len(evolution.history),
            reached_target=evolution.reached_target,
            best_fitness=evolution.best_fitness(),
            best_fitness_per_generation=[max(r.fitness) for r in evolution.history],
            diverged_contestants=diverged[0],
            trained_together=together,
            waves=evolution.waves,
            modules_kept_back=workers.kept_back if workers is not None else 0,
            shared_modules=sorted(
                n for n, node in graph.nodes() if n not in ctx.committed and node.shares is not None
            ),
            tournaments=[record.to_json() for record in evolution.history],
        )
        return Candidate(graph, decided, mechanism)
