"""Optuna samplers whose random draws depend on (seed, the trial's place in the search, parameter) alone.

Optuna's seeded samplers draw from one random stream per sampler object; a search resumed after a kill builds
a new sampler, whose stream starts over, so the trials after the resume would not draw what an
uninterrupted search draws. These samplers seed their streams afresh for every parameter of every trial,
from the trial's position in an uninterrupted search (retries of killed trials not counted), so a resumed
search samples each trial exactly as the uninterrupted one (TPE's model of the finished trials is
the same either way: the study holds them). NSGA-II, CMA-ES and QMC keep Optuna's own streams.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from growsearch.seeds import derived_seed
from growsearch.trial_record import search_position


class SeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search; each parameter of each trial drawn from its own seeded stream."""

    def __init__(self, seed: int):
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        self._rng.rng.seed(derived_seed(self._base_seed, _position(study, trial), param_name))
        return super().sample_independent(study, trial, param_name, param_distribution)


class SeededTPESampler(optuna.samplers.TPESampler):
    """TPE; its start-up draws and its candidates for each parameter of each trial from seeded streams."""

    def __init__(self, seed: int, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        position = _position(study, trial)
        self._rng.rng.seed(derived_seed(self._base_seed, position, param_name, "tpe"))
        self._random_sampler._rng.rng.seed(derived_seed(self._base_seed, position, param_name))
        return super().sample_independent(study, trial, param_name, param_distribution)


def _position(study: optuna.Study, trial: FrozenTrial) -> int:
    return search_position(trial, study.get_trials(deepcopy=False))
