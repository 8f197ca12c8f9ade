"""Learn to Grow (Li et al. 2019): the DARTS search over reuse / adapt / new, and the categorical space."""

import optuna
import pytest
import torch

from growsearch.data.task import Split, Task
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.base import TaskContext
from growsearch.methods.learn_to_grow import LearnToGrow
from growsearch.store.run_folder import RunFolder
from growsearch.train.candidate import evaluate, train_candidate
from growsearch.train.trainer import count_macs

from tiny_runs import tiny_space

FEATURES = 8


def _clusters(seed: int, signal: slice, n: int, part: int) -> Split:
    """Four Gaussian classes whose means differ only in the `signal` features."""
    centers = 2.0 * torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(10 * seed + part)
    y = torch.randint(0, 4, (n,), generator=generator)
    x = 0.3 * torch.randn(n, FEATURES, generator=generator)
    x[:, signal] += centers[y]
    return Split(x, y)


def _task(task_id: int, seed: int, signal: slice) -> Task:
    parts = [_clusters(seed, signal, n, part) for part, n in enumerate((160, 80, 80))]
    return Task(task_id, (0, 1, 2, 3), *parts, n_outputs=4)


def _ctx(method, task: Task, committed: ModuleGraph) -> TaskContext:
    specs = method.specs_for((FEATURES,))
    return TaskContext(task.task_id, task, committed, specs, (), seed=0)


def _learn_first_task(method, task: Task) -> ModuleGraph:
    ctx = _ctx(method, task, ModuleGraph((FEATURES,)))
    graph = method.build({}, ctx).graph
    graph = train_candidate(graph, 0, task.train, task.val, method.space.training, seed=0).graph
    return method.commit(graph, ctx, None)


def test_darts_picks_reuse_for_a_repeated_task_and_new_when_reuse_cannot_fit():
    space = tiny_space(
        "learn-to-grow",
        options={"search_epochs": 8, "arch_lr": 0.05, "cost_weight": 0.1},
        training={"epochs": 6, "lr": 0.1, "optimizer": "sgd"},
    )
    method = LearnToGrow(space)
    torch.manual_seed(0)
    first = _task(0, seed=1, signal=slice(0, 4))
    committed = _learn_first_task(method, first)
    # the first layer reads only the first half of the input: it cannot serve a task living in the second
    committed.node("t0/L0").weights["0.weight"][:, 4:] = 0.0
    assert evaluate(committed, 0, first.val) > 0.9

    chosen = {}
    for name, task in [
        ("repeat", Task(1, first.classes, first.train, first.val, first.test, 4)),
        ("unrelated", _task(1, seed=7, signal=slice(4, 8))),
    ]:
        torch.manual_seed(1)
        with count_macs() as spent:
            candidate = method.build({}, _ctx(method, task, committed))
        chosen[name] = candidate.decisions["structure"]
        weights = candidate.decisions["architecture_weights"]
        assert [max(w, key=w.get) for w in weights] == chosen[name]
        for layer in weights:  # the search moved the architecture weights well away from uniform
            assert max(layer.values()) > 1 / len(layer) + 0.1, layer
        assert [layer["choice"] for layer in candidate.mechanism["layers"]] == chosen[name]
        assert spent.macs > 0  # the super-network's search trains through the one trainer
        if name == "repeat":
            assert candidate.graph.layer_nodes(1) == {0: "t0/L0", 1: "t0/L1"}  # the old path, shared
    assert chosen["repeat"] == ["reuse:t0", "reuse:t0"]
    assert chosen["unrelated"][0] == "new"


def test_structures_reuse_old_nodes_or_nodes_that_share_their_weights():
    method = LearnToGrow(tiny_space("learn-to-grow", options={"adapter_hidden": 3}))
    torch.manual_seed(0)
    ctx0 = _ctx(method, _task(0, seed=1, signal=slice(0, 4)), ModuleGraph((FEATURES,)))
    committed = method.commit(method.build({}, ctx0).graph, ctx0, None)
    ctx1 = _ctx(method, _task(1, seed=2, signal=slice(0, 4)), committed)

    # reuse below: the adapted layer's frozen base is the old node itself, on the input it always read
    adapted, parts = method.grow(ctx1, ["reuse:t0", "adapt:t0"])
    join = adapted.node("t1/L1")
    assert join.inputs == ("t0/L1", "t1/L1.adapter") and join.merge == "sum"
    assert adapted.node("t1/L1.adapter").inputs == ("t0/L0",)
    assert parts == {"1": "t1/L1.adapter", "head": "t1/head"}
    assert adapted.layer_nodes(1) == {0: "t0/L0", 1: "t1/L1"}

    # a new layer below: the reused layer is a node sharing the old one's weights, reading the new layer
    shared, _ = method.grow(ctx1, ["new", "reuse:t0"])
    node, source = shared.node("t1/L1.reuse"), committed.node("t0/L1")
    assert node.frozen and node.inputs == ("t1/L0",) and node.spec == source.spec
    assert node.shares == "t0/L1" and node.n_parameters == 0  # no second copy of the weights

    # reusing task 1's adapted layer on a new input shares its nodes, and computes the same function
    task1 = method.commit(adapted, ctx1, None)
    ctx2 = _ctx(method, _task(2, seed=3, signal=slice(0, 4)), task1)
    assert method.choices(ctx2, 1) == ["reuse:t0", "reuse:t1", "adapt:t0", "adapt:t1", "new"]
    assert method.choices(ctx2, 0) == ["reuse:t0", "adapt:t0", "new"]  # task 1 reused task 0's layer 0
    grown, _ = method.grow(ctx2, ["new", "reuse:t1"])
    reused = sorted(n for n in grown.view(2) if ".reuse" in n)
    assert reused == ["t2/L1.reuse", "t2/L1.reuse.0", "t2/L1.reuse.1"]
    assert all(grown.node(n).frozen and grown.node(n).owner == 2 for n in reused)
    assert {grown.node(n).shares for n in reused} == {"t0/L1", "t1/L1.adapter", None}  # None: the sum join
    x = torch.randn(5, FEATURES)
    below = compile_view(grown, 2, output="t2/L0").module(x)
    layer, adapter = (_module(task1, n) for n in ("t0/L1", "t1/L1.adapter"))
    reference = layer(below) + adapter(below)  # task 1's layer: the old layer plus its adapter, summed
    torch.testing.assert_close(compile_view(grown, 2, output="t2/L1.reuse").module(x), reference)


def _module(graph: ModuleGraph, node_id: str) -> torch.nn.Module:
    module = graph.node(node_id).spec.build()
    module.load_state_dict(graph.node(node_id).weights)
    return module


@pytest.mark.parametrize("strategy", ["darts", "categorical"])
def test_learn_to_grow_runs_the_stream_and_never_changes_old_tasks(run_tiny, digits_stream, strategy):
    result = run_tiny(
        "learn-to-grow", options={"strategy": strategy, "search_epochs": 1}, search={"n_trials": 2}
    )
    run = RunFolder.open(result.path)
    final, _ = run.load_task(4)
    for task in range(4):
        at_commit, _ = run.load_task(task)
        x = digits_stream.tasks[task].test.x
        assert torch.equal(compile_view(final, task).module(x), compile_view(at_commit, task).module(x))
    storage = run.storage("journal")
    for record in result.records:
        task = record.task
        structure = record.decisions["structure"]
        assert record.decisions["strategy"] == strategy and len(structure) == 2
        assert {choice.partition(":")[0] for choice in structure} <= {"reuse", "adapt", "new"}
        trials = optuna.load_study(study_name=f"task-{task}", storage=storage).get_trials()
        assert len(trials) == (1 if task == 0 else 2)
        if task == 0:
            assert structure == ["new", "new"]
        elif strategy == "categorical":
            assert all(set(t.params) == {"layer0", "layer1"} for t in trials)
        else:
            assert "architecture_weights" in record.decisions and all(not t.params for t in trials)
    assert result.metrics["metrics"]["forgetting"] == 0.0
