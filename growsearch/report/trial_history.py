"""Every trial of a run, read back from its Optuna storage: what each search tried and what it chose."""

from __future__ import annotations

from typing import Any

import optuna

from growsearch.search.run_folder import RunFolder


def trial_history(run: RunFolder) -> list[dict[str, Any]]:
    """One dict per trial: task, number, state, value, params, user attributes, and whether it was chosen."""
    config = run.config()
    storage = run.storage(config["space"]["search"]["storage"])
    chosen = {r["task"]: r["chosen_trial"] for r in run.records()}
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        task = int(summary.study_name.removeprefix("task-"))
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            rows.append(
                {
                    "task": task,
                    "number": trial.number,
                    "state": trial.state.name,
                    "value": trial.values[0] if trial.values else None,  # validation accuracy
                    "values": list(trial.values) if trial.values else None,  # and costs, if multi-objective
                    "params": dict(trial.params),
                    "user_attrs": dict(trial.user_attrs),
                    "chosen": chosen.get(task) == trial.number,
                }
            )
    return sorted(rows, key=lambda r: (r["task"], r["number"]))
