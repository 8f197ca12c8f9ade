"""Optuna samplers and pruners by the names a search-space YAML uses."""

from __future__ import annotations

import optuna

from growsearch.errors import UnknownNameError
from growsearch.seeded_samplers import SeededRandomSampler, SeededTPESampler

SAMPLERS = ("tpe", "random", "cmaes", "nsga2", "qmc")
PRUNERS = ("none", "median", "successive-halving", "hyperband")


def make_sampler(name: str, *, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":  # these two draw what an uninterrupted search draws after a resume, too
        return SeededTPESampler(seed=seed)
    if name == "random":
        return SeededRandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise UnknownNameError("sampler", name, SAMPLERS)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise UnknownNameError("pruner", name, PRUNERS)
