"""The ray backend on a real two-node Ray cluster on 127.0.0.1 (no mocks): trials spread over both
nodes, survive a lost node, and a SIGKILLed driver resumes; results equal the optuna backend's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
import torch

from growsearch.backends import RayOptions
from growsearch.errors import ConfigError
from growsearch.runner import RunOptions, resume_run, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import halving_stop, worker_node

from ray_cluster import start_cluster
from tiny_runs import assert_same_commits, kill, start_cli_run, tiny_space, wait_for

COMPLETE = optuna.trial.TrialState.COMPLETE
# a Ray trial trains one candidate; the optuna reference does too (`pack: 1`), so the two agree bit for bit
SPACE = tiny_space("mntdp-d", training={"epochs": 3}, search={"pack": 1})


def options(**extra) -> RunOptions:
    return RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=60, seed=0, **extra)


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(workers=1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def optuna_reference(tmp_path_factory):
    """The same search on the optuna backend, with one BLAS thread as Ray gives a 1-CPU worker, so the
    floating-point sums happen in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return start_run(SPACE, options(), tmp_path_factory.mktemp("reference") / "optuna")
    finally:
        torch.set_num_threads(threads)


def trials_of(run: Path, task: int) -> list[optuna.trial.FrozenTrial]:
    storage = RunFolder.open(run).storage()
    return optuna.load_study(study_name=f"task-{task}", storage=storage).get_trials()


def driver(cluster, run: Path) -> subprocess.Popen:
    options = [
        "--backend",
        "ray",
        "--address",
        cluster.address,
        "--shared-fs",
        "--tasks",
        "2",
        "--max-per-task",
        "60",
    ]
    return start_cli_run(SPACE, run, *options, env=cluster.env)


def test_a_search_spreads_over_both_nodes_and_commits_what_the_optuna_backend_commits(cluster, tmp_path):
    """auto-grow: the driver decides the moves (its prior runs there), workers build and train them."""
    # a fresh worker per trial, so the second node's worker takes trials even while these tiny trials
    # finish faster than a worker process starts (by default a finished trial's worker takes the next)
    space = tiny_space(
        "auto-grow",
        training={"epochs": 3},
        backend={"reuse_workers": False},
        # trials run at once, so halving would judge them by timing: the papers' full fidelity here
        search={"pack": 1, "n_trials": 3, "fidelity": "full"},
    )
    reference = _one_thread_run(space, options(), tmp_path / "optuna")
    result = start_run(
        space, options(backend="ray"), tmp_path / "ray", ray=RayOptions(cluster.address, shared_fs=True)
    )
    trials = trials_of(result.path, 0) + trials_of(result.path, 1)
    assert [t.state for t in trials] == [COMPLETE] * 4  # the compacting backbone, then three moves
    assert len({worker_node(t) for t in trials}) == 2, "every trial ran on the same node"
    # same seeds and budget: the same decisions, accuracies and committed graph as the optuna backend
    assert_same_commits(result, reference, 1)


def _one_thread_run(space, run_options, path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Ray gives a 1-CPU worker: the same floating-point sums
    try:
        return start_run(space, run_options, path)
    finally:
        torch.set_num_threads(threads)


def test_a_ray_trial_carries_a_pack_and_commits_what_the_optuna_backend_commits(cluster, tmp_path, capfd):
    # one pack at a time, so each pack is sampled after the previous one taught the controller, as in
    # the in-process search
    space = tiny_space(
        "rcl", search={"n_trials": 6, "pack": 3}, training={"epochs": 2}, backend={"max_concurrent_trials": 1}
    )
    reference = _one_thread_run(space, options(), tmp_path / "optuna")
    result = start_run(
        space, options(backend="ray"), tmp_path / "ray", ray=RayOptions(cluster.address, shared_fs=True)
    )
    trials = sorted(trials_of(result.path, 1), key=lambda t: t.number)
    assert [t.state for t in trials] == [COMPLETE] * 6
    assert [t.user_attrs["pack"] for t in trials] == [0, 0, 0, 3, 3, 3]
    assert len({worker_node(t) for t in trials[:3]}) == 1  # a pack trains on one worker
    assert_same_commits(result, reference, 1)
    printed = "".join(capfd.readouterr())  # Tune's own console output stays off: growsearch prints its own
    assert "Number of trials" not in printed and "tensorboard --logdir" not in printed, printed[-2000:]
    assert "Wrote the latest version" not in printed and "Token authentication is enabled" not in printed


def test_halving_on_ray_stops_the_trials_the_optuna_backend_stops(cluster, tmp_path):
    """A worker judges its trial against the rungs the study held when the trial started: one trial at a
    time, the same ones as in process."""
    space = tiny_space(
        "mntdp-d",
        training={"epochs": 3},
        search={"pack": 1, "fidelity": "halving"},
        backend={"max_concurrent_trials": 1},
    )
    reference = _one_thread_run(space, options(), tmp_path / "optuna")
    result = start_run(
        space, options(backend="ray"), tmp_path / "ray", ray=RayOptions(cluster.address, shared_fs=True)
    )
    on_ray, in_process = trials_of(result.path, 1), trials_of(reference.path, 1)
    assert optuna.trial.TrialState.PRUNED in [t.state for t in on_ray]
    assert [t.state for t in on_ray] == [t.state for t in in_process]
    assert [halving_stop(t) for t in on_ray] == [halving_stop(t) for t in in_process]
    assert_same_commits(result, reference, 1)


def test_a_multi_node_cluster_needs_a_shared_run_folder(cluster, tmp_path):
    with pytest.raises(ConfigError, match="2 nodes.*nothing is synced to the head.*--shared-fs"):
        start_run(SPACE, options(backend="ray"), tmp_path / "ray", ray=RayOptions(cluster.address))


def test_sigkill_of_the_driver_then_resume_redoes_no_finished_trial(cluster, optuna_reference, tmp_path):
    run = tmp_path / "killed"
    process = driver(cluster, run)
    wait_for(
        lambda: (run / "trials" / "1").is_dir() and any((run / "trials" / "1").glob("*/checksums.json")),
        process,
    )
    wait_for(lambda: any(t.state == COMPLETE for t in trials_of(run, 1)), process)
    kill(process)
    finished = {t.number: (t.value, t.datetime_complete) for t in trials_of(run, 1) if t.state == COMPLETE}
    assert 0 < len(finished) < 3

    resumed = resume_run(run, address=cluster.address)

    after = trials_of(run, 1)
    for number, (value, completed_at) in finished.items():
        assert (after[number].value, after[number].datetime_complete) == (value, completed_at)
    complete = [t for t in after if t.state == COMPLETE]
    assert sorted(t.params["reuse_depth"] for t in complete) == [0, 1, 2]  # each candidate once
    assert resumed.metrics["accuracy"] == optuna_reference.metrics["accuracy"]
    assert resumed.metrics["decisions"] == optuna_reference.metrics["decisions"]


def test_losing_the_worker_node_mid_study_still_completes_the_budget(cluster, tmp_path):
    """Last in this module: it leaves the cluster with its head node only."""
    run = tmp_path / "lost-node"
    process = driver(cluster, run)
    wait_for(
        lambda: (
            (run / "config.yaml").exists()
            and any(t.state == optuna.trial.TrialState.RUNNING for t in _safe_trials(run, 1))
        ),
        process,
    )
    cluster.kill_worker_raylet()
    assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    complete = [t for t in trials_of(run, 1) if t.state == COMPLETE]
    assert sorted(t.params["reuse_depth"] for t in complete) == [0, 1, 2]


def _safe_trials(run: Path, task: int) -> list[optuna.trial.FrozenTrial]:
    try:
        return trials_of(run, task)
    except KeyError:  # the task's study does not exist yet
        return []
