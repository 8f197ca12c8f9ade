"""The Ray backend: each task's trials run as Ray Tune trials spread over a Ray cluster.

The search itself stays in the driver: `StudySearcher` is a Tune `Searcher` over the task's Optuna study
(ask/tell on the run folder's storage), so the method's define-by-run space and its sampler (TPE, the
enqueued MNTDP candidates, any custom sampler) drive Tune unchanged. A worker receives only the
decisions and builds the candidate from them (`Method.build`); the `TrialJob` (method, task data, committed
graph) reaches workers once per task through the object store (`tune.with_parameters`), not per trial.

Each worker reports validation accuracy per epoch (`ray.tune.report`), so an ASHA scheduler stops
losing trials (they are recorded as PRUNED, with the compute they spent), keeps its trained candidate with
the `save_trial` the controller handed over (the run folder's `trials/T/N/`), and reports the values the
study is told and the trial's record, computed once by the `TrialJob`. Resuming needs no Ray state:
finished trials live in the Optuna storage, so a new Tuner continues the study where it stopped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from growsearch.config.space import BackendConfig
from growsearch.errors import ConfigError, TrainingError
from growsearch.search.backend import SaveTrial, TaskTrials
from growsearch.search.trial_job import TrialJob
from growsearch.train.trainer import EpochStats, count_macs
from growsearch.trial_record import TrialRecord, failure_attrs, stopped_attrs, worker_attrs, write_attrs

METRIC = "val_accuracy"
ATTRS = "attrs_json"  # the trial's attributes, as one JSON string (Tune flattens nested results)
VALUES = "values_json"
EPOCH = "epoch_json"  # one epoch's statistics (EpochStats)


def trial_resources(config: BackendConfig) -> dict[str, float]:
    """What one trial reserves on a node (the YAML's `backend:` section)."""
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    if config.memory_per_trial_mb:
        resources["memory"] = config.memory_per_trial_mb * 1024 * 1024
    return resources


class StudySearcher(Searcher):
    """A Tune searcher that asks the Optuna study for each trial's decisions and tells it the outcome."""

    def __init__(self, trials: TaskTrials):
        super().__init__(metric=METRIC, mode="max")
        self.trials = trials
        self.live: dict[str, optuna.Trial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        job = self.trials.job
        trial = self.trials.study.ask()
        self.live[trial_id] = trial
        decisions = job.decide(trial)
        return {"decisions": decisions, "number": trial.number, "seed_number": job.seed_number(trial)}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self.live or EPOCH not in result:
            return
        stats = EpochStats(**json.loads(result[EPOCH]))
        self.trials.on_epoch(self.live[trial_id].number, stats)
        if not self.trials.multi_objective:
            self.live[trial_id].report(result[METRIC], stats.epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        result, study = result or {}, self.trials.study
        if ATTRS in result:
            write_attrs(trial, json.loads(result[ATTRS]))
        if result.get("finished") and not error:
            record = TrialRecord.from_attrs(json.loads(result[ATTRS]))
            if record is not None and record.curve:  # the last epoch came with the final report
                self.trials.on_epoch(trial.number, EpochStats(**record.curve[-1]))
            values = json.loads(result[VALUES])
            frozen = study.tell(trial, values if self.trials.multi_objective else values[0])
        elif error or result.get("failed"):
            # a TrainingError reported its message ("failed"); a crash of the worker (a lost node after
            # Tune's retries) stays an interruption, as a killed in-process trial is: not counted toward
            # the budget, not learned from, with the compute its last report carried
            frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:  # stopped early by the scheduler
            frozen = study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self.trials.on_trial(study, frozen)

    # `suggest` is Tune's name for asking a searcher (the Searcher API), not a method's sampling step.
    # The search state lives in the Optuna storage, so there is nothing of Tune's to save or restore;
    # Tune still pickles its config at start, which must not drag in the storage's locks or the data.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def __getstate__(self) -> dict[str, Any]:
        return {"_metric": self._metric, "_mode": self._mode, "live": {}}


def _train_on_worker(config: dict[str, Any], job: TrialJob, save_trial: SaveTrial, epochs: int) -> None:
    """A Tune function trainable: build the candidate from the decisions, train, keep the weights, report."""
    where = worker_attrs(ray.get_runtime_context().get_node_id(), os.getpid())
    last_epoch = epochs - 1
    with count_macs() as spent:

        def on_epoch(stats: EpochStats) -> None:
            if stats.epoch < last_epoch:  # each report carries the compute so far: a stopped trial keeps it
                attrs = {**stopped_attrs(spent.macs), **where}
                epoch = json.dumps(stats.to_json())
                tune.report({METRIC: stats.val_accuracy, EPOCH: epoch, ATTRS: json.dumps(attrs)})

        try:
            outcome = job.run(config["decisions"], config["number"], config["seed_number"], on_epoch)
        except TrainingError as error:
            attrs = {**failure_attrs(str(error), spent.macs), **where}
            tune.report({METRIC: math.nan, "failed": True, ATTRS: json.dumps(attrs)})
            return
    save_trial(job.task_id, config["number"], outcome.graph)
    report = {METRIC: outcome.accuracy, "finished": True}
    report[VALUES] = json.dumps(outcome.values)
    report[ATTRS] = json.dumps({**outcome.record.to_attrs(), **where})
    tune.report(report)


class RayBackend:
    """Runs trials as Ray Tune trials on the cluster at `address` (None: a local Ray instance)."""

    name = "ray"

    def __init__(
        self,
        run_path: Path,
        config: BackendConfig,
        *,
        address: str | None = None,
        shared_fs: bool = False,
        local_cpus: int | None = None,
    ):
        self.run_path = Path(run_path).resolve()
        self.config, self.address = config, address
        self.shared_fs, self.local_cpus = shared_fs, local_cpus

    def connect(self) -> None:
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        # Ray's usage statistics stay off unless the user turned them on themselves
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a local instance: no dashboard; see the README for what Ray 2.60 still listens on
            ray.init(
                num_cpus=self.local_cpus,
                include_dashboard=False,
                dashboard_host="127.0.0.1",
                log_to_driver=False,
            )
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) > 1 and not self.shared_fs:
            ray.shutdown()
            raise ConfigError(
                f"the Ray cluster has {len(alive)} nodes, and since Ray 2.7 nothing is synced to the head: "
                f"workers write trained candidates into {self.run_path}, which every node must see. Put the "
                "run folder on a shared filesystem and pass --shared-fs"
            )

    def run_trials(self, trials: TaskTrials) -> None:
        self.connect()
        trainable = tune.with_resources(
            tune.with_parameters(
                _train_on_worker, job=trials.job, save_trial=trials.save_trial, epochs=trials.epochs
            ),
            trial_resources(self.config),
        )
        scheduler = (
            ASHAScheduler(
                time_attr="training_iteration", max_t=trials.epochs, grace_period=1, reduction_factor=2
            )
            if trials.early_stopping and trials.epochs > 1
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=StudySearcher(trials),
                scheduler=scheduler,
                metric=METRIC,
                mode="max",
                num_samples=trials.n_trials,
                max_concurrent_trials=self.config.max_concurrent_trials,
                trial_dirname_creator=lambda trial: trial.trial_id,
                reuse_actors=self.config.reuse_workers,  # a worker imports torch once, not once per trial
            ),
            run_config=tune.RunConfig(
                name=f"task-{trials.job.task_id}",
                storage_path=str(self.run_path / "ray"),
                failure_config=tune.FailureConfig(max_failures=self.config.max_failures),
                verbose=0,
            ),
        )
        tuner.fit()

    def close(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
