"""DER (Yan et al. 2021): each task's extractor is pruned to its masked units and really is smaller, old
extractors never change, one classifier answers for every class seen so far, the auxiliary classifier
tells the new classes from the old, and the exemplar memory is kept class-balanced in the run folder. The
shipped settings keep every extractor alive on real MNIST digits (at the paper's rate 0.1 this BN-less MLP
froze dead extractors) and the record says how many of each extractor's units fire."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from growsearch.config.space import load_space
from growsearch.data.benchmarks import load_benchmark
from growsearch.data.memory import ExemplarMemory
from growsearch.data.task import Split
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods.base import TaskContext
from growsearch.methods.der import DER, _AuxiliaryClassifier, extractor
from growsearch.runner import RunOptions, start_run
from growsearch.store.run_folder import MEMORY_FILE, RunFolder
from growsearch.train.candidate import evaluate

from tiny_runs import tiny_space

MEMORY = 40
WIDTH = 32


@pytest.fixture(scope="module")
def der_run(tmp_path_factory):
    space = tiny_space(
        "der",
        network={"layers": [{"linear": WIDTH}, {"linear": WIDTH}]},
        options={"memory_size": MEMORY, "balance_epochs": 2, "sparsity": 0.05},
        training={"epochs": 10},
    )
    options = RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0)
    return start_run(space, options, tmp_path_factory.mktemp("der") / "run")


def test_each_extractor_is_pruned_and_old_ones_never_change(der_run, digits_stream):
    run = RunFolder.open(der_run.path)
    final, _ = run.load_task(4)
    for t, record in enumerate(der_run.records):
        done = record.mechanism
        assert done["units"] == [WIDTH, WIDTH]
        assert all(0 < kept < WIDTH for kept in done["units_kept"]), done  # the masks closed some units
        assert done["extractor_parameters"] < done["unpruned_parameters"]
        widths = [final.node(f"t{t}/L{i}").spec.out_features for i in range(2)]
        assert widths == done["units_kept"]  # the committed extractor really is that small
        at_commit, _ = run.load_task(t)
        for node_id in extractor_nodes(t):
            for name, value in at_commit.node(node_id).weights.items():
                assert torch.equal(final.node(node_id).weights[name], value), (node_id, name)
        x = digits_stream.tasks[0].test.x
        old = compile_view(at_commit, t, output=f"t{t}/L1").module(x)
        assert torch.equal(compile_view(final, 4, output=f"t{t}/L1").module(x), old)
    assert der_run.records[-1].mechanism["classes_seen"] == 10


def test_the_record_counts_the_extractor_units_that_fire(der_run):
    """units_firing: the committed extractor's output units positive on some of the task's own samples, as
    the run folder's graph computes them."""
    stream = load_benchmark("split-digits", scenario="class-il", max_per_task=80, seed=0)
    run = RunFolder.open(der_run.path)
    for t, record in enumerate(der_run.records):
        graph, _ = run.load_task(t)
        features = compile_view(graph, t, output=f"t{t}/L1").module.eval()(stream.tasks[t].train.x)
        firing = int((features > 0).any(0).sum())
        assert record.mechanism["units_firing"] == firing
        assert 0 < firing <= record.mechanism["units_kept"][-1]


def test_the_shipped_settings_keep_every_extractor_alive_on_mnist(tmp_path):
    """The shipped YAML (its 2x100 MLP, optimiser, masks and 200 exemplars) on real 28x28 digits, class-IL:
    each committed extractor keeps at least half its kept units firing and A_T clears 0.8 (replay with the
    same memory reaches about 0.8 on the whole stream). At the paper's rate 0.1 this seed froze extractors
    with 5 of 18 and 4 of 17 units firing, and A_T was 0.557 (0.845 at the shipped 0.05)."""
    options = RunOptions(benchmark="split-mnist5k", scenario="class-il", max_per_task=300, seed=2)
    result = start_run(load_space("der"), options, tmp_path / "run")
    for record in result.records:
        done = record.mechanism
        assert done["units_firing"] >= done["units_kept"][-1] / 2, (record.task, done)
    assert result.metrics["metrics"]["average_accuracy"] > 0.8, [r.accuracy_row for r in result.records]


def extractor_nodes(t: int) -> list[str]:
    return [f"t{t}/L0", f"t{t}/L1"]


def test_one_classifier_scores_every_task(der_run):
    """After task t every task's test samples go through task t's head, over every class seen so far:
    classes not yet seen score 0, and the class-IL rows are the metrics'."""
    run = RunFolder.open(der_run.path)
    for t, record in enumerate(der_run.records):
        graph, _ = run.load_task(t)
        head = graph.node(graph.head(t))
        assert head.inputs == (f"t{t}/features",) and head.spec.out_features == 2 * (t + 1)
        assert graph.node(f"t{t}/features").inputs == tuple(f"t{k}/L1" for k in range(t + 1))
        assert all(a == 0.0 for a in record.accuracy_row[t + 1 :])
    learnt = [r.accuracy_row[r.task] for r in der_run.records]
    assert sum(learnt) / 5 > 0.8, learnt  # each task's classes are learnt among all seen so far
    final = der_run.records[-1].accuracy_row
    assert der_run.metrics["metrics"]["average_accuracy"] == pytest.approx(sum(final) / 5)


def test_the_newest_head_is_what_the_rows_measure(der_run):
    stream = load_benchmark("split-digits", scenario="class-il", max_per_task=80, seed=0)
    graph, record = RunFolder.open(der_run.path).load_task(2)
    assert [evaluate(graph, 2, task.test) for task in stream.tasks] == record.accuracy_row


def test_the_memory_is_class_balanced_and_kept_with_each_task(der_run):
    run = RunFolder.open(der_run.path)
    for t, record in enumerate(der_run.records):
        memory = ExemplarMemory.from_tensors(run.load_task_tensors(t, MEMORY_FILE))
        classes = 2 * (t + 1)
        assert sorted(memory.x) == list(range(classes))
        assert {len(x) for x in memory.x.values()} == {MEMORY // classes}
        assert record.mechanism["exemplars"] == (0 if t == 0 else len(_memory_after(run, t - 1)))


def _memory_after(run: RunFolder, t: int) -> ExemplarMemory:
    return ExemplarMemory.from_tensors(run.load_task_tensors(t, MEMORY_FILE))


def test_the_auxiliary_classifier_tells_each_new_class_from_all_old_ones(digits_stream):
    """Labels of the auxiliary head: 0 for every old class, 1..k for the task's k new classes."""
    space = tiny_space("der")
    method = DER(space)
    task = digits_stream.tasks[0]
    own = Split(task.train.x, task.train.y + 4)  # a task holding classes 4 and 5
    memory = Split(task.train.x[:6], torch.tensor([0, 1, 2, 3, 0, 1]))  # exemplars of classes 0..3
    joined = Split(torch.cat([own.x, memory.x]), torch.cat([own.y, memory.y]))
    specs = method.specs_for(digits_stream.input_shape)
    ctx = TaskContext(
        2, dataclasses.replace(task, train=joined), _two_task_graph(method, digits_stream), specs, (), 0
    )
    ctx = dataclasses.replace(ctx, exemplars=6)
    candidate = method.build({}, ctx)
    auxiliary = _AuxiliaryClassifier(candidate.graph, ctx, torch.nn.Identity(), 1.0)
    assert auxiliary.labels.tolist() == [0, 0, 0, 0, 1, 2]
    assert auxiliary.head.out_features == 3
    assert candidate.graph.node("t2/head").spec.out_features == 6


def _two_task_graph(method, stream):
    graph = ModuleGraph(stream.input_shape)
    specs = method.specs_for(stream.input_shape)
    for t in range(2):
        ctx = TaskContext(t, stream.tasks[t], graph, specs, (), 0)
        graph = ops.freeze(method.build({}, ctx).graph, [n for n, node in graph.nodes()] + extractor(ctx))
    return graph
