"""Adaptive RPS-Net (Rajasegaran et al. 2019): a new path is a search over random paths, a path trains again
until it is saturated and is then frozen for good, one classifier answers for every class seen, the
previous model is distilled, and the exemplar memory is kept class-balanced."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch

from growsearch.data.benchmarks import load_benchmark
from growsearch.data.memory import ExemplarMemory
from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods._rps_net_paths import is_module, path_saturation
from growsearch.methods.base import TaskContext
from growsearch.methods.rps_net import RPSNet, distillation_loss, features_node
from growsearch.runner import RunOptions, start_run
from growsearch.seeds import derived_seed
from growsearch.store.run_folder import MEMORY_FILE, RunFolder
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.extension import TrainingRun
from growsearch.train.trainer import count_macs

from tiny_runs import tiny_space

MEMORY = 40
THRESHOLD = 0.45  # the fixture's saturations: 0.40, 0.43 (reused), 0.48 (frozen), then 0.51, 0.49
OPTIONS = {"memory_size": MEMORY, "fisher_samples": 50, "saturation_threshold": THRESHOLD}
SECTIONS = {
    "network": {"layers": [{"linear": 32}, {"linear": 32}]},
    "options": OPTIONS,
    "search": {"n_trials": 3},
    "training": {"epochs": 6, "lr": 0.01},
}


@pytest.fixture(scope="module")
def rps_run(tmp_path_factory):
    options = RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0)
    return start_run(tiny_space("rps-net", **SECTIONS), options, tmp_path_factory.mktemp("rps") / "run")


@pytest.fixture(scope="module")
def stream():
    return load_benchmark("split-digits", scenario="class-il", max_per_task=80, seed=0)


def mechanisms(run) -> list[dict]:
    return [r.mechanism for r in run.records]


def test_a_path_trains_again_until_saturated_then_its_modules_never_change(rps_run, stream):
    done = mechanisms(rps_run)
    assert [m["switched"] for m in done] == [True, False, False, True, True]
    assert [m["path_frozen"] for m in done] == [m["saturation"] > THRESHOLD for m in done]
    assert done[1]["retrained_modules"] == done[0]["new_modules"]  # reused, and trained again
    run = RunFolder.open(rps_run.path)
    final, _ = run.load_task(4)
    x = stream.tasks[0].test.x
    frozen_tasks = [t for t, m in enumerate(done) if m["path_frozen"]]
    assert frozen_tasks[0] == 2
    for t in range(frozen_tasks[0], 5):  # from the first frozen path on, every task's modules are fixed
        at_commit, _ = run.load_task(t)
        for node_id in at_commit.view(t):
            if is_module(at_commit, node_id):
                assert at_commit.node(node_id).frozen, node_id
                for name, value in at_commit.node(node_id).weights.items():
                    assert torch.equal(final.node(node_id).weights[name], value), (node_id, name)
        features = features_node(at_commit, t)
        before = compile_view(at_commit, t, output=features).module(x)
        assert torch.equal(compile_view(final, t, output=features).module(x), before), t
    # a reused path did change the earlier tasks' features: it trained again
    task0, _ = run.load_task(0)
    output = features_node(task0, 0)
    assert not torch.equal(
        compile_view(task0, 0, output=output).module(x), compile_view(final, 0, output=output).module(x)
    )


def test_a_new_path_is_the_best_of_random_paths_and_a_reused_one_trains_once(rps_run):
    storage = RunFolder.open(rps_run.path).storage()
    for record in rps_run.records:
        study = optuna.load_study(study_name=f"task-{record.task}", storage=storage)
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not record.mechanism["switched"]:
            assert len(trials) == 1 and trials[0].params == {}
            continue
        assert len(trials) == 3
        paths = {tuple(sorted(tr.params.items())) for tr in trials}
        assert len(paths) > 1, paths  # the trials sampled different paths
        best = max(trials, key=lambda tr: (tr.values[0], -tr.number))
        assert record.chosen_trial == best.number
        chosen = [[best.params[f"L{layer}/module0"]] for layer in range(2)]
        assert record.decisions["path"] == chosen == record.mechanism["path"]
    new = [set(m["new_modules"]) for m in mechanisms(rps_run)]
    assert new[3] and new[4] and not new[1] and not new[2]
    done = mechanisms(rps_run)
    assert set(done[3]["new_modules"]) <= set(done[4]["reused_frozen_modules"])  # task 3's frozen path


def test_saturation_above_the_threshold_freezes_the_path_and_the_next_task_switches(rps_run, stream):
    """A constructed case: task 0's committed path (saturation 0.40) committed again under thresholds
    either side of it."""
    run = RunFolder.open(rps_run.path)
    task0, _ = run.load_task(0)
    saturation = rps_run.records[0].mechanism["saturation"]
    for threshold, frozen in ((saturation - 0.01, True), (saturation + 0.01, False)):
        space = tiny_space(
            "rps-net", **{**SECTIONS, "options": {**OPTIONS, "saturation_threshold": threshold}}
        )
        method = RPSNet(space)
        specs = method.specs_for(stream.input_shape)
        unfrozen = task0.copy()
        for node_id in unfrozen.view(0):
            unfrozen.node(node_id).frozen = not is_module(unfrozen, node_id) and node_id != "input"
        ctx = _context(method, stream, 0, unfrozen, specs, seed=derived_seed(0, 0))  # the run's task seed
        committed = method.commit(unfrozen, ctx, retrain=None)
        assert method.record(committed, ctx, None)["saturation"] == pytest.approx(saturation)
        assert method.record(committed, ctx, None)["path_frozen"] is frozen
        following = _context(method, stream, 1, committed, specs, history=rps_run.records[:1])
        assert method.switching(following) is frozen
        candidate = method.build({"L0/module0": 3, "L1/module0": 5}, following)
        assert bool(candidate.mechanism["new_modules"]) is frozen
        assert bool(candidate.mechanism["retrained_modules"]) is not frozen


def test_saturation_counts_only_weights_that_carry_information(rps_run, stream):
    """Zeroing half of the inputs takes the information off the first layer's weights reading them."""
    graph, _ = RunFolder.open(rps_run.path).load_task(0)
    graph = graph.copy()
    modules = [n for n in graph.view(0) if is_module(graph, n)]
    for node_id in modules:
        graph.node(node_id).frozen = False
    train = stream.tasks[0].train
    half = dataclasses.replace(
        train, x=torch.cat([train.x[..., :4, :], torch.zeros_like(train.x[..., 4:, :])], -2)
    )
    kwargs = {"floor": 0.1, "samples": 50, "seed": 0}
    full = path_saturation(graph, 0, modules, train, **kwargs)
    halved = path_saturation(graph, 0, modules, half, **kwargs)
    assert 0 < halved < full < 1
    assert path_saturation(graph, 0, [], train, **kwargs) == 1.0  # no trainable module: nothing left


def test_distillation_from_the_previous_model_with_phis_weight(rps_run, stream):
    assert [m["distillation_weight"] for m in mechanisms(rps_run)] == [0.0, 1.0, 2.5, 5.0, 7.5]
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    old = torch.tensor([[1.0, -2.0]])
    y = torch.tensor([3])
    target = torch.tensor([[1.0, -2.0, 0.0, 1.0]])
    assert distillation_loss(target.clone(), old, y, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    expected = (
        torch.softmax(target / 2, 1) * (torch.log_softmax(target / 2, 1) - torch.log_softmax(logits / 2, 1))
    ).sum()
    assert distillation_loss(logits, old, y, 2.0).item() == pytest.approx(expected.item())
    # the hook distils task 1's candidate towards task 0's committed model
    run = RunFolder.open(rps_run.path)
    task0, _ = run.load_task(0)
    method = RPSNet(tiny_space("rps-net", **SECTIONS))
    specs = method.specs_for(stream.input_shape)
    first = _context(method, stream, 0, ModuleGraph(stream.input_shape), specs)
    assert method.build({"L0/module0": 1, "L1/module0": 1}, first).training is None
    ctx = _context(method, stream, 1, task0, specs, history=rps_run.records[:1])
    candidate = method.build({}, ctx)
    training = candidate.training
    # frozen nodes run per batch, so the trained suffix reads the raw inputs the previous model reads
    assert compile_for_training(candidate.graph, 1, changing=training.changing).prefix is None
    x, labels = stream.tasks[1].train.x[:8], torch.full((8,), 2)
    batches = Minibatches([x], labels, 8, 0)
    training.start(TrainingRun(compile_for_training(candidate.graph, 1), batches, epochs=1))
    new_logits = compile_view(candidate.graph, 1).module(x)
    previous = compile_view(task0, 0).module(x)
    assert training.batch_penalty(new_logits, Batch((x,), labels)).item() == pytest.approx(
        distillation_loss(new_logits, previous, labels, 2.0).item()
    )
    assert training.batch_penalty(new_logits, Batch((x,), labels)).item() > 0
    with count_macs() as spent:  # the teacher's pass counts in the training's compute (CE)
        training.batch_penalty(new_logits, Batch((x,), labels))
    assert spent.macs == task0.macs(task0.view(0)) * len(x)


def test_one_classifier_answers_for_every_class_seen(rps_run):
    run = RunFolder.open(rps_run.path)
    for t, record in enumerate(rps_run.records):
        graph, _ = run.load_task(t)
        assert graph.node(graph.head(t)).spec.out_features == 2 * (t + 1)
        assert all(a == 0.0 for a in record.accuracy_row[t + 1 :])
    final = rps_run.records[-1].accuracy_row
    assert rps_run.metrics["metrics"]["average_accuracy"] == pytest.approx(sum(final) / 5)
    assert sum(final) / 5 > 0.6, final  # naive fine-tuning scores about 0.1 here
    assert min(final) > 0.4, final  # no task forgotten


def test_the_memory_is_class_balanced_and_kept_with_each_task(rps_run):
    run = RunFolder.open(rps_run.path)
    for t, record in enumerate(rps_run.records):
        memory = ExemplarMemory.from_tensors(run.load_task_tensors(t, MEMORY_FILE))
        classes = 2 * (t + 1)
        assert sorted(memory.x) == list(range(classes))
        assert {len(x) for x in memory.x.values()} == {MEMORY // classes}
        assert record.mechanism["exemplars"] == (0 if t == 0 else (MEMORY // (2 * t)) * 2 * t)


def test_options_are_checked():
    with pytest.raises(Exception, match="modules_per_path"):
        RPSNet(tiny_space("rps-net", options={"modules_per_layer": 2, "modules_per_path": 3}))
    with pytest.raises(Exception, match="saturation_threshold"):
        RPSNet(tiny_space("rps-net", options={"saturation_threshold": 1.5}))


def _context(method, stream, t, committed, specs, history=(), seed=0) -> TaskContext:
    return TaskContext(t, stream.tasks[t], committed, specs, tuple(history), seed)
