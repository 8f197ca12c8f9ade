"""PathNet's binary tournament genetic algorithm (Fernando et al. 2017, "PathNet: Evolution Channels
Gradient Descent in Super Neural Networks", arXiv:1701.08734).

A genome is a path through a pool of L layers x M modules: for each layer, N module indices in [0, M)
(stored layer by layer: `genome[layer][slot]`). A path uses the *distinct* modules its genes name, so at
most N per layer. One tournament: draw two distinct genomes of the population at random and score each
with `fitness`; the loser is overwritten by a copy of the winner in which every gene mutates with
probability 1 / (N x L) by a random shift in [-shift, shift], wrapped into [0, M).

In PathNet, `fitness` trains the path for a short budget first, on module weights the whole population
shares, so fitness calls have side effects (a tournament is not a pure function of the genomes). They run
one contestant after the other (a `fitness` function: the paper's serial algorithm), or a wave of
tournaments at a time (`Workers`: the paper's parallel workers). A wave is a run of consecutive
tournaments whose contestants' population slots are all distinct: none of them reads a slot another one
overwrites, so none depends on another's outcome, and the GA draws exactly what the serial GA draws (a
tournament's pair and its mutation plan take the same random numbers whatever the fitnesses turn out to
be): the same seed meets the same pairs and mutates the same genes; only the fitnesses may differ. This
module is pure Python and knows nothing of modules or torch: the caller's `fitness` or `Workers` trains.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Genome = tuple[tuple[int, ...], ...]  # genome[layer][slot]: a module index in [0, M)
Fitness = Callable[[Genome], float]


class Workers(Protocol):
    """Contestants trained together on the shared weights (the paper's parallel workers)."""

    def train(self, genomes: Sequence[Genome]) -> list[float]:
        """Train every genome's path at once, each on its own minibatches; their fitnesses, in order."""
        ...

    def land(self, count: int) -> None:
        """Put the last `train`'s training into the shared weights; its first `count` contestants are the
        settled ones (the others come after the tournament that ended the GA; workers that train the
        shared weights together cannot take their training out, and keep it)."""
        ...


@dataclass(frozen=True)
class Mutation:
    """One gene that mutated: `genome[layer][slot]` went from `old` to `new` = (old + shift) mod M."""

    layer: int
    slot: int
    old: int
    new: int
    shift: int


@dataclass(frozen=True)
class TournamentRecord:
    """What one tournament did, for the trial history: who met, how fit each was, what replaced the loser."""

    generation: int
    contestants: tuple[int, int]  # population slots, in the order they were drawn (and trained)
    genomes: tuple[Genome, Genome]
    fitness: tuple[float, float]
    winner: int  # a population slot; ties go to the first contestant
    loser: int
    child: Genome  # the mutated copy of the winner now in the loser's slot
    mutations: tuple[Mutation, ...]
    wave: int = 0  # tournaments of one wave trained together (serially: one tournament a wave)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "wave": self.wave,
            "contestants": list(self.contestants),
            "genomes": [genome_to_json(g) for g in self.genomes],
            "fitness": list(self.fitness),
            "winner": self.winner,
            "loser": self.loser,
            "child": genome_to_json(self.child),
            "mutations": [[m.layer, m.slot, m.old, m.new] for m in self.mutations],
        }


def genome_to_json(genome: Genome) -> list[list[int]]:
    return [list(layer) for layer in genome]


def active_modules(genome: Genome) -> tuple[tuple[int, ...], ...]:
    """The distinct modules a path uses at each layer, in increasing order."""
    return tuple(tuple(sorted(set(layer))) for layer in genome)


def random_genome(rng: random.Random, n_layers: int, n_modules: int, n_active: int) -> Genome:
    return tuple(tuple(rng.randrange(n_modules) for _ in range(n_active)) for _ in range(n_layers))


def random_population(
    rng: random.Random, size: int, n_layers: int, n_modules: int, n_active: int
) -> list[Genome]:
    return [random_genome(rng, n_layers, n_modules, n_active) for _ in range(size)]


MutationPlan = tuple[tuple[int, int, int], ...]  # (layer, slot, shift) of each gene that mutates


def mutation_plan(
    shape: Sequence[int], rng: random.Random, *, shift: int = 2, rate: float | None = None
) -> MutationPlan:
    """Which genes of a genome with `shape[layer]` genes per layer mutate, and by how much: each with
    probability `rate` (default 1 / (N x L), the paper's), by a shift drawn uniformly from [-shift, shift]
    (zero included). The random numbers it takes do not depend on the genome, only on its shape."""
    rate = 1.0 / sum(shape) if rate is None else rate
    return tuple(
        (layer, slot, rng.randint(-shift, shift))
        for layer, n_genes in enumerate(shape)
        for slot in range(n_genes)
        if rng.random() < rate
    )


def apply_mutations(
    genome: Genome, plan: MutationPlan, n_modules: int
) -> tuple[Genome, tuple[Mutation, ...]]:
    """A copy of `genome` with the plan's genes shifted, wrapped into [0, n_modules)."""
    layers = [list(layer) for layer in genome]
    mutations = []
    for layer, slot, delta in plan:
        old = genome[layer][slot]
        layers[layer][slot] = (old + delta) % n_modules
        mutations.append(Mutation(layer, slot, old, layers[layer][slot], delta))
    return tuple(tuple(layer) for layer in layers), tuple(mutations)


def mutate(
    genome: Genome, n_modules: int, rng: random.Random, *, shift: int = 2, rate: float | None = None
) -> tuple[Genome, tuple[Mutation, ...]]:
    """A copy of `genome` where each gene mutates with probability `rate` (default 1 / (N x L), the paper's)
    by a shift drawn uniformly from [-shift, shift] (zero included), wrapped into [0, n_modules)."""
    plan = mutation_plan([len(layer) for layer in genome], rng, shift=shift, rate=rate)
    return apply_mutations(genome, plan, n_modules)


@dataclass(frozen=True)
class _Draw:
    """A tournament's random part: the pair of slots it meets and how the winner's copy mutates."""

    pair: tuple[int, int]
    plan: MutationPlan


def _draw(population: Sequence[Genome], rng: random.Random, shift: int) -> _Draw:
    if len(population) < 2:
        raise ValueError(f"a binary tournament needs a population of at least 2, got {len(population)}")
    a, b = rng.sample(range(len(population)), 2)
    return _Draw((a, b), mutation_plan([len(layer) for layer in population[a]], rng, shift=shift))


def _settle(
    population: list[Genome],
    draw: _Draw,
    scores: tuple[float, float],
    n_modules: int,
    generation: int,
    wave: int,
) -> TournamentRecord:
    """The tournament's outcome: the loser's slot gets the mutated winner (`population` changes in place)."""
    a, b = draw.pair
    genomes = (population[a], population[b])
    winner, loser = (a, b) if scores[0] >= scores[1] else (b, a)
    child, mutations = apply_mutations(population[winner], draw.plan, n_modules)
    population[loser] = child
    return TournamentRecord(generation, (a, b), genomes, scores, winner, loser, child, mutations, wave)


def tournament(
    population: list[Genome],
    fitness: Fitness,
    rng: random.Random,
    n_modules: int,
    *,
    generation: int = 0,
    shift: int = 2,
) -> TournamentRecord:
    """One binary tournament on `population` (changed in place: the loser's slot gets the mutated winner)."""
    draw = _draw(population, rng, shift)
    a, b = draw.pair
    scores = (float(fitness(population[a])), float(fitness(population[b])))
    return _settle(population, draw, scores, n_modules, generation, generation)


@dataclass
class Evolution:
    """A finished run of tournaments: the final population, every tournament, and each slot's latest score."""

    population: list[Genome]
    history: list[TournamentRecord] = field(default_factory=list)
    scores: dict[int, tuple[float, int]] = field(default_factory=dict)  # slot -> (fitness, generation)
    reached_target: bool = False

    def best_slot(self) -> int:
        """The slot with the highest latest fitness (ties: the most recently scored). PathNet fixes the best
        fit path; a score is the one measured at the genome's last tournament (the shared weights move on)."""
        if not self.scores:
            raise ValueError("no tournament has been run, so no path has a fitness")
        return max(self.scores, key=lambda slot: self.scores[slot])

    def best(self) -> Genome:
        return self.population[self.best_slot()]

    def best_fitness(self) -> float:
        return self.scores[self.best_slot()][0]

    @property
    def waves(self) -> int:
        return len({record.wave for record in self.history})


def evolve(
    population: Sequence[Genome],
    fitness: Fitness | Workers,
    rng: random.Random,
    n_modules: int,
    generations: int,
    *,
    target: float | None = None,
    shift: int = 2,
    parallel: int = 1,
) -> Evolution:
    """Run `generations` tournaments (one generation = one binary tournament), stopping early once a
    contestant's fitness reaches `target` (PathNet's "until the task is learned" criterion).

    With a `fitness` function, each contestant trains and is scored in turn. With `Workers`, a wave of up
    to `parallel` consecutive tournaments with distinct slots trains at once (the next tournament, when it
    meets a slot of the wave, starts the next wave); the tournaments of a wave are then settled in order,
    and when one of them reaches the target the ones after it are dropped (`Workers.land` is told how many
    were settled)."""
    evolution = Evolution(list(population))
    serial = callable(fitness)
    per_wave = 1 if serial else max(parallel, 1)
    pending: _Draw | None = None
    generation = wave = 0
    while generation < generations and not evolution.reached_target:
        draws: list[_Draw] = []
        taken: set[int] = set()
        while generation + len(draws) < generations and len(draws) < per_wave:
            draw = pending or _draw(evolution.population, rng, shift)
            pending = None
            if taken & set(draw.pair):
                pending = draw  # it meets a slot this wave overwrites: it starts the next wave
                break
            draws.append(draw)
            taken.update(draw.pair)
        genomes = [evolution.population[slot] for draw in draws for slot in draw.pair]
        if serial:
            scores = [float(fitness(genome)) for genome in genomes]
        else:
            scores = [float(score) for score in fitness.train(genomes)]
        settled = 0
        for index, draw in enumerate(draws):
            pair = (scores[2 * index], scores[2 * index + 1])
            record = _settle(evolution.population, draw, pair, n_modules, generation, wave)
            evolution.history.append(record)
            for slot, score in zip(record.contestants, record.fitness, strict=True):
                evolution.scores[slot] = (score, generation)
            evolution.scores.pop(record.loser)  # the child in its slot has not been scored yet
            generation += 1
            settled += 1
            if target is not None and max(record.fitness) >= target:
                evolution.reached_target = True
                break
        if not serial:
            fitness.land(2 * settled)
        wave += 1
    return evolution
