"""Start or resume a run: resolve the configuration and the scenario plan, load the stream, and drive the
growth pipeline.

`start_run` (the library) and `growsearch run` (the shell) resolve a search space the same way: the run
options a caller leaves unset (None) take the YAML's `benchmark:` defaults (`resolve_options`).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna

from growsearch.atomic_files import atomic_write_json, read_json
from growsearch.backends import BACKENDS, RayOptions, make_backend
from growsearch.config.overrides import apply_overrides
from growsearch.config.run_options import RunOptions, check_run_options
from growsearch.config.schema import from_mapping
from growsearch.config.space import METHOD_SAMPLER_NAMES, SAMPLER_NAMES, SearchSpace, space_from_dict
from growsearch.data.benchmarks import DEFAULT_BENCHMARK, get_benchmark_info, load_benchmark
from growsearch.data.task import TaskStream
from growsearch.data.validation_floor import with_validation_floor
from growsearch.errors import CheckpointError, ConfigError, RunFolderError, ScenarioError, UnknownNameError
from growsearch.grow.backbone import backbone_kind, count_parameters
from growsearch.inference.boundaries import task_free_stream
from growsearch.methods import Method, get_method, method_names
from growsearch.report.run_metrics import INDEPENDENT_FILE, read_independent, write_metrics
from growsearch.search.evaluation import independent_accuracy, random_init_accuracy
from growsearch.search.loggers import check_loggers, make_loggers
from growsearch.search.pipeline import GrowthPipeline, Reporter, SilentReporter
from growsearch.search.scenario_plan import ScenarioPlan, resolve_plan
from growsearch.store.run_folder import CONFIG_FILE, METRICS_FILE, RunFolder, run_complete
from growsearch.task_record import TaskRecord
from growsearch.train.candidate import resolve_device

BASELINE_FILE = "baseline.json"


@dataclass(frozen=True)
class RunResult:
    path: Path
    records: list[TaskRecord]
    metrics: dict[str, Any]


def resolve_options(space: SearchSpace, options: RunOptions) -> RunOptions:
    """`options` with every benchmark field the caller left unset taken from the YAML's `benchmark:`."""
    defaults = space.benchmark
    return dataclasses.replace(
        options,
        benchmark=options.benchmark if options.benchmark is not None else defaults.name,
        scenario=options.scenario if options.scenario is not None else defaults.scenario,
        n_tasks=options.n_tasks if options.n_tasks is not None else defaults.n_tasks,
        max_per_task=options.max_per_task if options.max_per_task is not None else defaults.max_per_task,
        val_fraction=options.val_fraction if options.val_fraction is not None else defaults.val_fraction,
        min_val_per_task=(
            options.min_val_per_task if options.min_val_per_task is not None else defaults.min_val_per_task
        ),
    )


def _versions() -> dict[str, str]:
    packages = ("growsearch", "torch", "optuna", "networkx", "safetensors", "scikit-learn")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def load_stream(options: RunOptions) -> TaskStream:
    """The stream `options` name (the default benchmark when they name none)."""
    held_out = {} if options.val_fraction is None else {"val_fraction": options.val_fraction}
    stream = load_benchmark(
        options.benchmark or DEFAULT_BENCHMARK,
        scenario=options.scenario,
        data_root=options.data_root,
        download=options.download,
        seed=options.seed,
        n_tasks=options.n_tasks,
        max_per_task=options.max_per_task,
        **held_out,  # none given: the loader's share
    )
    # None: a run folder from before the floor (its config.yaml names none), resumed on the splits it had
    floor = options.min_val_per_task or 0
    return with_validation_floor(stream, floor, options.seed) if floor else stream


def scenario_name(options: RunOptions) -> str:
    """The scenario the run is asked for (the benchmark's default when none is named)."""
    if options.scenario is not None:
        return options.scenario
    return get_benchmark_info(options.benchmark or DEFAULT_BENCHMARK).default_scenario


def scenario_plan(space: SearchSpace, options: RunOptions) -> ScenarioPlan:
    """The run's scenario plan, from the YAML and the run options (unset ones from the YAML's defaults)."""
    return resolve_plan(space, scenario_name(resolve_options(space, options)))


def training_stream(space: SearchSpace, plan: ScenarioPlan, options: RunOptions) -> TaskStream:
    """The stream the method trains on (`plan.trains_in`): where the task is inferred, a task-IL method
    learns each task with its own labels; with no boundaries given (task-agnostic), the tasks it finds in
    the stream (`inference.boundaries`). The pipeline scores it as the plan says."""
    if plan.finds_tasks:
        stream, _ = task_free_stream(load_stream(options), space.inference, options.seed)
        return stream
    return load_stream(dataclasses.replace(options, scenario=plan.trains_in))


def _sampler_owners(sampler: str) -> str:
    return " and ".join(name for name in method_names() if sampler in get_method(name).own_samplers)


def build_method(space: SearchSpace, stream: TaskStream) -> Method:
    """The space's method for this stream, everything checked before anything is allocated or written:
    its options, its scenario, the base network's shapes and size, the training device."""
    method_cls = get_method(space.method)
    if stream.scenario.name not in method_cls.scenarios:
        raise ScenarioError(
            f"method {space.method} supports the scenarios {', '.join(method_cls.scenarios)}; "
            f"benchmark {stream.benchmark} was asked for {stream.scenario.name}"
        )
    kind = backbone_kind(space.layers)
    if kind not in method_cls.backbones:
        why = f" ({method_cls.backbone_note})" if method_cls.backbone_note else ""
        raise ConfigError(
            f"{space.source}: network: method {space.method} does not grow {kind} backbones{why}; it takes "
            f"{', '.join(method_cls.backbones)}"
        )
    sampler = space.search.sampler
    if sampler in METHOD_SAMPLER_NAMES and sampler not in method_cls.own_samplers:
        raise ConfigError(
            f"{space.source}: search.sampler: {sampler!r} is {_sampler_owners(sampler)}'s own; "
            f"expected one of: {', '.join(SAMPLER_NAMES)}"
        )
    try:
        method = method_cls(space)
    except (RuntimeError, OverflowError, MemoryError) as error:  # a size in the options no tensor can hold
        raise ConfigError(
            f"{space.source}: options: {space.method} cannot be built with them ({_first_line(error)}); "
            "expected sizes a tensor can hold"
        ) from None
    if "capacity_used" in space.search.objectives and method_cls.capacity_used is Method.capacity_used:
        raise ConfigError(
            f"{space.source}: search.objectives: {space.method} grows its network, so it has no "
            "capacity_used; expected accuracy, then any of added_parameters, forward_macs"
        )
    try:
        size = count_parameters(method.specs_for(stream.input_shape))
    except ConfigError as error:
        raise ConfigError(f"{space.source}: {error}") from None
    if size > space.max_parameters:
        raise ConfigError(
            f"{space.source}: network.layers: the base network would hold {size:,} parameters for "
            f"{stream.benchmark}'s {stream.input_shape} inputs; network.max_parameters allows "
            f"{space.max_parameters:,} (raise it if you mean it)"
        )
    resolve_device(space.training.device)  # a missing CUDA device fails here, with one line
    return method


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n", 1)[0].split())[:200]


def default_run_name(space: SearchSpace, options: RunOptions) -> str:
    benchmark = resolve_options(space, options).benchmark
    return f"{space.method}-{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(
    space: SearchSpace,
    options: RunOptions,
    path: Path,
    reporter: Reporter | None = None,
    overrides: Sequence[str] = (),
    ray: RayOptions = RayOptions(),  # noqa: B008 - frozen
) -> RunResult:
    """Create the run folder at `path` and run every task. `overrides` (`section.key=value`) change the
    space before anything else; config.yaml records them and the space they gave. `ray`: how a run on the
    ray backend joins Ray."""
    space = apply_overrides(space, overrides)
    check_run_options(options, lambda name: f"run option {name}")
    options = resolve_options(space, options)
    plan = scenario_plan(space, options)
    stream = training_stream(space, plan, options)  # bad data, options, methods fail before writing
    method = build_method(space, stream)
    if options.backend not in BACKENDS:
        raise UnknownNameError("backend", options.backend, BACKENDS)
    check_loggers(options.loggers)
    resolved = dataclasses.replace(space, options=method.resolved_options())
    config = {
        "run": dataclasses.asdict(options),
        "validation": stream.validation,  # what the validation floor did, task by task
        "ray": dataclasses.asdict(ray),
        "space": resolved.to_dict(),
        "space_source": space.source,
        "overrides": list(overrides),
        "versions": _versions(),
    }
    run = RunFolder.create(path, config)
    try:
        return _drive(run, method, options, ray, stream, reporter, plan)
    finally:
        run.unlock()


def resume_run(
    path: Path,
    reporter: Reporter | None = None,
    address: str | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    announce: Callable[[str], None] | None = None,
) -> RunResult:
    """Continue a run where it stopped: committed tasks and finished trials are not redone.
    `address` points a ray run at a (new) cluster. A config.yaml edited since the run started, or
    `overrides` that change it, are refused unless `force` (then recorded). `announce` is told what the
    resume keeps, once this process holds the run folder."""
    run = RunFolder.open(path)
    run.lock()
    try:
        return _resume(run, reporter, address, overrides, force, announce)
    finally:
        run.unlock()


def _resume(
    run: RunFolder,
    reporter: Reporter | None,
    address: str | None,
    overrides: Sequence[str],
    force: bool,
    announce: Callable[[str], None] | None,
) -> RunResult:
    if announce is not None:
        announce(resume_summary(run))
    config = run.config()
    where = f"{run.path / CONFIG_FILE}: space"
    space = space_from_dict(config["space"], where)
    changed = apply_overrides(space, overrides)
    if run.config_edited() and not force:
        raise RunFolderError(
            f"{run.path / CONFIG_FILE} was edited since the run started; resuming would mix two "
            "configurations. Put it back, or resume with --force to continue with the edited one"
        )
    if changed.to_dict() != space.to_dict() and not force:
        differences = _differences(space.to_dict(), changed.to_dict())
        raise RunFolderError(
            f"the overrides change the run's configuration ({'; '.join(differences)}); resume with --force "
            "to continue with the changed configuration"
        )
    space = changed
    options = from_mapping(RunOptions, config["run"], f"{run.path / CONFIG_FILE}: run")
    ray = from_mapping(RayOptions, config.get("ray", {}), f"{run.path / CONFIG_FILE}: ray")
    if address is not None:
        ray = dataclasses.replace(ray, address=address)
    plan = scenario_plan(space, options)
    stream = training_stream(space, plan, options)
    method = build_method(space, stream)
    if force:  # record what the run continues with
        resolved = dataclasses.replace(space, options=method.resolved_options())
        config = {
            **config,
            "space": resolved.to_dict(),
            "overrides": [*config.get("overrides", []), *overrides],
        }
        run.write_config(config)
    return _drive(run, method, options, ray, stream, reporter, plan)


def resume_summary(folder: Path | RunFolder) -> str:
    """What a resume keeps: the committed tasks, and the open task's finished trials and those to retry."""
    from growsearch.trial_record import counts_toward_budget

    run = folder if isinstance(folder, RunFolder) else RunFolder.open(folder)
    committed = run.committed_tasks()
    kept = f"{len(committed)} task(s) committed" + (f" (0..{committed[-1]})" if committed else "")
    records = run.records()
    if any(r.task_inference == "expert-gate" for r in records):
        kept += " with their task-inference autoencoders"
    elif any(r.task_inference == "task-classifier" for r in records):
        kept += " with the task classifier and its memory"
    if records and _complete(run, len(records)):
        return f"{kept}: the run is complete, nothing to redo"
    storage = run.storage()
    name = f"task-{len(committed)}"
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        return f"{kept}; task {len(committed)} starts afresh"
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finished = sum(counts_toward_budget(t) for t in trials)
    retry = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    again = ""
    if retry:  # a retried trial gets a new number: said, or "trials 3 and 4" of 3 candidates puzzles
        again = f"; {retry} interrupted, run again with their seeds as trials {len(trials)} on"
    return f"{kept}; task {len(committed)}: {finished} trial(s) finished and kept{again}"


def _complete(run: RunFolder, committed: int) -> bool:
    """Whether every task of the stream is committed and scored (metrics.json knows the stream's length)."""
    try:
        return run_complete(read_json(run.path / METRICS_FILE), committed)
    except CheckpointError:
        return False


def _differences(before: dict, after: dict, prefix: str = "") -> list[str]:
    """`section.key: old -> new` for every value that differs."""
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return out


def _drive(
    run: RunFolder,
    method: Method,
    options: RunOptions,
    ray: RayOptions,
    stream: TaskStream,
    reporter: Reporter | None,
    plan: ScenarioPlan,
) -> RunResult:
    # growsearch reports every trial itself; Optuna's own warnings would print tracebacks of failed and
    # interrupted trials before growsearch's one-line message
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    backend = make_backend(options.backend, run_path=run.path, config=method.space.backend, ray=ray)
    baseline = _baseline(run, stream, method, options.seed)
    independent = _independent(run, stream, method, options)
    loggers = make_loggers(run.path, options.loggers)
    pipeline = GrowthPipeline(
        method=method,
        stream=stream,
        plan=plan,
        run=run,
        backend=backend,
        seed=options.seed,
        reporter=_MetricsWriter(
            reporter or SilentReporter(),
            run,
            len(stream),
            baseline,
            method.space.metrics.epsilon,
            independent,
        ),
        loggers=loggers,
    )
    try:
        records = pipeline.run_all()
    finally:
        backend.close()
        for logger in loggers:
            logger.close()
    epsilon = method.space.metrics.epsilon
    return RunResult(run.path, records, write_metrics(run, len(stream), baseline, epsilon, independent))


def _is_accuracy(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _baseline(run: RunFolder, stream: TaskStream, method: Method, seed: int) -> list[float]:
    """b_j, the random-init accuracies: computed once, kept in baseline.json (recomputable)."""
    path = run.path / BASELINE_FILE
    if path.is_file():
        try:
            kept = read_json(path)
        except CheckpointError:
            kept = None  # torn or edited: recompute, it is deterministic
        if isinstance(kept, list) and len(kept) == len(stream) and all(_is_accuracy(b) for b in kept):
            return kept
    baseline = random_init_accuracy(stream, method.specs_for(stream.input_shape), seed)
    atomic_write_json(path, baseline)
    return baseline


def _independent(run: RunFolder, stream: TaskStream, method: Method, options: RunOptions) -> float | None:
    """CTrL's reference for transfer, where the benchmark measures it: an independent model's accuracy on the
    last task, computed once, kept in independent.json (recomputed when missing or torn); else None."""
    if not get_benchmark_info(options.benchmark or DEFAULT_BENCHMARK).measures_transfer:
        return None
    kept = read_independent(run, len(stream))
    if kept is not None:
        return kept
    specs = method.specs_for(stream.input_shape)
    accuracy = independent_accuracy(stream, specs, method.space.training, options.seed)
    atomic_write_json(run.path / INDEPENDENT_FILE, {"task": len(stream) - 1, "accuracy": accuracy})
    return accuracy


@dataclass(frozen=True)
class _MetricsWriter:
    """Passes progress on, and rewrites metrics.json after every committed task."""

    inner: Reporter
    run: RunFolder
    n_tasks: int
    baseline: list[float]
    epsilon: float
    independent: float | None = None  # CTrL's transfer reference, where the benchmark measures it

    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None:
        self.inner.task_started(task, n_tasks, n_trials, done)

    def trial_finished(self, task: int, trial: optuna.trial.FrozenTrial) -> None:
        self.inner.trial_finished(task, trial)

    def task_committed(self, task: int, record: TaskRecord) -> None:
        write_metrics(self.run, self.n_tasks, self.baseline, self.epsilon, self.independent)
        self.inner.task_committed(task, record)
