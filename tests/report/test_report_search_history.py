"""Each task's search read back from the Optuna storage: chosen trial, best trial, Pareto front."""

from __future__ import annotations

import json

import optuna
import pytest

from growsearch.report.html_report import _search_section
from growsearch.report.report_figures import search_figure
from growsearch.report.search_history import task_searches, trials_for_plot
from growsearch.store.run_folder import RunFolder

from report_runs import copy_of


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_searches_mark_the_chosen_trial_and_a_multi_objective_pareto_front(tmp_path_factory, tmp_path):
    run = RunFolder.open(copy_of("mntdp-d", tmp_path_factory, tmp_path / "run"))
    storage = run.storage(run.config()["space"]["search"]["storage"])
    study = optuna.create_study(study_name="task-5", storage=storage, directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "added_parameters"])
    for values in ([0.9, 100], [0.8, 50], [0.7, 200], [0.95, 300]):
        study.add_trial(optuna.trial.create_trial(values=values))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))

    searches = task_searches(run)
    assert [s.task for s in searches] == [0, 1, 2, 3, 4, 5]
    for search in searches[:5]:
        record = json.loads((run.task_dir(search.task) / "record.json").read_text())
        assert [t.number for t in search.trials if t.chosen] == [record["chosen_trial"]]
        assert (
            search.objectives in (("accuracy",), ("objective",)) and sum(t.pareto for t in search.trials) == 1
        )
        assert all(t.params and t.record and t.record.added_parameters >= 0 for t in search.trials)
    assert len(searches[1].trials) == 3  # MNTDP-D: reuse depth 0, 1, 2 for two layers

    multi = searches[5]
    assert multi.multi_objective and multi.objectives == ("val_accuracy", "added_parameters")
    assert multi.directions == ("maximize", "minimize")
    assert [t.pareto for t in multi.trials] == [True, True, False, True, False]
    assert multi.count("FAIL") == 1 and not any(t.chosen for t in multi.trials)
    assert search_figure(multi)[:8] == b"\x89PNG\r\n\x1a\n"
    section = _search_section(multi)
    assert section.count(">pareto<") == 3 and "val_accuracy (maximize)" in section

    rows = trials_for_plot(searches)
    assert len(rows) == sum(len(s.trials) for s in searches)
    assert next(r for r in rows if r["task"] == 5 and r["number"] == 0)["value"] == 0.9
