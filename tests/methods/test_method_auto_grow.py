"""auto-grow: the search chooses each task's growth move. Any sequence of moves keeps every earlier task's
outputs bit-identical (drawn by hypothesis over six tasks, dense and conv); a run records the move, its
parameters, its source and the best candidate of every other move; its first trials come from the prior."""

from __future__ import annotations

import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from growsearch.data.benchmarks import load_benchmark
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import node_data
from growsearch.methods import _auto_grow_moves as moves
from growsearch.methods.algorithms.weight_masks import matrix_parameters
from growsearch.methods.auto_grow import AutoGrow
from growsearch.methods.base import TaskContext
from growsearch.search.commit import Retrainer
from growsearch.store.run_folder import RunFolder
from growsearch.train.candidate import train_candidate
from growsearch.train.extension import PLAIN

from tiny_runs import assert_old_tasks_unchanged, tiny_space

CONV = {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 12}]}
DENSE = {"layers": [{"linear": 12}, {"linear": 12}]}


@pytest.fixture(scope="module")
def six_tasks():
    return load_benchmark("permuted-digits", n_tasks=6, max_per_task=40, seed=0)


def _decisions(data: st.DataObject, method: AutoGrow, ctx: TaskContext) -> dict:
    """A move open to the task and its parameters, drawn directly (no prior, no search)."""
    earlier = moves.source_paths(ctx.committed, ctx.task_id)
    open_moves = [
        m for m in moves.MOVES if m not in moves.SOURCED or any(moves.eligible(m, ctx, s) for s in earlier)
    ]
    move = data.draw(st.sampled_from(open_moves), label=f"task {ctx.task_id}'s move")
    decisions: dict = {"move": move}
    if move in moves.SOURCED:
        sources = [s for s in earlier if moves.eligible(move, ctx, s)]
        decisions[f"{move}_source"] = data.draw(st.sampled_from(sources), label="source")
    depth = len(ctx.specs)
    if move in ("reuse_below", "reuse_above"):
        decisions[f"{move}_depth"] = data.draw(st.integers(1, depth), label="depth")
    if move == "reuse_above":
        decisions["reuse_above_head"] = data.draw(st.booleans(), label="share head")
    if move == "column" and moves.frozen_paths(ctx.committed, ctx.task_id):
        decisions["column_laterals"] = data.draw(st.booleans(), label="laterals")
    if move == "widen":
        decisions["widen_units"] = data.draw(st.integers(1, 6), label="units")
    if move == "backbone":
        decisions["prune_fraction"] = data.draw(st.floats(0.3, 0.9), label="prune fraction")
    if move == "compact":
        decisions["compact_sparsity"] = data.draw(st.floats(*method.compact_range(ctx)), label="sparsity")
    return decisions


def _outputs(graph: ModuleGraph, task: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return compile_view(graph, task).module.eval()(x)


@pytest.mark.parametrize("network", [DENSE, CONV], ids=["dense", "conv"])
# derandomized (CI sees the same draws every run), no example database written into the checkout
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_sequence_of_moves_keeps_every_earlier_task_bit_identical(network, data, six_tasks, one_thread):
    method = AutoGrow(
        tiny_space("auto-grow", network=network, training={"epochs": 1}, options={"retrain_epochs": 1})
    )
    specs = method.specs_for(six_tasks.input_shape)
    graph, outputs, chosen = ModuleGraph(six_tasks.input_shape), {}, []
    probe = torch.cat([task.test.x[:8] for task in six_tasks.tasks])
    for t, task in enumerate(six_tasks.tasks):
        ctx = TaskContext(t, task, graph, specs, (), seed=t, n_tasks=len(six_tasks))
        decisions = _decisions(data, method, ctx)
        chosen.append(decisions["move"])
        torch.manual_seed(t)
        candidate = method.build(decisions, ctx)
        config = method.space.training
        trained = train_candidate(
            candidate.graph, t, task.train, task.val, config, seed=t, training=candidate.training or PLAIN
        ).graph
        commit_ctx = TaskContext(
            t, task, graph, specs, (), seed=t, n_tasks=len(six_tasks), decisions=decisions
        )
        graph = method.commit(trained, commit_ctx, Retrainer(method, commit_ctx, seed=t))
        outputs[t] = _outputs(graph, t, probe)
        for earlier in range(t):
            assert torch.equal(_outputs(graph, earlier, probe), outputs[earlier]), (chosen, earlier)


@pytest.fixture(scope="module")
def auto_grow_run(tmp_path_factory, one_thread):
    from growsearch.runner import start_run

    from tiny_runs import tiny_options

    space = tiny_space("auto-grow", search={"n_trials": 9})
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("auto-grow") / "run")


def test_a_run_records_each_tasks_move_its_parameters_and_the_moves_passed_over(auto_grow_run, digits_stream):
    records = auto_grow_run.records
    assert records[0].mechanism["move"] == "compact"  # the first task starts the compacting backbone
    for record in records[1:]:
        mechanism = record.mechanism
        assert mechanism["move"] == record.decisions["move"] and "parameters" in mechanism
        if mechanism["move"] in moves.SOURCED:
            assert mechanism["source"] == record.decisions[f"{mechanism['move']}_source"] < record.task
        alternatives = mechanism["alternatives"]
        # every open move was tried (its default was enqueued): these four are open from the second task on
        assert set(alternatives) >= {"reuse_below", "column", "backbone", "compact"}
        chosen = alternatives[mechanism["move"]]
        assert chosen["val_accuracy"] >= record.val_accuracy - 1e-12
        assert set(mechanism["prior_scores"]) <= {str(j) for j in range(record.task)}
    assert auto_grow_run.metrics["metrics"]["forgetting"] == 0.0
    assert_old_tasks_unchanged(auto_grow_run.path, digits_stream)


def test_the_first_trials_are_each_moves_default_from_the_priors_best_source(auto_grow_run):
    storage = RunFolder.open(auto_grow_run.path).storage()
    study = optuna.load_study(study_name="task-2", storage=storage)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    record = auto_grow_run.records[2]
    best = max(record.mechanism["prior_scores"].items(), key=lambda kv: (kv[1], int(kv[0])))
    first = [t.params for t in trials if "fixed_params" in t.system_attrs]  # the enqueued ones
    assert [p["move"] for p in first[:2]] == ["reuse_below", "reuse_below"]
    assert first[0]["reuse_below_depth"] == 2 and first[1]["reuse_below_depth"] == 1
    assert first[0]["reuse_below_source"] == int(best[0])  # every earlier task is reuse_below's source
    assert {p["move"] for p in first} == set(record.mechanism["alternatives"])  # each open move once at least


def test_reuse_above_shares_the_sources_head_and_trains_only_new_lower_layers(digits_stream):
    method = AutoGrow(tiny_space("auto-grow"))
    specs = method.specs_for(digits_stream.input_shape)
    base = ModuleGraph(digits_stream.input_shape)
    task0 = TaskContext(0, digits_stream.tasks[0], base, specs, (), seed=0)
    graph = method.commit(method.build({"move": "column"}, task0).graph, task0, None)
    task1 = TaskContext(1, digits_stream.tasks[1], graph, specs, (), seed=1)
    decisions = {
        "move": "reuse_above",
        "reuse_above_source": 0,
        "reuse_above_depth": 1,
        "reuse_above_head": True,
    }
    grown = method.build(decisions, task1).graph
    trainable = [n for n in grown.view(1) if not grown.node(n).frozen]
    assert trainable == ["t1/L0"]  # one new lower layer; the upper layer and the head are task 0's
    assert grown.node(grown.head(1)).shares == graph.head(0)


def test_inspect_and_the_report_show_each_tasks_move(auto_grow_run):
    from growsearch.report.graph.picture import graph_picture, move_colour
    from growsearch.report.html_report import _tasks_html
    from growsearch.report.inspect import recorded_moves, render_inspect

    run = RunFolder.open(auto_grow_run.path)
    moves_made = recorded_moves(run.records())
    assert moves_made == {r.task: r.mechanism["move"] for r in auto_grow_run.records}
    graph, _ = run.load_task(4)
    text = render_inspect(graph, 4, "text", moves=moves_made)
    assert "task 4: " in text and f"; {moves_made[4]}" in text
    picture = graph_picture(graph, 4, moves=moves_made)
    for node in picture.nodes:  # a node added by a task is coloured by that task's move
        if node.owner >= 0:
            assert node.move == moves_made[node.owner] and node.colour == move_colour(node.move)
    assert ">move</th>" in _tasks_html(run.records())


def _commit_task(method: AutoGrow, ctx: TaskContext, decisions: dict) -> ModuleGraph:
    """Build, train and commit one task's candidate as the pipeline does."""
    torch.manual_seed(ctx.task_id)
    candidate = method.build(decisions, ctx)
    trained = train_candidate(
        candidate.graph,
        ctx.task_id,
        ctx.task.train,
        ctx.task.val,
        method.space.training,
        seed=ctx.task_id,
        training=candidate.training or PLAIN,
    ).graph
    commit_ctx = TaskContext(
        ctx.task_id,
        ctx.task,
        ctx.committed,
        ctx.specs,
        (),
        seed=ctx.seed,
        n_tasks=ctx.n_tasks,
        decisions=decisions,
    )
    return method.commit(trained, commit_ctx, Retrainer(method, commit_ctx, seed=ctx.task_id))


def test_compact_prunes_while_it_trains_claims_what_it_kept_and_a_backbone_task_is_reused_through_masks(
    digits_stream, one_thread
):
    method = AutoGrow(tiny_space("auto-grow", training={"epochs": 3}))
    specs = method.specs_for(digits_stream.input_shape)
    tasks = digits_stream.tasks
    ctx0 = TaskContext(0, tasks[0], ModuleGraph(digits_stream.input_shape), specs, (), seed=0, n_tasks=5)
    assert method.compact_range(ctx0) == (pytest.approx(0.8), 0.95)  # CPG's must-prune ratio: 1 - 1/5
    graph = _commit_task(method, ctx0, {"move": "compact", "compact_sparsity": 0.8})
    # task 0 owns the fifth of every weight matrix it kept; the rest is free (and zero) for later tasks
    for node_id in moves.backbone_nodes(len(specs)):
        (name,) = matrix_parameters(graph, node_id)
        owners, weight = graph.node(node_id).owners[name], graph.node(node_id).weights[name]
        assert float((owners == 0).float().mean()) == pytest.approx(0.2, abs=0.01)
        assert torch.all(weight[owners == -1] == 0) and torch.all(weight[owners == 0] != 0)
    capacity = method.record(graph, ctx0, optuna.create_study())["capacity"]
    assert [layer["owned"] for layer in capacity] == [pytest.approx(0.2, abs=0.01)] * 2

    # task 1 compacts too: it trains free weights and picks among task 0's
    ctx1 = TaskContext(1, tasks[1], graph, specs, (), seed=1, n_tasks=5)
    graph = _commit_task(method, ctx1, {"move": "compact", "compact_sparsity": 0.9})
    first = moves.backbone_nodes(len(specs))[0]
    owners = graph.node(first).owners[matrix_parameters(graph, first)[0]]
    assert float((owners == 1).float().mean()) == pytest.approx(0.08, abs=0.01)  # a tenth of the free 0.8
    capacity = method.record(graph, ctx1, optuna.create_study())["capacity"]
    assert 0 < capacity[0]["picked"] < 1  # its mask picks some of task 0's weights, not all
    # task 2 reuses task 0's backbone path whole with a new head: its features are task 0's exactly, though
    # task 1's weights sit in the same layers, and no backbone weight trains
    ctx2 = TaskContext(2, tasks[2], graph, specs, (), seed=2, n_tasks=5)
    assert moves.eligible("reuse_below", ctx2, 0) and not moves.eligible("mask", ctx2, 0)
    grown = _commit_task(
        method, ctx2, {"move": "reuse_below", "reuse_below_source": 0, "reuse_below_depth": 2}
    )
    last = moves.backbone_nodes(len(specs))[-1]
    probe = tasks[2].test.x[:16]
    with torch.no_grad():
        reused = compile_view(grown, 2, output=last).module.eval()(probe)
        source = compile_view(grown, 0, output=last).module.eval()(probe)
        with_task_1 = compile_view(grown, 1, output=last).module.eval()(probe)
    assert torch.equal(reused, source) and not torch.equal(reused, with_task_1)
    for node_id in moves.backbone_nodes(len(specs)):
        for name, value in graph.node(node_id).weights.items():
            assert torch.equal(grown.node(node_id).weights[name], value)
    # new lower layers under task 0's upper backbone layer and head: given task 0's own lower layer (as
    # task 0 sees it), the new path computes task 0's outputs exactly
    decisions = {
        "move": "reuse_above",
        "reuse_above_source": 0,
        "reuse_above_depth": 1,
        "reuse_above_head": True,
    }
    above = method.build(decisions, ctx2)
    trainable = [n for n in above.graph.view(2) if not above.graph.node(n).frozen]
    assert trainable == ["t2/L0"]
    lower = compile_view(graph, 0, output=moves.backbone_nodes(len(specs))[0]).node_modules
    seen = lower[moves.backbone_nodes(len(specs))[0]].state_dict()
    copied = node_data.with_weights(above.graph, {"t2/L0": {k: v.clone() for k, v in seen.items()}})
    with torch.no_grad():
        assert torch.equal(
            compile_view(copied, 2).module.eval()(probe), compile_view(graph, 0).module.eval()(probe)
        )
