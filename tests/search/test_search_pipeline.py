import optuna
import pytest

from growsearch.errors import RunFolderError, ScenarioError, TrainingError
from growsearch.runner import RunOptions, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import read_record, spent_macs

from tiny_runs import tiny_options, tiny_space


def test_a_nan_loss_is_a_clear_error_and_written_tasks_are_kept(tmp_path):
    space = tiny_space("pnn", training={"lr": 1e30, "momentum": 0.0})
    with pytest.raises(
        TrainingError,
        match=r"task 0: no trial completed.*first error: task 0, trial 0: the training loss became (nan|inf) "
        r"at epoch 1, step \d+; expected a finite loss \(try a lower training.lr\)",
    ):
        start_run(space, tiny_options(), tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_an_unsupported_scenario_is_refused_before_anything_is_written(tmp_path):
    options = RunOptions(benchmark="split-digits", scenario="task-il", max_per_task=40)
    with pytest.raises(ScenarioError, match="der supports the scenarios class-il; .* asked for task-il"):
        start_run(tiny_space("der"), options, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_existing_run_folder_is_not_overwritten(run_tiny, tmp_path):
    run_tiny("packnet", training={"epochs": 1})
    with pytest.raises(RunFolderError, match="already holds a run; resume it"):
        start_run(tiny_space("packnet"), tiny_options(), tmp_path / "run")


def test_pruned_trials_stop_early_and_count_toward_the_budget(run_tiny):
    result = run_tiny(
        "mntdp-d", training={"epochs": 4}, search={"pruner": "successive-halving", "sampler": "grid"}
    )
    storage = RunFolder.open(result.path).storage()
    states = []
    for task in range(5):
        study = optuna.load_study(study_name=f"task-{task}", storage=storage)
        states += [t.state for t in study.get_trials()]
        for trial in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
            assert len(trial.intermediate_values) < 4
    assert optuna.trial.TrialState.PRUNED in states
    assert result.metrics["tasks_committed"] == 5


def test_the_sqlite_storage_runs_the_same_search(run_tiny):
    journal = run_tiny("mntdp-d", name="journal", training={"epochs": 1})
    sqlite = run_tiny("mntdp-d", name="sqlite", training={"epochs": 1}, search={"storage": "sqlite"})
    assert (sqlite.path / "study.db").is_file() and not (sqlite.path / "study.journal").exists()
    assert (journal.path / "study.journal").is_file() and not (journal.path / "study.db").exists()
    assert journal.metrics["accuracy"] == sqlite.metrics["accuracy"]


def test_trial_attributes_record_cost(run_tiny):
    result = run_tiny("mntdp-d", training={"epochs": 1})
    storage = RunFolder.open(result.path).storage()
    trials = optuna.load_study(study_name="task-1", storage=storage).get_trials()
    by_depth = {t.params["reuse_depth"]: read_record(t) for t in trials}
    # reusing more layers adds fewer parameters and trains cheaper (frozen prefix computed once)
    assert by_depth[0].added_parameters > by_depth[1].added_parameters > by_depth[2].added_parameters
    assert by_depth[0].train_macs > by_depth[2].train_macs > 0
    assert all(len(r.curve) == 1 and r.curve[0]["train_loss"] > 0 for r in by_depth.values())
    assert all(r.train_macs >= r.pass_macs > 0 for r in result.records)  # one epoch at least


def test_a_multi_objective_search_commits_from_the_pareto_front(run_tiny):
    search = {"objectives": ["accuracy", "added_parameters"], "accuracy_tolerance": 0.0}
    result = run_tiny("mntdp-d", training={"epochs": 1}, search=search)
    storage = RunFolder.open(result.path).storage()
    for record in result.records[1:]:
        study = optuna.load_study(study_name=f"task-{record.task}", storage=storage)
        front = {t.number for t in study.best_trials}
        assert set(record.pareto_front) == front and record.chosen_trial in front
        chosen = study.trials[record.chosen_trial]
        assert chosen.values[0] == max(study.trials[n].values[0] for n in front)
    # with a tolerance of 1.0 every Pareto point qualifies: the cheapest (only a new head) is committed
    cheap = run_tiny(
        "mntdp-d", name="cheap", training={"epochs": 1}, search={**search, "accuracy_tolerance": 1.0}
    )
    assert [d["reuse_depth"] for d in cheap.metrics["decisions"][1:]] == [2, 2, 2, 2]


def test_several_objectives_refuse_a_pruner():
    from growsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="search.pruner: expected none with several objectives"):
        tiny_space("mntdp-d", search={"objectives": ["accuracy", "forward_macs"], "pruner": "median"})


def test_epsilon_scales_the_computational_efficiency_and_is_recorded(run_tiny):
    plain = run_tiny("pnn", name="plain", training={"epochs": 2})
    scaled = run_tiny("pnn", name="scaled", training={"epochs": 2}, metrics={"epsilon": 0.5})
    assert plain.metrics["epsilon"] == 1.0 and scaled.metrics["epsilon"] == 0.5
    ce = plain.metrics["metrics"]["computational_efficiency"]
    assert 0 < ce < 1  # two epochs: more than one pass's compute per task
    assert scaled.metrics["metrics"]["computational_efficiency"] == pytest.approx(0.5 * ce)


def test_pruned_and_failed_trials_count_the_compute_they_spent(run_tiny):
    result = run_tiny(
        "mntdp-d", training={"epochs": 4}, search={"pruner": "successive-halving", "sampler": "grid"}
    )
    storage = RunFolder.open(result.path).storage()
    pruned = []
    for record in result.records:
        study = optuna.load_study(study_name=f"task-{record.task}", storage=storage)
        spent = 0
        for trial in study.get_trials():
            done = read_record(trial)
            spent += done.search_macs + done.train_macs if done else spent_macs(trial)
            if trial.state == optuna.trial.TrialState.PRUNED:
                pruned.append(spent_macs(trial))
        assert record.train_macs == spent  # no retraining at commit for MNTDP-D
    assert pruned and all(macs > 0 for macs in pruned)
