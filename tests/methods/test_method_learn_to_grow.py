"""Learn to Grow (Li et al. 2019): the DARTS search over reuse / adapt / new, and the categorical space."""

import optuna
import pytest
import torch

from growsearch.data.task import Split, Task
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.base import TaskContext
from growsearch.methods.learn_to_grow import LearnToGrow, _LayerFunction
from growsearch.search.run_folder import RunFolder
from growsearch.search.training import evaluate, train_candidate

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
    return TaskContext(task.task_id, task, committed, specs, ({},) * task.task_id, seed=0)


def _learn_first_task(method, task: Task) -> ModuleGraph:
    ctx = _ctx(method, task, ModuleGraph((FEATURES,)))
    graph = method.candidate(optuna.trial.FixedTrial({}), ctx)
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
        trial = optuna.trial.FixedTrial({})
        grown = method.candidate(trial, _ctx(method, task, committed))
        chosen[name] = trial.user_attrs["structure"]
        weights = trial.user_attrs["architecture_weights"]
        assert [max(w, key=w.get) for w in weights] == chosen[name]
        assert trial.user_attrs["search_macs"] > 0
        if name == "repeat":
            assert grown.layer_nodes(1) == {0: "t0/L0", 1: "t0/L1"}  # the old path, shared
    assert chosen["repeat"] == ["reuse", "reuse"]
    assert chosen["unrelated"][0] == "new"


def test_structures_share_old_nodes_or_use_frozen_copies():
    method = LearnToGrow(tiny_space("learn-to-grow", options={"adapter_hidden": 3}))
    torch.manual_seed(0)
    ctx0 = _ctx(method, _task(0, seed=1, signal=slice(0, 4)), ModuleGraph((FEATURES,)))
    committed = method.commit(method.candidate(optuna.trial.FixedTrial({}), ctx0), ctx0, None)
    ctx1 = _ctx(method, _task(1, seed=2, signal=slice(0, 4)), committed)

    # reuse below: the adapted layer's frozen base is the old node itself, on the input it always read
    adapted, parts = method.grow(ctx1, 0, ["reuse", "adapt"])
    join = adapted.node("t1/L1")
    assert join.inputs == ("t0/L1", "t1/L1.adapter") and join.merge == "sum"
    assert adapted.node("t1/L1.adapter").inputs == ("t0/L0",)
    assert parts == {"1": "t1/L1.adapter", "head": "t1/head"}
    assert adapted.layer_nodes(1) == {0: "t0/L0", 1: "t1/L1"}

    # a new layer below: the reused layer is a frozen copy reading the new layer
    copied, _ = method.grow(ctx1, 0, ["new", "reuse"])
    copy, source = copied.node("t1/L1.reuse"), committed.node("t0/L1")
    assert copy.frozen and copy.inputs == ("t1/L0",) and copy.spec == source.spec
    assert all(torch.equal(copy.weights[k], v) for k, v in source.weights.items())

    # reusing task 1's adapted layer on a new input copies its three nodes, and computes the same function
    task1 = method.commit(adapted, ctx1, None)
    ctx2 = _ctx(method, _task(2, seed=3, signal=slice(0, 4)), task1)
    grown, _ = method.grow(ctx2, 1, ["new", "reuse"])
    copies = sorted(n for n in grown.view(2) if ".reuse" in n)
    assert copies == ["t2/L1.reuse", "t2/L1.reuse.0", "t2/L1.reuse.1"]
    assert all(grown.node(n).frozen and grown.node(n).owner == 2 for n in copies)
    x = torch.randn(5, FEATURES)
    grown.set_head(98, "t2/L0")
    grown.set_head(99, "t2/L1.reuse")
    below = compile_view(grown, 98).module(x)
    reference = _LayerFunction(task1, "t0/L0", "t1/L1")(below)
    torch.testing.assert_close(compile_view(grown, 99).module(x), reference)


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
        task = record["task"]
        structure = record["decisions"]["structure"]
        assert record["decisions"]["strategy"] == strategy and len(structure) == 2
        assert set(structure) <= {"reuse", "adapt", "new"}
        trials = optuna.load_study(study_name=f"task-{task}", storage=storage).get_trials()
        assert len(trials) == (1 if task == 0 else 2)
        if task == 0:
            assert structure == ["new", "new"]
        elif strategy == "categorical":
            assert all(set(t.params) == {"layer0", "layer1"} for t in trials)
        else:
            assert "architecture_weights" in record["decisions"] and all(not t.params for t in trials)
    assert result.metrics["metrics"]["forgetting"] == 0.0
