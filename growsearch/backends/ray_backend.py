"""The Ray backend: each task's trials run as Ray Tune trials spread over a Ray cluster.

The search itself stays in the driver: `StudySearcher` is a Tune `Searcher` over the task's Optuna study
(ask/tell on the run folder's storage), so the method's define-by-run space and its sampler (TPE, the
enqueued MNTDP candidates, any custom sampler) drive Tune unchanged. A worker receives only the
decisions and builds the candidate from them (`Method.build`); the `TrialJob` (method, task data, committed
graph) reaches workers once per task through the object store (`tune.with_parameters`), not per trial.

Each worker reports validation accuracy per epoch (`ray.tune.report`), so an ASHA scheduler stops
losing trials (they are recorded as PRUNED, with the compute they spent), keeps its trained candidate with
the `save_trial` the pipeline handed over (the run folder's `trials/T/N/`), and reports what the study is
told (`search.trials.TrialReport`, made by `report_of`); the searcher tells the study through the same
`search.trials.tell` the in-process backend uses. Resuming needs no Ray state: finished trials live in the
Optuna storage, so a new Tuner continues the study where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from growsearch.backends.ray_options import RayOptions
from growsearch.config.space import BackendConfig
from growsearch.errors import ConfigError, TrainingError
from growsearch.search.halving import SuccessiveHalving
from growsearch.search.trial_job import TrialFailure, TrialJob, TrialOutcome
from growsearch.search.trials import (
    SaveTrial,
    TaskTrials,
    TrialReport,
    next_trials,
    report_of,
    tell,
    tell_each,
)
from growsearch.train.trainer import EpochStats, count_macs
from growsearch.trial_record import TrialRecord, stopped_attrs, worker_attrs

METRIC = "val_accuracy"
EPOCH = "epoch_json"  # one epoch's statistics (EpochStats)
REPORT = (
    "report_json"  # a trial's TrialReport: the compute so far in an epoch's report, the outcome at the end
)
PACK_REPORTS = "pack_reports_json"  # a pack's TrialReport per trial number
LAYOUT = "layout_json"  # the template a pack trained in
HALVING = "halving"  # a trial's config: the rungs it is judged against (SuccessiveHalving.snapshot)


def trial_resources(config: BackendConfig) -> dict[str, float]:
    """What one trial reserves on a node (the YAML's `backend:` section)."""
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    if config.memory_per_trial_mb:
        resources["memory"] = config.memory_per_trial_mb * 1024 * 1024
    return resources


class StudySearcher(Searcher):
    """A Tune searcher that asks the Optuna study for each trial's decisions and hands each result back to
    the study (`search.trials.tell`). With a pack size above 1, one Tune trial carries a pack of Optuna
    trials (`next_trials`), trained together on its worker."""

    def __init__(self, trials: TaskTrials):
        super().__init__(metric=METRIC, mode="max")
        self.trials = trials
        self.live: dict[str, list[optuna.Trial]] = {}
        self.remaining = trials.n_trials

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.remaining <= 0:
            return Searcher.FINISHED
        job = self.trials.job
        asked, layout = next_trials(self.trials, self.remaining)
        self.live[trial_id], self.remaining = asked, self.remaining - len(asked)
        members = [
            {"decisions": job.decide(t), "number": t.number, "seed_number": job.seed_number(t)} for t in asked
        ]
        rungs = {}
        if self.trials.halving is not None:  # the worker judges against the rungs as the study holds them now
            known = self.trials.halving.reseeded(self.trials.study.get_trials(deepcopy=False))
            rungs = {HALVING: known.snapshot()}
        if self.trials.pack == 1:
            return {**members[0], **rungs}
        return {"pack": members, "layout": layout, "max_padding": self.trials.max_padding, **rungs}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self.live or EPOCH not in result:
            return
        stats = EpochStats(**json.loads(result[EPOCH]))
        trial = self._member(trial_id, result.get("number"))
        self.trials.on_epoch(trial.number, stats)
        if not self.trials.multi_objective:
            trial.report(stats.val_accuracy, stats.epoch)

    def _member(self, trial_id: str, number: int | None) -> optuna.Trial:
        live = self.live[trial_id]
        return live[0] if number is None else next(t for t in live if t.number == number)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        asked = self.live.pop(trial_id, None)
        if asked is None:
            return
        result = result or {}
        if PACK_REPORTS in result and not error:
            reports = json.loads(result[PACK_REPORTS])
            layout = json.loads(result[LAYOUT]) if result.get(LAYOUT) else None
            told = ((trial, TrialReport.from_json(reports[str(trial.number)])) for trial in asked)
            tell_each(self.trials, told, set(), layout)
            return
        last = TrialReport.from_json(json.loads(result[REPORT])) if REPORT in result else None
        for trial in asked:  # one trial, or a pack whose worker was lost
            if error or last is None:
                # a crash of the worker (a lost node after Tune's retries) stays an interruption, as a
                # killed in-process trial is: not counted, not learned from, with the compute it reported
                attrs = last.attrs if last is not None and len(asked) == 1 else {}
                tell(self.trials, trial, TrialReport("interrupted", attrs))
                continue
            if last.state == "complete":  # the last epoch came with the final report
                record = TrialRecord.from_attrs(last.attrs)
                if record is not None and record.curve:
                    self.trials.on_epoch(trial.number, EpochStats(**record.curve[-1]))
            tell(self.trials, trial, last)  # an epoch's report as the last: stopped by the scheduler

    # `suggest` is Tune's name for asking a searcher (the Searcher API), not a method's sampling step.
    # The search state lives in the Optuna storage, so there is nothing of Tune's to save or restore;
    # Tune still pickles its config at start, which must not drag in the storage's locks or the data.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def __getstate__(self) -> dict[str, Any]:
        return {"_metric": self._metric, "_mode": self._mode, "live": {}}


def _train_on_worker(config: dict[str, Any], job: TrialJob, save_trial: SaveTrial) -> None:
    """A Tune function trainable: build the candidate from the decisions, train, keep it, report."""
    where = worker_attrs(ray.get_runtime_context().get_node_id(), os.getpid())
    if "pack" in config:
        _train_pack_on_worker(config, job, save_trial, where)
        return
    last_epoch, number = job.training.epochs - 1, config["number"]
    halving = _halving(config)
    with count_macs() as spent:

        def on_epoch(stats: EpochStats) -> None:
            reason = _judged(halving, number, stats)
            if stats.epoch < last_epoch:  # each report carries the compute so far: a stopped trial keeps it
                attrs = {**stopped_attrs(spent.macs), **where, **_rungs(halving, number)}
                stopped = TrialReport("pruned", attrs)
                epoch = json.dumps(stats.to_json())
                tune.report({METRIC: stats.val_accuracy, EPOCH: epoch, REPORT: json.dumps(stopped.to_json())})
            if reason is not None:
                raise optuna.TrialPruned(reason)

        try:
            result: TrialOutcome | TrialFailure = job.run(
                config["decisions"], number, config["seed_number"], on_epoch
            )
        except (TrainingError, optuna.TrialPruned) as error:
            result = TrialFailure(error, spent.macs)
    report = report_of(save_trial, job.task_id, number, result, {**where, **_rungs(halving, number)})
    accuracy = result.accuracy if isinstance(result, TrialOutcome) else math.nan
    tune.report({METRIC: accuracy, REPORT: json.dumps(report.to_json())})


def _train_pack_on_worker(config: dict[str, Any], job: TrialJob, save_trial: SaveTrial, where: dict) -> None:
    """A pack of trials on one worker (`TrialJob.run_pack`): each epoch of each trial is reported as it
    ends (with the trial's number), then one report carries every trial's outcome and the pack's layout."""
    members = config["pack"]
    halving = _halving(config)  # its members judge after their earlier mates

    def reporter(number: int) -> Any:
        def on_epoch(stats: EpochStats) -> None:
            reason = _judged(halving, number, stats)
            tune.report({METRIC: stats.val_accuracy, EPOCH: json.dumps(stats.to_json()), "number": number})
            if reason is not None:
                raise optuna.TrialPruned(reason)

        return on_epoch

    pack = job.run_pack(
        [m["decisions"] for m in members],
        [m["number"] for m in members],
        [m["seed_number"] for m in members],
        [reporter(m["number"]) for m in members],
        config["layout"],
        config["max_padding"],
    )
    reports = {
        str(member["number"]): report_of(
            save_trial, job.task_id, member["number"], result, {**where, **_rungs(halving, member["number"])}
        ).to_json()
        for member, result in zip(members, pack.results, strict=True)
    }
    accuracies = [r.accuracy for r in pack.results if isinstance(r, TrialOutcome)]
    tune.report(
        {
            METRIC: max(accuracies, default=math.nan),
            PACK_REPORTS: json.dumps(reports),
            LAYOUT: json.dumps(pack.layout) if pack.layout is not None else "",
        }
    )


def _halving(config: dict[str, Any]) -> SuccessiveHalving | None:
    """The rungs the driver handed a trial (`search.fidelity: halving`), or None."""
    return SuccessiveHalving.from_snapshot(config[HALVING]) if HALVING in config else None


def _judged(halving: SuccessiveHalving | None, number: int, stats: EpochStats) -> str | None:
    """Why successive halving stops trial `number` after this epoch, or None."""
    return halving.judge_epoch(number, stats) if halving is not None else None


def _rungs(halving: SuccessiveHalving | None, number: int) -> dict[str, Any]:
    return halving.attrs(number) if halving is not None else {}


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray's local-only mode for the instance `ray.init` starts here: its node address is 127.0.0.1, and
    Ray 2.60 binds the servers of a node at a loopback address to that address alone (the GCS, the
    raylet's two ports, the runtime-env agent, the driver's and each worker's gRPC port); at any other
    address they listen on every interface. Ray reads the switch, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, in
    this process (its constant, already imported) and in the processes it starts (the environment). A user
    who set the variable keeps their choice."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR in os.environ:
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)


_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _token_auth_enabled_note(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


class RayBackend:
    """Runs trials as Ray Tune trials on the cluster at `address` (None: a local Ray instance)."""

    name = "ray"

    def __init__(self, run_path: Path, config: BackendConfig, options: RayOptions):
        self.run_path = Path(run_path).resolve()
        self.config, self.options = config, options

    def connect(self) -> None:
        if ray.is_initialized():
            return
        address = self.options.address or os.environ.get("RAY_ADDRESS")
        # Ray's usage statistics stay off unless the user turned them on themselves
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # growsearch prints its own progress: Tune's new console output prints its experiment table (a
        # trial count of 2**63 - 1 for a search that ends when the study does) and a TensorBoard hint into
        # /tmp/ray whatever `verbose` says; the legacy one is silent at verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logging.getLogger("ray.tune").setLevel(logging.WARNING)  # "wrote the experiment state" per task
        # a new local instance turns on token authentication, Ray's default, and warns it did so each run;
        # a warning that authentication is off still shows
        logging.getLogger(_AUTH_LOGGER).addFilter(_token_auth_enabled_note)
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:  # a local instance: no dashboard, every port on 127.0.0.1 (see the README)
            with _loopback_only():
                ray.init(
                    num_cpus=self.options.local_cpus,
                    include_dashboard=False,
                    dashboard_host="127.0.0.1",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) > 1 and not self.options.shared_fs:
            ray.shutdown()
            raise ConfigError(
                f"the Ray cluster has {len(alive)} nodes, and since Ray 2.7 nothing is synced to the head: "
                f"workers write trained candidates into {self.run_path}, which every node must see. Put the "
                "run folder on a shared filesystem and pass --shared-fs"
            )

    def run_trials(self, trials: TaskTrials) -> None:
        self.connect()
        trainable = tune.with_resources(
            tune.with_parameters(_train_on_worker, job=trials.job, save_trial=trials.save_trial),
            trial_resources(self.config),
        )
        scheduler = (
            ASHAScheduler(
                time_attr="training_iteration", max_t=trials.epochs, grace_period=1, reduction_factor=2
            )
            if trials.early_stopping and trials.epochs > 1 and trials.pack == 1
            else FIFOScheduler()  # a pack's reports interleave its trials: no scheduler can rank them
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=StudySearcher(trials),
                scheduler=scheduler,
                metric=METRIC,
                mode="max",
                num_samples=trials.n_trials if trials.pack == 1 else -1,  # packs: until the searcher is done
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
