"""The Ray backend: each task's trials run as Ray Tune trials spread over a Ray cluster.

The search itself stays in the driver: `StudySearcher` is a Tune `Searcher` over the task's Optuna study
(ask/tell on the run folder's storage), so the method's define-by-run space and its sampler (TPE, the
enqueued MNTDP candidates, any custom sampler) drive Tune unchanged. A worker receives only the
decisions and replays them on a `FixedTrial`; the `TrialJob` (method, task data, committed graph) reaches
workers once per task through the object store (`tune.with_parameters`), not per trial.

Each worker reports validation accuracy per epoch (`ray.tune.report`), so an ASHA scheduler stops
losing trials (they are recorded as PRUNED), writes its trained candidate into the run folder's
`trials/T/N/`, and records the node it ran on. Resuming needs no Ray state: finished trials live in the
Optuna storage, so a new Tuner continues the study where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from growsearch.errors import ConfigError, TrainingError
from growsearch.search.trial_job import SaveTrial, TrialJob

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
METRIC = "val_accuracy"


@dataclass(frozen=True)
class TrialResources:
    """What one trial reserves on a node (the YAML's `search.cpus_per_trial` and friends)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int | None = None

    def as_tune(self) -> dict[str, float]:
        resources = {"cpu": self.cpus, "gpu": self.gpus}
        if self.memory_mb:
            resources["memory"] = self.memory_mb * 1024 * 1024
        return resources


class StudySearcher(Searcher):
    """A Tune searcher that asks the Optuna study for each trial's decisions and tells it the outcome."""

    def __init__(self, study: optuna.Study, job: TrialJob, callbacks: Sequence[Callback]):
        super().__init__(metric=METRIC, mode="max")
        self.study, self.job, self.callbacks = study, job, callbacks
        self.live: dict[str, optuna.Trial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.study.ask()
        self.live[trial_id] = trial
        params = self.job.sample(trial)
        return {"params": params, "number": trial.number, "seed_number": self.job.seed_number(trial)}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.live and "epoch" in result and not self.job.method.space.search.multi_objective:
            self.live[trial_id].report(result[METRIC], int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        result = result or {}
        for key, value in result.items():
            if key.startswith("attr/"):
                trial.set_user_attr(key.removeprefix("attr/"), value)
        if result.get("finished") and not error:
            objectives = self.job.method.space.search.objectives
            values = [result[METRIC], *(float(result[f"attr/{name}"]) for name in objectives[1:])]
            frozen = self.study.tell(trial, values if len(values) > 1 else values[0])
        elif error or "attr/error" in result:
            frozen = self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:  # stopped early by the scheduler
            frozen = self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        for callback in self.callbacks:
            callback(self.study, frozen)

    # The search state lives in the Optuna storage, so there is nothing of Tune's to save or restore;
    # Tune still pickles its config at start, which must not drag in the storage's locks or the data.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def __getstate__(self) -> dict[str, Any]:
        return {"_metric": self._metric, "_mode": self._mode, "live": {}}


def _train_on_worker(config: dict[str, Any], job: TrialJob, run_path: str) -> None:
    """A Tune function trainable: replay the decisions, train, keep the weights, report."""
    from growsearch.search.run_folder import RunFolder

    trial = optuna.trial.FixedTrial(config["params"], number=config["number"])
    last_epoch = job.method.space.training.epochs - 1
    node = {"attr/node_id": ray.get_runtime_context().get_node_id(), "attr/pid": os.getpid()}

    def on_epoch(epoch: int, accuracy: float) -> None:
        if epoch < last_epoch:
            tune.report({METRIC: accuracy, "epoch": epoch, **node})

    try:
        outcome = job.run(trial, config["seed_number"], on_epoch)
    except TrainingError as error:
        tune.report({METRIC: float("nan"), "attr/error": str(error), **node})
        return
    RunFolder(Path(run_path)).save_trial(job.task_id, config["number"], outcome.graph)
    attrs = {f"attr/{k}": v for k, v in outcome.attrs.items()}
    tune.report({METRIC: outcome.value, "epoch": last_epoch, "finished": True, **attrs, **node})


class RayBackend:
    """Runs trials as Ray Tune trials on the cluster at `address` (None: a local Ray instance)."""

    name = "ray"

    def __init__(
        self,
        run_path: Path,
        *,
        address: str | None = None,
        resources: TrialResources = TrialResources(),  # noqa: B008 - frozen
        max_concurrent: int | None = None,
        max_failures: int = 2,
        early_stopping: bool = False,
        reuse_workers: bool = True,
        shared_fs: bool = False,
        local_cpus: int | None = None,
    ):
        self.run_path = Path(run_path).resolve()
        self.address, self.resources = address, resources
        self.max_concurrent, self.max_failures = max_concurrent, max_failures
        self.early_stopping, self.shared_fs, self.local_cpus = early_stopping, shared_fs, local_cpus
        self.reuse_workers = reuse_workers

    def connect(self) -> None:
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
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

    def optimize(
        self,
        study: optuna.Study,
        job: TrialJob,
        n_trials: int,
        save_trial: SaveTrial,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.connect()
        trainable = tune.with_resources(
            tune.with_parameters(_train_on_worker, job=job, run_path=str(self.run_path)),
            self.resources.as_tune(),
        )
        epochs = job.method.space.training.epochs
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1, reduction_factor=2)
            if self.early_stopping and epochs > 1
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=StudySearcher(study, job, callbacks),
                scheduler=scheduler,
                metric=METRIC,
                mode="max",
                num_samples=n_trials,
                max_concurrent_trials=self.max_concurrent,
                trial_dirname_creator=lambda trial: trial.trial_id,
                reuse_actors=self.reuse_workers,  # a worker imports torch once, not once per trial
            ),
            run_config=tune.RunConfig(
                name=f"task-{job.task_id}",
                storage_path=str(self.run_path / "ray"),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                verbose=0,
            ),
        )
        tuner.fit()

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
