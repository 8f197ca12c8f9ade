import random

import pytest

from growsearch.methods._pathnet_tournament import (
    Evolution,
    active_modules,
    evolve,
    mutate,
    random_population,
    tournament,
)

M = 5  # modules per layer


def differences(a, b):
    return [
        (layer, slot)
        for layer, genes in enumerate(a)
        for slot, gene in enumerate(genes)
        if gene != b[layer][slot]
    ]


def test_a_tournament_overwrites_the_loser_with_a_mutated_copy_of_the_winner():
    rng = random.Random(3)
    population = random_population(rng, 6, n_layers=3, n_modules=M, n_active=2)
    before = list(population)
    trained = []
    mutated = 0

    def fitness(genome):  # stands in for "train the path, then score it": called once per contestant
        trained.append(genome)
        return sum(sum(layer) for layer in genome)

    for generation in range(30):
        record = tournament(population, fitness, rng, M, generation=generation)
        a, b = record.contestants
        assert a != b and trained[-2:] == [before[a], before[b]] == list(record.genomes)
        assert record.fitness == (fitness(before[a]), fitness(before[b]))
        assert record.winner == (a if record.fitness[0] >= record.fitness[1] else b)
        assert {record.winner, record.loser} == {a, b}
        # the loser's slot holds the winner's genome, changed exactly where a mutation is recorded
        assert population[record.loser] == record.child
        assert population[record.winner] == before[record.winner]
        changed = differences(record.child, before[record.winner])
        assert set(changed) <= {(m.layer, m.slot) for m in record.mutations}
        for m in record.mutations:
            assert before[record.winner][m.layer][m.slot] == m.old
            assert record.child[m.layer][m.slot] == m.new == (m.old + m.shift) % M
            assert -2 <= m.shift <= 2
        others = [i for i in range(len(population)) if i != record.loser]
        assert all(population[i] == before[i] for i in others)
        mutated += len(record.mutations)
        before = list(population)
    assert mutated > 0


def test_mutation_rate_is_one_over_n_times_l_and_shifts_wrap_into_range():
    rng = random.Random(0)
    genome = ((0, 4), (2, 3), (1, 1))  # L = 3, N = 2: rate 1/6 per gene
    counts = []
    for _ in range(3000):
        child, mutations = mutate(genome, M, rng)
        counts.append(len(mutations))
        assert all(0 <= gene < M for layer in child for gene in layer)
    assert sum(counts) / len(counts) == pytest.approx(1.0, abs=0.1)  # 6 genes x 1/6
    child, mutations = mutate(genome, M, random.Random(1), rate=1.0)
    assert len(mutations) == 6
    assert {m.shift for _ in range(50) for m in mutate(genome, M, rng, rate=1.0)[1]} == {-2, -1, 0, 1, 2}
    wrapped = [m for _ in range(50) for m in mutate(genome, M, rng, rate=1.0)[1] if m.old + m.shift >= M]
    assert wrapped and all(m.new == m.old + m.shift - M for m in wrapped)


def test_evolution_stops_at_the_target_and_keeps_the_best_scored_path():
    rng = random.Random(0)
    population = random_population(rng, 8, n_layers=2, n_modules=M, n_active=2)

    def fitness(genome):
        return sum(len(layer) for layer in active_modules(genome)) / 4  # 1.0: two distinct modules per layer

    evolution = evolve(population, fitness, rng, M, generations=200, target=1.0)
    assert evolution.reached_target and len(evolution.history) < 200
    assert fitness(evolution.best()) == evolution.best_fitness() == 1.0
    assert evolution.history[-1].generation == len(evolution.history) - 1
    unscored = Evolution(population)
    with pytest.raises(ValueError, match="no tournament"):
        unscored.best()
    full = evolve(population, fitness, random.Random(1), M, generations=5, target=None)
    assert len(full.history) == 5 and not full.reached_target
    assert full.history[0].to_json()["genomes"][0] == [list(layer) for layer in full.history[0].genomes[0]]


def test_active_modules_are_the_distinct_genes_of_each_layer():
    assert active_modules(((3, 1, 3), (0, 0, 0))) == ((1, 3), (0,))
