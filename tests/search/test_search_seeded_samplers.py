"""A search resumed after a kill samples each later trial as the uninterrupted search does: the random and TPE
samplers draw every parameter of every trial from a stream seeded by (seed, trial, parameter), where
Optuna's own seeded samplers start their one stream over in the new process."""

from __future__ import annotations

import optuna
import pytest

from growsearch.search.samplers import make_sampler


def _search(storage: str, sampler: optuna.samplers.BaseSampler, n_trials: int) -> optuna.Study:
    study = optuna.create_study(study_name="task-0", storage=storage, sampler=sampler, load_if_exists=True)
    for _ in range(n_trials):
        trial = study.ask()
        x, k = trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("k", 0, 7)
        study.tell(trial, (x - 0.3) ** 2 + k)
    return study


@pytest.mark.parametrize(
    ("name", "stock"),
    [("random", optuna.samplers.RandomSampler), ("tpe", optuna.samplers.TPESampler)],
)
def test_a_resumed_search_draws_what_an_uninterrupted_one_draws(tmp_path, name, stock):
    """14 trials (past TPE's 10 random start-up ones) against 6, then a new sampler object for 8 more."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    uninterrupted = _search(f"sqlite:///{tmp_path}/a.db", make_sampler(name, seed=3), 14)
    _search(f"sqlite:///{tmp_path}/b.db", make_sampler(name, seed=3), 6)
    resumed = _search(f"sqlite:///{tmp_path}/b.db", make_sampler(name, seed=3), 8)
    assert [t.params for t in resumed.trials] == [t.params for t in uninterrupted.trials]
    # what Optuna's own sampler does: its stream starts over in the resumed process
    stock_uninterrupted = _search(f"sqlite:///{tmp_path}/c.db", stock(seed=3), 14)
    _search(f"sqlite:///{tmp_path}/d.db", stock(seed=3), 6)
    restarted = _search(f"sqlite:///{tmp_path}/d.db", stock(seed=3), 8)
    assert [t.params for t in restarted.trials] != [t.params for t in stock_uninterrupted.trials]
