import copy
import math
import random

import optuna
import pytest
import torch

from growsearch.errors import ConfigError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods._pathnet_tournament import active_modules, evolve, random_population, tournament
from growsearch.methods._pathnet_workers import PoolWorkers, packable
from growsearch.methods.base import TaskContext
from growsearch.methods.pathnet import ModulePool, PathNet, PathNetOptions, add_path, pool_id
from growsearch.store.run_folder import RunFolder
from growsearch.train.batches import Minibatches
from growsearch.train.extension import Training
from growsearch.train.optim import make_optimizer
from growsearch.train.trainer import count_macs, fit
from growsearch.trial_record import read_record

from tiny_runs import tiny_space

# L = 2 (tiny_space's two 16-unit layers), M = 3, N = 2, population 4, a few generations
TINY = {"modules_per_layer": 3, "active_per_layer": 2, "population": 4, "generations": 3, "minibatches": 3}


def committed_task0(stream, specs) -> ModuleGraph:
    """Task 0's path (modules 0, 1 at layer 0; module 2 at layer 1), committed: every node frozen."""
    torch.manual_seed(0)
    pool = ModulePool(ModuleGraph(stream.input_shape), specs, 3, 2)
    graph = add_path(ModuleGraph(stream.input_shape), 0, pool, ((0, 1), (2,)))
    return ops.freeze(graph, [n for n in graph.node_ids() if n != INPUT])


def train_contestant(pool, active, batches, steps, config):
    """What PathNet's serial fitness does: the path trained for `steps` minibatches by the one trainer."""
    return fit(
        pool.path_module(active),
        batches,
        pool.trainable(active),
        config.optimizer_settings(),
        steps=steps,
        training=Training(on_divergence="restore"),
        macs_per_sample=pool.macs(active),
        track_accuracy=True,
    )


def fresh_pool(stream, **sections):
    """A fresh pool (M = 3, seed 0) for the tiny PathNet space with these sections; its training config."""
    space = tiny_space("pathnet", options=TINY, **sections)
    torch.manual_seed(0)
    return ModulePool(
        ModuleGraph(stream.input_shape), PathNet(space).specs_for(stream.input_shape), 3, 2
    ), space.training


def stream_of(split, batch_size):
    return Minibatches([split.x], split.y, batch_size, seed=0)


def test_a_tournament_on_the_shared_pool_trains_contestants_in_place_and_never_moves_frozen_modules(
    digits_stream,
):
    space = tiny_space("pathnet", options=TINY)
    specs = PathNet(space).specs_for(digits_stream.input_shape)
    graph0 = committed_task0(digits_stream, specs)
    pool = ModulePool(graph0, specs, 3, 2)
    assert pool.frozen == [[True, True, False], [False, False, True]]
    before = {k: v.clone() for k, v in pool.state_dict().items()}
    batches = stream_of(digits_stream.tasks[1].train, 16)
    population = [((0, 1), (2, 2)), ((1, 2), (0, 2))]  # both route through frozen modules
    trained = []

    def fitness(genome):
        trained.append(active_modules(genome))
        result = train_contestant(pool, active_modules(genome), batches, 4, space.training)
        assert result.samples == 4 * 16 and not result.diverged
        return result.train_accuracy

    record = tournament(population, fitness, random.Random(0), 3)
    assert sorted(trained) == [((0, 1), (2,)), ((1, 2), (0, 2))]
    assert (
        population[record.loser] == record.child
        and population[record.winner] == record.genomes[record.contestants.index(record.winner)]
    )
    after = pool.state_dict()
    for layer in range(2):
        for m in range(3):
            names = [k for k in after if k.startswith(f"layers.{layer}.{m}.")]
            unchanged = all(torch.equal(before[k], after[k]) for k in names)
            on_a_path = any(m in path[layer] for path in trained)
            if pool.frozen[layer][m]:  # bit-identical, and equal to the committed node
                assert unchanged
                node = graph0.node(pool_id(layer, m))
                assert all(torch.equal(v, after[f"layers.{layer}.{m}.{k}"]) for k, v in node.weights.items())
            else:
                assert unchanged != on_a_path, (layer, m)  # trained exactly when a contestant used it
    assert not torch.equal(before["head.weight"], after["head.weight"])  # the task's head is shared too


def test_a_path_sums_its_modules_and_reaches_frozen_ones_through_old_or_weight_sharing_nodes(digits_stream):
    specs = PathNet(tiny_space("pathnet", options=TINY)).specs_for(digits_stream.input_shape)
    graph0 = committed_task0(digits_stream, specs)
    pool = ModulePool(graph0, specs, 3, 2)
    same = add_path(graph0, 1, pool, ((0, 1), (2,)))  # task 0's very path: only a head is new
    assert set(same.node_ids()) - set(graph0.node_ids()) == {"t1/head"}
    assert same.node("t1/head").inputs == ("t0/L1",)

    other = add_path(graph0, 1, pool, ((0, 2), (1, 2)))
    new = set(other.node_ids()) - set(graph0.node_ids())
    assert new == {"pool/L0/M2", "t1/L0", "pool/L1/M1", "pool/L1/M2@t1", "t1/L1", "t1/head"}
    assert other.node("t1/L0").inputs == ("pool/L0/M0", "pool/L0/M2") and other.node("t1/L0").merge == "sum"
    shared, original = other.node("pool/L1/M2@t1"), graph0.node("pool/L1/M2")
    assert (
        shared.frozen and shared.owner == 0 and shared.inputs == ("t1/L0",) and original.inputs == ("t0/L0",)
    )
    assert shared.shares == "pool/L1/M2" and shared.n_parameters == 0  # the weights are stored once
    assert other.n_parameters() == graph0.n_parameters() + sum(other.node(n).n_parameters for n in new)
    assert not other.node("pool/L0/M2").frozen and other.node("pool/L0/M2").owner == 1
    # the graph computes what the pool's compiled path computes: the sum of the active modules' outputs
    x = digits_stream.tasks[1].test.x
    with torch.no_grad():
        expected = pool.path_module(((0, 2), (1, 2)))(x)
    assert torch.allclose(compile_view(other, 1).module(x), expected, atol=1e-6)
    assert torch.equal(compile_view(other, 0).module(x), compile_view(graph0, 0).module(x))


def test_decide_samples_nothing_so_a_ray_driver_never_runs_the_ga(digits_stream):
    method = PathNet(tiny_space("pathnet", options=TINY))
    specs = method.specs_for(digits_stream.input_shape)
    ctx = TaskContext(0, digits_stream.tasks[0], ModuleGraph(digits_stream.input_shape), specs, (), seed=0)
    trial = optuna.create_study().ask()
    assert method.decide(trial, ctx) == {} and trial.params == {} and trial.user_attrs == {}


def test_a_trials_ga_is_a_function_of_its_seed_so_a_retried_trial_trains_identically(digits_stream):
    method = PathNet(tiny_space("pathnet", options=TINY))
    specs = method.specs_for(digits_stream.input_shape)
    ctx = TaskContext(0, digits_stream.tasks[0], ModuleGraph(digits_stream.input_shape), specs, (), seed=0)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)  # what TrialJob does with the trial's seed before `build`
        with count_macs() as spent:
            candidate = method.build({}, ctx)
        attrs = {**candidate.decisions, **candidate.mechanism_record(), "macs": spent.macs}
        runs.append((attrs, {n: node.weights for n, node in candidate.graph.nodes()}))
    (first, first_weights), (again, again_weights), (other, _) = runs
    assert first == again and first["tournaments"] and first["macs"] > 0
    assert first_weights.keys() == again_weights.keys()
    assert all(torch.equal(v, again_weights[n][k]) for n, ws in first_weights.items() for k, v in ws.items())
    assert other["ga_seed"] != first["ga_seed"]


def test_options_are_checked():
    with pytest.raises(ConfigError, match="options.active_per_layer: expected at most modules_per_layer"):
        PathNet(tiny_space("pathnet", options={"modules_per_layer": 2, "active_per_layer": 3}))
    with pytest.raises(ConfigError, match="options.population: expected an integer >= 2"):
        PathNet(tiny_space("pathnet", options={"population": 1}))


def test_pathnet_runs_end_to_end_and_old_tasks_stay_bit_identical(run_tiny, digits_stream):
    result = run_tiny("pathnet", options=TINY, search={"n_trials": 2})
    run = RunFolder.open(result.path)
    storage = run.storage()
    final, _ = run.load_task(4)
    reused = 0
    for record in result.records:
        task = record.task
        trials = optuna.load_study(study_name=f"task-{task}", storage=storage).get_trials()
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
        records = [read_record(t) for t in trials]
        assert records[0].decisions["ga_seed"] != records[1].decisions["ga_seed"]  # independent restarts
        for trial, trial_record in zip(trials, records, strict=True):
            history = trial_record.mechanism["tournaments"]
            assert len(history) == trial_record.mechanism["generations_run"] <= 3 and trial.params == {}
            assert trial_record.mechanism["trained_together"]  # the shipped default: waves of workers
            waves = [[s for t in history if t["wave"] == w for s in t["contestants"]] for w in range(3)]
            assert all(len(set(slots)) == len(slots) for slots in waves)  # a wave's slots are distinct
            assert trial_record.mechanism["waves"] == len([w for w in waves if w])
            for step in history:
                winner = step["genomes"][step["contestants"].index(step["winner"])]
                for layer, slot, old, new in step["mutations"]:
                    assert winner[layer][slot] == old and step["child"][layer][slot] == new
                    winner[layer][slot] = new
                assert step["child"] == winner
        best = trials[record.chosen_trial]
        assert record.decisions["path"] == read_record(best).decisions["path"]
        assert record.train_macs > sum(r.search_macs for r in records) > 0
        # the committed path: its layer-l modules are the genome's distinct layer-l genes
        for layer, modules in enumerate(record.decisions["path_modules"]):
            join = final.layer_nodes(task)[layer]
            members = [final.node(n).shares or n for n in final.node(join).inputs]  # a module, or its sharer
            assert members == [pool_id(layer, m) for m in modules]
        reused += len(record.decisions["reused_modules"])
    assert reused > 0  # later tasks route through frozen modules
    assert all(node.frozen for _, node in final.nodes())
    for task in range(4):
        at_commit, _ = run.load_task(task)
        x = digits_stream.tasks[task].test.x
        assert torch.equal(compile_view(final, task).module(x), compile_view(at_commit, task).module(x))
        for node_id, node in at_commit.nodes():
            assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items())
    assert result.metrics["metrics"]["bwt_lopez_paz"] == 0.0  # a[T-1][j] == a[j][j]: nothing forgotten
    assert result.metrics["metrics"]["forgetting"] == 0.0
    assert result.metrics["decisions"] == [r.decisions for r in result.records]


def test_a_diverging_contestant_loses_and_leaves_the_shared_pool_as_it_was(digits_stream):
    specs = PathNet(tiny_space("pathnet", options=TINY)).specs_for(digits_stream.input_shape)
    torch.manual_seed(0)
    pool = ModulePool(ModuleGraph(digits_stream.input_shape), specs, 3, 2)
    before = {k: v.clone() for k, v in pool.state_dict().items()}
    exploding = tiny_space("pathnet", options=TINY, training={"lr": 1e30, "momentum": 0.0}).training
    result = train_contestant(pool, ((0, 1), (2,)), stream_of(digits_stream.tasks[0].train, 16), 5, exploding)
    assert result.diverged and result.steps > 0
    assert all(torch.equal(v, pool.state_dict()[k]) for k, v in before.items())


def test_the_tournaments_improve_the_fitness_of_the_best_path(digits_stream):
    options = {**TINY, "population": 8, "generations": 40, "minibatches": 5, "target_fitness": None}
    method = PathNet(tiny_space("pathnet", options=options, training={"lr": 0.01, "momentum": 0.0}))
    specs = method.specs_for(digits_stream.input_shape)
    ctx = TaskContext(0, digits_stream.tasks[0], ModuleGraph(digits_stream.input_shape), specs, (), seed=0)
    torch.manual_seed(0)
    search = method.build({}, ctx).mechanism
    curve = search.best_fitness_per_generation
    assert search.generations_run == 40 and len(curve) == 40
    assert sum(curve[-10:]) / 10 > sum(curve[:10]) / 10 + 0.2  # later tournaments are won by fitter paths
    assert search.best_fitness >= max(curve[:10])


def contestants_step_by_step(start, genomes, batches, steps, config):
    """The reference for a wave: on a copy of `start`, each contestant takes `batches`' next `steps`
    minibatches in turn; then, step by step, every contestant's gradient is taken on the pool in turn
    (each path compiled by `path_module` over the pool's modules) and one optimiser applies their sum.
    Each one's training accuracy (its fitness), and the pool."""
    pool = copy.deepcopy(start)
    actives = [active_modules(genome) for genome in genomes]
    own = [[batches.next() for _ in range(steps)] for _ in genomes]
    paths = [pool.path_module(active) for active in actives]
    trained = list({id(p): p for active in actives for p in pool.trainable(active)}.values())
    optimizer = make_optimizer(trained, config.optimizer_settings())
    correct, seen = [0] * len(genomes), [0] * len(genomes)
    for step in range(steps):
        optimizer.zero_grad()
        for k, path in enumerate(paths):
            batch = own[k][step]
            logits = path(*batch.inputs)
            torch.nn.functional.cross_entropy(logits, batch.y).backward()  # gradients add up
            correct[k] += int((logits.argmax(1) == batch.y).sum())
            seen[k] += len(batch.y)
        optimizer.step()
    return [c / n for c, n in zip(correct, seen, strict=True)], pool


def assert_same_pool(pool, reference):
    for name, value in reference.state_dict().items():
        assert torch.allclose(pool.state_dict()[name], value, atol=1e-6), name


@pytest.mark.parametrize("optimizer", [{}, {"momentum": 0.9, "weight_decay": 0.01}])
def test_a_waves_contestants_train_the_shared_pool_step_by_step_as_workers_taking_turns_would(
    digits_stream, optimizer
):
    space = tiny_space("pathnet", options=TINY, training=optimizer)
    specs = PathNet(space).specs_for(digits_stream.input_shape)
    torch.manual_seed(1)
    pool = ModulePool(committed_task0(digits_stream, specs), specs, 3, 2)  # L0/M0, L0/M1, L1/M2 frozen
    start = copy.deepcopy(pool)
    # two tournaments' contestants: overlapping trainable modules (L0/M2, L1/M0, L1/M1) and frozen ones;
    # a path using one module at a layer (its other slot padded)
    genomes = [((0, 2), (0, 1)), ((2, 2), (0, 2)), ((1, 0), (1, 1)), ((2, 1), (2, 0))]
    train = digits_stream.tasks[1].train
    size = 12
    assert len(train) % size  # a pass ends on a short minibatch, which a contestant meets
    steps, config = 6, space.training
    workers = PoolWorkers(pool, stream_of(train, size), config.optimizer_settings(), steps, active_modules)
    with count_macs() as packed:
        together = workers.train(genomes)
    workers.land(len(genomes))
    with count_macs() as serial:  # each contestant's own compute, as if trained alone on its minibatches
        batches = stream_of(train, size)
        for genome in genomes:
            train_contestant(copy.deepcopy(start), active_modules(genome), batches, steps, config)
    assert packed.macs == serial.macs > 0
    reference, reference_pool = contestants_step_by_step(
        start, genomes, stream_of(train, size), steps, config
    )
    assert together == pytest.approx(reference, abs=1e-12) and len(set(reference)) > 1
    assert_same_pool(pool, reference_pool)
    after, before = pool.state_dict(), start.state_dict()
    for layer, m in ((0, 0), (0, 1), (1, 2)):  # frozen modules: bit-identical
        names = [k for k in before if k.startswith(f"layers.{layer}.{m}.")]
        assert names and all(torch.equal(after[k], before[k]) for k in names)
    for layer, m in ((0, 2), (1, 0), (1, 1)):  # the ones the wave trained moved
        names = [k for k in before if k.startswith(f"layers.{layer}.{m}.")]
        assert names and not any(torch.equal(after[k], before[k]) for k in names)

    # contestants trained one after another end elsewhere: each sees the others' training whole or not at all
    one_after_another = copy.deepcopy(start)
    batches = stream_of(train, size)
    for genome in genomes:
        train_contestant(one_after_another, active_modules(genome), batches, steps, config)
    assert not torch.allclose(pool.head.weight, one_after_another.head.weight, atol=1e-4)


@pytest.mark.parametrize("optimizer", [{}, {"weight_decay": 0.1}])
def test_a_contestant_of_a_wave_diverging_at_once_scores_0_and_leaves_the_others_training_as_alone(
    digits_stream, optimizer
):
    pool, config = fresh_pool(digits_stream, training=optimizer)
    with torch.no_grad():
        for p in pool.layers[1][2].parameters():
            p.fill_(1e38)  # L1/M2's outputs overflow: its path's loss is not finite from the first step
    start = copy.deepcopy(pool)
    genomes = [((0, 1), (2, 2)), ((0, 1), (0, 1))]  # they share L0/M0, L0/M1 and the head
    steps, train = 4, digits_stream.tasks[0].train
    workers = PoolWorkers(pool, stream_of(train, 16), config.optimizer_settings(), steps, active_modules)
    scores = workers.train(genomes)
    workers.land(2)
    batches = stream_of(train, 16)
    for _ in range(steps):  # the diverging contestant's minibatches
        batches.next()
    alone, reference = contestants_step_by_step(start, genomes[1:], batches, steps, config)
    assert scores[0] == 0.0 and alone[0] > 0 and scores[1] == pytest.approx(alone[0], abs=1e-12)
    # it left before its first backward pass; L1/M2, which only it used, keeps its weights (no weight decay)
    assert workers.diverged == 1 and workers.kept_back == 1
    assert_same_pool(pool, reference)  # only the second contestant's training landed


def test_a_padding_slot_never_reads_another_paths_module(digits_stream):
    pool, config = fresh_pool(digits_stream)
    with torch.no_grad():
        for p in pool.layers[1][0].parameters():
            p.fill_(math.nan)  # L1/M0: whoever runs it fails
    start = copy.deepcopy(pool)
    genomes = [((0, 1), (0, 1)), ((1, 2), (2, 2))]  # the second runs L1/M2 alone: one slot padded
    train = digits_stream.tasks[0].train
    workers = PoolWorkers(pool, stream_of(train, 16), config.optimizer_settings(), 3, active_modules)
    scores = workers.train(genomes)
    workers.land(2)
    batches = stream_of(train, 16)
    for _ in range(3):
        batches.next()
    alone, reference = contestants_step_by_step(start, genomes[1:], batches, 3, config)
    assert scores[0] == 0.0 and alone[0] > 0 and scores[1] == pytest.approx(alone[0], abs=1e-12)
    for name, value in reference.state_dict().items():
        assert torch.allclose(pool.state_dict()[name], value, atol=1e-6, equal_nan=True), name


def test_a_contestant_that_trains_then_diverges_is_undone_with_what_it_shares_while_the_others_land(
    digits_stream,
):
    pool, config = fresh_pool(digits_stream)
    task = digits_stream.tasks[0]
    steps = 2
    batches = stream_of(task.train, 16)
    second = [batches.next_indices() for _ in range(steps)][1]  # the first contestant's second minibatch
    assert len(task.train) > 2 * steps * 16  # the second one's minibatches come from the same pass
    x = task.train.x.clone()
    x[second] = math.nan  # its loss stops being finite at its second step, after one of training
    poisoned = Minibatches([x], task.train.y, 16, seed=0)
    start = copy.deepcopy(pool)
    genomes = [((0, 1), (0, 0)), ((2, 2), (1, 2))]  # no module shared; the head is
    workers = PoolWorkers(pool, poisoned, config.optimizer_settings(), steps, active_modules)
    scores = workers.train(genomes)
    workers.land(2)
    assert scores[0] == 0.0 and scores[1] > 0 and workers.diverged == 1
    assert workers.kept_back == 3 + 1  # L0/M0, L0/M1, L1/M0 and the head
    after, before = pool.state_dict(), start.state_dict()
    for name in before:
        undone = name.startswith(("head.", "layers.0.0.", "layers.0.1.", "layers.1.0."))
        assert torch.equal(after[name], before[name]) == undone, name  # the second one's modules landed


def test_a_module_a_wave_leaves_not_finite_keeps_its_weights(digits_stream):
    pool, config = fresh_pool(digits_stream, training={"lr": 3e38})
    start = copy.deepcopy(pool)
    genomes = [((0, 1), (2, 2)), ((1, 2), (0, 1))]
    train = digits_stream.tasks[0].train
    loud = Minibatches([train.x * 1e3], train.y, 16, seed=0)  # gradients for which lr x grad overflows
    workers = PoolWorkers(pool, loud, config.optimizer_settings(), 1, active_modules)
    scores = workers.train(genomes)  # one step: both losses finite, the update is not
    workers.land(2)
    assert min(scores) > 0 and workers.diverged == 0
    assert workers.kept_back == 3 + 3 + 1
    assert all(torch.equal(v, pool.state_dict()[k]) for k, v in start.state_dict().items())


def test_a_wave_leaves_the_modules_its_paths_do_not_use_as_they_were_under_weight_decay(digits_stream):
    pool, config = fresh_pool(digits_stream, training={"weight_decay": 0.1})
    start = copy.deepcopy(pool)
    genomes = [((0, 1), (1, 1)), ((1, 1), (0, 1))]  # neither uses L0/M2, L1/M2
    train = digits_stream.tasks[0].train
    workers = PoolWorkers(pool, stream_of(train, 16), config.optimizer_settings(), 3, active_modules)
    workers.train(genomes)
    workers.land(2)
    after, before = pool.state_dict(), start.state_dict()
    for name in before:
        unused = name.startswith(("layers.0.2.", "layers.1.2."))
        assert torch.equal(after[name], before[name]) == unused, name


def test_contestants_of_a_wave_that_diverge_after_training_leave_the_shared_pool_as_it_was(digits_stream):
    pool, config = fresh_pool(digits_stream, training={"lr": 1e30, "momentum": 0.0})
    start = copy.deepcopy(pool)
    genomes = [((0, 1), (2, 2)), ((1, 2), (0, 1))]
    train = digits_stream.tasks[0].train
    workers = PoolWorkers(pool, stream_of(train, 16), config.optimizer_settings(), 4, active_modules)
    scores = workers.train(genomes)  # the first step's loss is finite, its update overflows the next one's
    workers.land(2)
    assert scores == [0.0, 0.0] and workers.diverged == 2
    assert workers.kept_back == 3 + 3 + 1  # every module they trained (three a layer), and the head
    assert all(torch.equal(v, pool.state_dict()[k]) for k, v in start.state_dict().items())


class ScriptedWorkers:
    """Workers scoring each genome by a fixed function, recording what they were asked."""

    def __init__(self, score):
        self.score, self.trained, self.landed = score, [], []

    def train(self, genomes):
        self.trained.append(len(genomes))
        return [self.score(genome) for genome in genomes]

    def land(self, count):
        self.landed.append(count)


def test_waves_meet_the_pairs_and_mutate_the_genes_the_serial_ga_does_and_stop_where_it_stops():
    def score(genome):
        return sum(map(sum, genome)) / 81  # 3 layers x 3 genes x 9 at most: 1.0

    population = random_population(random.Random(0), 64, n_layers=3, n_modules=10, n_active=3)
    for target, parallel in ((None, 32), (0.8, 32), (None, 2)):
        serial = evolve(population, score, random.Random(1), 10, 200, target=target)
        workers = ScriptedWorkers(score)
        packed = evolve(population, workers, random.Random(1), 10, 200, target=target, parallel=parallel)
        strip = [{k: v for k, v in r.to_json().items() if k != "wave"} for r in serial.history]
        assert [{k: v for k, v in r.to_json().items() if k != "wave"} for r in packed.history] == strip
        assert packed.population == serial.population and packed.best() == serial.best()
        assert serial.waves == len(serial.history)  # serially, one tournament at a time
        sizes = [sum(r.wave == w for r in packed.history) for w in range(packed.waves)]
        assert max(sizes) == parallel if parallel == 2 else max(sizes) > 2
        for wave in range(packed.waves):
            slots = [s for r in packed.history if r.wave == wave for s in r.contestants]
            assert len(set(slots)) == len(slots)
        assert sum(workers.landed) == 2 * len(packed.history) and len(workers.trained) == packed.waves
        if target is not None:  # it stopped inside a wave: the tournaments after the stop were not settled
            assert packed.reached_target and len(packed.history) < 200
            assert workers.trained[-1] > workers.landed[-1]


def test_packed_and_serial_gas_meet_the_same_pairs(digits_stream):
    runs = {}
    for together in (True, False):
        method = PathNet(
            tiny_space("pathnet", options={**TINY, "generations": 6, "pack_contestants": together})
        )
        specs = method.specs_for(digits_stream.input_shape)
        ctx = TaskContext(
            0, digits_stream.tasks[0], ModuleGraph(digits_stream.input_shape), specs, (), seed=0
        )
        torch.manual_seed(0)
        runs[together] = method.build({}, ctx).mechanism
    packed, serial = runs[True], runs[False]
    assert packed.trained_together and not serial.trained_together
    assert serial.waves == serial.generations_run and packed.waves < packed.generations_run
    shared = min(packed.generations_run, serial.generations_run)
    assert [t["contestants"] for t in packed.tournaments[:shared]] == [
        t["contestants"] for t in serial.tournaments[:shared]
    ]
    assert PathNetOptions().pack_contestants  # the shipped default


def test_modules_other_than_dense_layers_train_together_through_vmap_to_the_same_fitnesses(digits_stream):
    conv = {"conv": {"channels": 4, "kernel": 3, "padding": 1}}
    pool, config = fresh_pool(digits_stream, network={"layers": [conv, conv]})
    start = copy.deepcopy(pool)
    genomes = [((0, 2), (0, 1)), ((2, 2), (0, 2)), ((1, 0), (1, 1))]
    steps, train = 5, digits_stream.tasks[0].train
    workers = PoolWorkers(pool, stream_of(train, 16), config.optimizer_settings(), steps, active_modules)
    together = workers.train(genomes)
    workers.land(len(genomes))
    reference, reference_pool = contestants_step_by_step(start, genomes, stream_of(train, 16), steps, config)
    assert together == pytest.approx(reference, abs=1e-12) and len(set(reference)) > 1
    assert_same_pool(pool, reference_pool)


def test_a_pool_with_a_layer_without_weights_trains_its_contestants_serially(tmp_path):
    """A global-pool layer has nothing to stack: the pool is not packable, and the shipped default
    (`pack_contestants: true`) falls back to the serial GA instead of failing."""
    from growsearch.runner import RunOptions, start_run

    layers = [{"conv": {"channels": 4, "kernel": 3, "padding": 1}}, {"globalpool": {}}]
    space = tiny_space("pathnet", options=TINY, network={"layers": layers})
    method = PathNet(space)
    specs = method.specs_for((1, 8, 8))
    pool = ModulePool(ModuleGraph((1, 8, 8)), specs, 3, 2)
    assert not packable(pool)
    options = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=40, seed=0)
    result = start_run(space, options, tmp_path / "run")
    assert len(result.records) == 2
