"""The commit rule: the best score wins, ties go to the smaller candidate, and `accuracy_tolerance` picks
the smallest candidate within that much of the best; RCL and CLEAS rank by reward."""

from __future__ import annotations

import optuna
import pytest

from growsearch.methods import get_method
from growsearch.search.task_search import committed_trial
from growsearch.trial_record import TrialRecord

from tiny_runs import tiny_space


def _record(added: int) -> dict:
    return TrialRecord({}, {}, added, added, 0, 0, 0, 0.0).to_attrs()


def _study(trials: list[tuple[float, int, dict]]) -> optuna.Study:
    """Completed trials of (accuracy, added parameters, params)."""
    study = optuna.create_study(direction="maximize")
    for accuracy, added, params in trials:
        distributions = {name: optuna.distributions.IntDistribution(0, 100) for name in params}
        study.add_trial(
            optuna.trial.create_trial(
                value=accuracy, params=params, distributions=distributions, user_attrs=_record(added)
            )
        )
    return study


def by_accuracy(trial: optuna.trial.FrozenTrial) -> float:
    return trial.values[0]


def test_the_best_wins_and_a_tie_goes_to_the_smaller_candidate():
    study = _study([(0.9, 500, {}), (0.95, 900, {}), (0.95, 300, {}), (0.95, 300, {})])
    assert committed_trial(study, 1, 0.0, by_accuracy).number == 2  # smaller; then the earlier
    assert committed_trial(_study([(0.9, 10, {}), (0.95, 900, {})]), 1, 0.0, by_accuracy).number == 1


def test_a_tolerance_commits_the_smallest_candidate_close_to_the_best():
    study = _study([(0.96, 900, {}), (0.95, 300, {}), (0.90, 10, {})])
    assert committed_trial(study, 1, 0.02, by_accuracy).number == 1
    assert committed_trial(study, 1, 0.1, by_accuracy).number == 2
    assert committed_trial(study, 1, 0.0, by_accuracy).number == 0


@pytest.mark.parametrize("method", ["rcl", "cleas"])
def test_rcl_and_cleas_commit_the_best_reward_so_fewer_units_win_a_tie(method):
    """reward = accuracy - penalty x units added: on equal accuracy the architecture adding fewer units
    wins, and a small accuracy gain does not pay for many more units."""
    scorer = get_method(method)(tiny_space(method))
    units = {"add_units_L0": 10, "add_units_L1": 10}
    fewer = {"add_units_L0": 2, "add_units_L1": 1}
    study = _study([(0.95, 50, units), (0.95, 10, fewer)])
    assert committed_trial(study, 1, 0.0, scorer.score).number == 1
    study = _study([(0.9502, 50, units), (0.95, 10, fewer)])  # +0.0002 accuracy for 17 more units
    assert committed_trial(study, 1, 0.0, scorer.score).number == 1
    study = _study([(0.96, 50, units), (0.95, 10, fewer)])  # +0.01 for 17 units: worth it at 1e-4 a unit
    assert committed_trial(study, 1, 0.0, scorer.score).number == 0


def test_a_trials_record_is_one_attribute_and_an_older_per_field_record_still_reads():
    record = TrialRecord({"k": 1}, {"m": 2}, 10, 20, 30, 40, 50, 1.5, [{"epoch": 0}], 0.25)
    attrs = record.to_attrs()
    assert set(attrs) == {"record", "spent_macs"} and attrs["spent_macs"] == 40 + 50
    assert TrialRecord.from_attrs(attrs) == record
    older = {**attrs["record"], "spent_macs": 90}  # a run folder written before: a field an attribute
    assert TrialRecord.from_attrs(older) == record
    assert TrialRecord.from_attrs({"spent_macs": 90}) is None  # a failed trial keeps none
