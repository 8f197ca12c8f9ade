"""PathNet's binary tournament genetic algorithm (Fernando et al. 2017, "PathNet: Evolution Channels
Gradient Descent in Super Neural Networks", arXiv:1701.08734).

A genome is a path through a pool of L layers x M modules: for each layer, N module indices in [0, M)
(stored layer by layer: `genome[layer][slot]`). A path uses the *distinct* modules its genes name, so at
most N per layer. One tournament: draw two distinct genomes of the population at random and score each
with `fitness`; the loser is overwritten by a copy of the winner in which every gene mutates with
probability 1 / (N x L) by a random shift in [-shift, shift], wrapped into [0, M).

In PathNet, `fitness` trains the path for a short budget first, on module weights the whole population
shares, so fitness calls have side effects and run one after the other (a tournament is not a pure
function of the genomes). This module is pure Python and knows nothing of modules or torch: the caller's
`fitness` does the training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Genome = tuple[tuple[int, ...], ...]  # genome[layer][slot]: a module index in [0, M)
Fitness = Callable[[Genome], float]


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

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
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


def mutate(
    genome: Genome, n_modules: int, rng: random.Random, *, shift: int = 2, rate: float | None = None
) -> tuple[Genome, tuple[Mutation, ...]]:
    """A copy of `genome` where each gene mutates with probability `rate` (default 1 / (N x L), the paper's)
    by a shift drawn uniformly from [-shift, shift] (zero included), wrapped into [0, n_modules)."""
    n_genes = sum(len(layer) for layer in genome)
    rate = 1.0 / n_genes if rate is None else rate
    mutations = []
    layers = []
    for index, layer in enumerate(genome):
        genes = list(layer)
        for slot, old in enumerate(layer):
            if rng.random() < rate:
                delta = rng.randint(-shift, shift)
                genes[slot] = (old + delta) % n_modules
                mutations.append(Mutation(index, slot, old, genes[slot], delta))
        layers.append(tuple(genes))
    return tuple(layers), tuple(mutations)


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
    if len(population) < 2:
        raise ValueError(f"a binary tournament needs a population of at least 2, got {len(population)}")
    a, b = rng.sample(range(len(population)), 2)
    genomes = (population[a], population[b])
    scores = (float(fitness(genomes[0])), float(fitness(genomes[1])))
    winner, loser = (a, b) if scores[0] >= scores[1] else (b, a)
    child, mutations = mutate(population[winner], n_modules, rng, shift=shift)
    population[loser] = child
    return TournamentRecord(generation, (a, b), genomes, scores, winner, loser, child, mutations)


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


def evolve(
    population: Sequence[Genome],
    fitness: Fitness,
    rng: random.Random,
    n_modules: int,
    generations: int,
    *,
    target: float | None = None,
    shift: int = 2,
) -> Evolution:
    """Run `generations` tournaments (one generation = one binary tournament), stopping early once a
    contestant's fitness reaches `target` (PathNet's "until the task is learned" criterion)."""
    evolution = Evolution(list(population))
    for generation in range(generations):
        record = tournament(evolution.population, fitness, rng, n_modules, generation=generation, shift=shift)
        evolution.history.append(record)
        for slot, score in zip(record.contestants, record.fitness, strict=True):
            evolution.scores[slot] = (score, generation)
        evolution.scores.pop(record.loser)  # the child in its slot has not been scored yet
        if target is not None and max(record.fitness) >= target:
            evolution.reached_target = True
            break
    return evolution
