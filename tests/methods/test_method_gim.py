"""GIM: a frozen LSTM module per task whose layers read the older modules' states step by step; old tasks'
outputs never change; in class-IL the task-inference autoencoders infer the task; a killed run resumes bit
for bit; the module's hidden size may be searched, candidates of one size training as one pack; a network
or benchmark that is not recurrent is refused by name."""

from __future__ import annotations

import os

import optuna
import pytest
import torch
from optuna.trial import TrialState

from growsearch.data.benchmarks import load_benchmark
from growsearch.errors import ConfigError
from growsearch.graph.specs import LSTM
from growsearch.runner import RunOptions, resume_run, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import pack_of

from tiny_runs import (
    assert_old_tasks_unchanged,
    assert_same_commits,
    kill,
    start_cli_run,
    tiny_space,
    wait_for,
)

MODULE = {"layers": [{"lstm": 8}]}
TRAINING = {"lr": 0.02, "epochs": 3}


def tiny_gim(**sections):
    return tiny_space("gim", network=MODULE, training=TRAINING, **sections)


def sequences(**extra) -> RunOptions:
    return RunOptions(benchmark="seq-split-digits", max_per_task=80, seed=0, **extra)


@pytest.fixture(scope="module")
def gim_class_il(tmp_path_factory, one_thread):
    return start_run(tiny_gim(), sequences(scenario="class-il"), tmp_path_factory.mktemp("gim") / "run")


def test_old_tasks_outputs_are_bit_identical_after_later_modules_train(gim_class_il):
    assert_old_tasks_unchanged(gim_class_il.path, load_benchmark("seq-split-digits", max_per_task=80))
    run = RunFolder.open(gim_class_il.path)
    first, _ = run.load_task(0)
    final, _ = run.load_task(4)
    for node_id, node in first.nodes():
        assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items())
    assert all(node.frozen for _, node in final.nodes())


def test_each_module_reads_every_older_modules_hidden_states(gim_class_il):
    final, _ = RunFolder.open(gim_class_il.path).load_task(4)
    assert final.node("t4/L0.seq").inputs == ("input", "t0/L0.seq", "t1/L0.seq", "t2/L0.seq", "t3/L0.seq")
    assert final.node("t4/L0.seq").spec == LSTM(8 + 4 * 8, 8, return_sequence=True)
    mechanisms = [r.mechanism for r in gim_class_il.records]
    assert [m["lateral_parameters"] for m in mechanisms] == [4 * 8 * 8 * t for t in range(5)]


def test_in_class_il_the_autoencoders_infer_the_task(gim_class_il):
    for record in gim_class_il.records:
        t = record.task
        assert record.task_inference == "expert-gate"
        class_il_row, task_il_row = record.accuracy_row, record.task_il_accuracy_row
        routed = record.task_inference_row
        for j in range(t + 1):  # right only when routed to its own task and right there
            assert 0 <= class_il_row[j] <= min(task_il_row[j], routed[j]) + 1e-9
    final = gim_class_il.records[-1]
    assert sum(final.task_il_accuracy_row) / 5 > 0.85  # the modules learn their tasks
    assert sum(final.task_inference_row) / 5 > 0.6  # the autoencoders route well above chance (0.2)


def test_kill_minus_9_and_resume_commits_what_an_uninterrupted_run_commits(gim_class_il, tmp_path):
    run = tmp_path / "runs" / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = start_cli_run(tiny_gim(), run, "--scenario", "class-il", "--max-per-task", "80", env=env)
    wait_for(lambda: (run / "tasks" / "1").is_dir(), process)  # kill in whatever follows task 1's commit
    kill(process)

    resumed = resume_run(run)
    assert_same_commits(resumed, gim_class_il, 4)
    assert [r.task_inference_row for r in resumed.records] == [
        r.task_inference_row for r in gim_class_il.records
    ]


def test_the_modules_hidden_size_may_be_searched_per_task(tmp_path, one_thread):
    space = tiny_gim(options={"module_sizes": [4, 8]}, search={"n_trials": 2})
    result = start_run(space, sequences(n_tasks=2), tmp_path / "run")
    graph, _ = RunFolder.open(result.path).load_task(1)
    sizes = [record.decisions["hidden_size"] for record in result.records]
    assert all(size in (4, 8) for size in sizes)
    assert [graph.node(f"t{t}/L0.seq").spec.hidden_size for t in (0, 1)] == sizes
    assert graph.node("t1/L0.seq").spec.input_size == 8 + sizes[0]
    assert result.records[1].mechanism["lateral_parameters"] == 4 * sizes[1] * sizes[0]


def test_candidates_of_one_module_size_train_together_as_a_pack(tmp_path, one_thread):
    space = tiny_gim(options={"module_sizes": [8]}, search={"n_trials": 2, "pack": 2})
    result = start_run(space, sequences(n_tasks=2), tmp_path / "run")
    storage = RunFolder.open(result.path).storage("journal")
    trials = optuna.load_study(study_name="task-1", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [pack_of(t) for t in trials] == [0, 0] and trials[0].user_attrs.get("pack_layout")  # vmapped


def test_a_network_or_benchmark_that_is_not_recurrent_is_refused_by_name():
    with pytest.raises(
        ConfigError,
        match=r"network: method gim does not grow mlp backbones \(its modules are recurrent.*it takes lstm",
    ):
        start_run(tiny_space("gim"), sequences(), None)
    with pytest.raises(ConfigError, match=r"needs a \(steps, features\) sequence input.*seq-split-digits"):
        start_run(tiny_gim(), RunOptions(benchmark="split-digits", max_per_task=80), None)
    with pytest.raises(ConfigError, match="module_sizes: expected distinct hidden sizes"):
        start_run(tiny_gim(options={"module_sizes": [4, 4]}), sequences(), None)
