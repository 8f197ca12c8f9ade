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
from growsearch.methods import _auto_grow_moves as moves
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
    frozen = moves.frozen_paths(ctx.committed, ctx.task_id)
    open_moves = [
        m for m in moves.MOVES if m not in moves.SOURCED or any(moves.eligible(m, ctx, s) for s in frozen)
    ]
    move = data.draw(st.sampled_from(open_moves), label=f"task {ctx.task_id}'s move")
    decisions: dict = {"move": move}
    if move in moves.SOURCED:
        sources = [s for s in frozen if moves.eligible(move, ctx, s)]
        decisions[f"{move}_source"] = data.draw(st.sampled_from(sources), label="source")
    depth = len(ctx.specs)
    if move in ("reuse_below", "reuse_above"):
        decisions[f"{move}_depth"] = data.draw(st.integers(1, depth), label="depth")
    if move == "reuse_above":
        decisions["reuse_above_head"] = data.draw(st.booleans(), label="share head")
    if move == "column" and frozen:
        decisions["column_laterals"] = data.draw(st.booleans(), label="laterals")
    if move == "widen":
        decisions["widen_units"] = data.draw(st.integers(1, 6), label="units")
    if move == "backbone":
        decisions["prune_fraction"] = data.draw(st.floats(0.3, 0.9), label="prune fraction")
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
    assert records[0].mechanism["move"] in ("column", "backbone")
    for record in records[1:]:
        mechanism = record.mechanism
        assert mechanism["move"] == record.decisions["move"] and "parameters" in mechanism
        if mechanism["move"] in moves.SOURCED:
            assert mechanism["source"] == record.decisions[f"{mechanism['move']}_source"] < record.task
        alternatives = mechanism["alternatives"]
        assert len(alternatives) >= 5  # every open move was tried: its default was enqueued
        chosen = alternatives[mechanism["move"]]
        assert chosen["val_accuracy"] >= record.val_accuracy - 1e-12
        assert set(mechanism["prior_scores"]) <= {str(j) for j in range(record.task)}
    assert auto_grow_run.metrics["metrics"]["forgetting"] == 0.0
    assert_old_tasks_unchanged(auto_grow_run.path, digits_stream)


def test_the_first_trials_are_each_moves_default_from_the_priors_best_source(auto_grow_run):
    storage = RunFolder.open(auto_grow_run.path).storage()
    study = optuna.load_study(study_name="task-2", storage=storage)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    best = max(auto_grow_run.records[2].mechanism["prior_scores"].items(), key=lambda kv: (kv[1], int(kv[0])))
    first = [t.params for t in trials[:7]]
    assert [p["move"] for p in first[:3]] == ["reuse_below", "reuse_below", "reuse_above"]
    assert first[0]["reuse_below_depth"] == 2 and first[1]["reuse_below_depth"] == 1
    assert all(p.get(f"{p['move']}_source", int(best[0])) == int(best[0]) for p in first)
    assert {p["move"] for p in first} >= {"column", "widen", "backbone", "mask"}


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
