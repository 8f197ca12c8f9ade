"""Successive halving over epochs (`search.fidelity: halving`): the rungs, the ranking on every objective, and
runs that stop losing trials early, alone and in packs, recording where they stopped."""

from __future__ import annotations

import csv
import math

import optuna
import pytest
from optuna.trial import TrialState

from growsearch.config.space import space_from_dict
from growsearch.errors import ConfigError
from growsearch.runner import start_run
from growsearch.search.halving import SuccessiveHalving, rung_epochs
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import halving_stop, spent_macs

from tiny_runs import tiny_options, tiny_space


def test_rungs_lie_at_min_epochs_times_powers_of_eta_below_the_epochs_trained():
    assert rung_epochs(1, 3, 5) == (1, 3)
    assert rung_epochs(2, 2, 9) == (2, 4, 8)
    assert rung_epochs(1, 3, 3) == (1,)
    assert rung_epochs(5, 3, 5) == ()  # nothing to judge: every trial trains its epochs


def test_a_single_objective_keeps_the_top_third_of_those_judged_at_a_rung():
    halving = SuccessiveHalving((1,), eta=3)
    assert halving.judge(0, 1, (0.5,)) is None  # the first trial at a rung is the top one
    assert halving.judge(1, 1, (0.4,)) is not None  # of two, only the best goes on
    assert halving.judge(2, 1, (0.6,)) is None
    assert halving.judge(3, 2, (0.0,)) is None  # not a rung: nothing judged
    reason = halving.judge(4, 1, (math.nan,))  # a NaN ranks last
    assert reason is not None and "after epoch 1" in reason
    assert halving.attrs(1) == {"halving_rung_1": [0.4], "halving_stopped_after": 1}
    assert halving.attrs(2) == {"halving_rung_1": [0.6]}


def test_several_objectives_let_a_smaller_less_accurate_candidate_go_on():
    halving = SuccessiveHalving((1,), eta=3)
    assert halving.judge(0, 1, (0.9, 1000.0)) is None
    assert halving.judge(1, 1, (0.7, 10.0)) is None  # less accurate but far smaller: on the Pareto front
    assert halving.judge(2, 1, (0.8, 2000.0)) is not None  # dominated by the first: stopped
    # a resumed search (or a Ray worker) judges against the same points
    again = SuccessiveHalving.from_snapshot(halving.snapshot())
    assert again.reached == halving.reached


def test_halving_is_checked_where_it_is_configured():
    base = tiny_space("mntdp-d").to_dict()
    for search, field in (
        ({"fidelity": "halving", "eta": 1}, "eta"),
        ({"fidelity": "halving", "min_epochs": 0}, "min_epochs"),
        ({"fidelity": "halving", "pruner": "median"}, "pruner"),
        ({"fidelity": "quarter"}, "fidelity"),
    ):
        with pytest.raises(ConfigError, match=f"search.*{field}"):
            space_from_dict({**base, "search": {**base["search"], **search}}, "<halving>")


def _trials(run, task):
    storage = RunFolder.open(run).storage()
    return optuna.load_study(study_name=f"task-{task}", storage=storage).get_trials()


@pytest.fixture(scope="module")
def halved_runs(tmp_path_factory, one_thread):
    """MNTDP-D's candidates (a single objective) with halving after 1 of 3 epochs, one at a time and in
    packs of three."""
    folder = tmp_path_factory.mktemp("halving")
    runs = {}
    for pack in (1, 3):
        space = tiny_space("mntdp-d", training={"epochs": 3}, search={"fidelity": "halving", "pack": pack})
        runs[pack] = start_run(space, tiny_options(), folder / f"pack-{pack}")
    return runs


def test_a_stopped_trial_is_pruned_with_the_rung_it_reached_and_the_compute_it_spent(halved_runs):
    run = halved_runs[1]
    trials = [t for task in range(1, 5) for t in _trials(run.path, task)]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert stopped and complete
    for trial in stopped:
        epochs, point = halving_stop(trial)
        assert epochs == 1 and 0 <= point[0] <= 1
        assert not (run.path / "trials" / "1" / str(trial.number)).exists()  # nothing kept of it
    # a stopped trial trained one epoch of three (the run's curves), and its compute counts
    with (run.path / "curves.csv").open() as lines:
        rows = list(csv.DictReader(lines))
    assert all(spent_macs(t) > 0 for t in stopped)
    for task in range(1, 5):
        for trial in _trials(run.path, task):
            trained = [r for r in rows if int(r["task"]) == task and int(r["trial"]) == trial.number]
            assert len(trained) == (1 if trial.state == TrialState.PRUNED else 3)
    for record in run.records:  # every commit is a trial that trained all its epochs
        assert _trials(run.path, record.task)[record.chosen_trial].state == TrialState.COMPLETE


def test_a_pack_stops_the_trials_that_one_at_a_time_stops(halved_runs):
    """Pack mates are judged in trial order, each after the earlier ones, as one-at-a-time trials are."""
    for task in range(1, 5):
        alone, packed = _trials(halved_runs[1].path, task), _trials(halved_runs[3].path, task)
        assert [t.state for t in packed] == [t.state for t in alone]
        assert [t.user_attrs.get("pack") for t in packed][:3] == [0, 0, 0]
    assert halved_runs[3].metrics["decisions"] == halved_runs[1].metrics["decisions"]


def test_auto_grow_records_the_best_stopped_candidate_of_a_move_that_no_trial_finished(tmp_path, one_thread):
    space = tiny_space("auto-grow", training={"epochs": 3}, search={"n_trials": 8})
    assert space.search.fidelity == "halving"  # its shipped default
    result = start_run(space, tiny_options(), tmp_path / "run")
    stopped = 0
    for record in result.records[1:]:
        trials = _trials(result.path, record.task)
        for entry in record.mechanism["alternatives"].values():
            trial = trials[entry["trial"]]
            if "stopped_after_epochs" in entry:
                stopped += 1
                assert trial.state == TrialState.PRUNED and entry["stopped_after_epochs"] == 1
                assert entry["val_accuracy"] == halving_stop(trial)[1][0] and entry["added_parameters"] > 0
            else:
                assert trial.state == TrialState.COMPLETE
        chosen = record.mechanism["alternatives"][record.mechanism["move"]]
        assert chosen["trial"] == record.chosen_trial
    assert stopped, "no move's best candidate was a stopped one"
