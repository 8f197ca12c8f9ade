"""Search-space YAML files: one per method, with the paper's defaults.

Sections: `method` (registered name), `paper` (citation, free text), `network` (the base layers),
`training` (how candidates train), `search` (trial budget, sampler, pruner, storage, objectives),
`backend` (what a Ray trial reserves), `metrics` (the survey's epsilon in CE), `options` (the method's own
settings: a mapping the method checks
against its Options dataclass when it is built) and `benchmark` (defaults for the run's benchmark,
scenario, tasks and cap). Unknown keys and bad values are refused with the file, the field and what was
expected. This layer knows nothing of methods, so loading a YAML imports none.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from growsearch.config.network import DEFAULT_MAX_PARAMETERS, LayerConfig, parse_layers, preset_layers
from growsearch.config.run_options import check_val_floor, check_val_fraction
from growsearch.config.schema import INT64, check_keys, from_mapping, require, require_at_most, shown
from growsearch.config.training import TrainingConfig
from growsearch.config.yaml_input import read_yaml
from growsearch.errors import ConfigError, UnknownNameError

NETWORK_KEYS = {"layers", "preset", "max_parameters"}
SECTIONS = (
    "method",
    "paper",
    "network",
    "training",
    "search",
    "backend",
    "metrics",
    "inference",
    "options",
    "benchmark",
)
Objective = Literal["accuracy", "added_parameters", "forward_macs", "capacity_used"]
# Optuna's samplers by the names a YAML uses (search.samplers builds them; a test keeps the two equal),
# and grid: MNTDP's own (every candidate in order)
SAMPLER_NAMES = ("tpe", "random", "cmaes", "nsga2", "qmc")
METHOD_SAMPLER_NAMES = ("grid",)
# a task's trials are all kept (in the study, and as checkpoints until the task commits): a budget past
# this is a typing slip, not a search
MAX_TRIALS = 100_000
MAX_EPOCHS = 100_000
MAX_BATCH = 2**31 - 1  # a batch is indexed by 32-bit tensor sizes on some devices


@dataclass(frozen=True)
class SearchConfig:
    """How each task's search runs (the `search:` section)."""

    n_trials: int | None = None  # None: the method's own budget (e.g. every MNTDP candidate)
    sampler: str | None = None  # None: the method's own sampler
    pruner: Literal["none", "median", "successive-halving", "hyperband"] = "none"
    # full: every trial trains its epochs (the papers' protocol); halving: successive halving over epochs
    # (search.halving): a trial is judged after min_epochs * eta**k epochs and goes on only when it ranks
    # in the top 1/eta of the trials judged there, on every objective
    fidelity: Literal["full", "halving"] = "full"
    min_epochs: int = 1
    eta: int = 3
    storage: Literal["journal", "sqlite"] = "journal"
    # more than one objective: a multi-objective search (NSGA-II by default)
    objectives: tuple[Objective, ...] = ("accuracy",)
    # the committed trial: among the candidates within this much of the best score (validation accuracy,
    # or the method's reward; in a multi-objective search, the Pareto points within it of the best
    # accuracy), the one that adds the fewest parameters (lowest costs). 0: the best, ties to the smallest
    accuracy_tolerance: float = 0.0
    # trials trained together as one pack (growsearch.train.packed): "auto" sizes packs from the method's
    # limit and the memory a candidate needs; 1 trains one trial at a time
    pack: int | Literal["auto"] = "auto"

    def validate(self, where: str) -> None:
        require(
            self.pack == "auto" or self.pack >= 1,
            f"{where}.pack",
            f"expected auto or an integer >= 1, got {self.pack}",
        )
        if self.pack != "auto":
            require_at_most(self.pack, MAX_TRIALS, f"{where}.pack", "a pack is some of a task's trials")
        if self.n_trials is not None:
            require(self.n_trials >= 1, f"{where}.n_trials", f"expected an integer >= 1, got {self.n_trials}")
            require_at_most(
                self.n_trials,
                MAX_TRIALS,
                f"{where}.n_trials",
                "a task keeps every trial until it commits",
            )
        if self.sampler is not None and self.sampler not in (*SAMPLER_NAMES, *METHOD_SAMPLER_NAMES):
            raise ConfigError(
                f"{where}.sampler: unknown sampler {shown(self.sampler)}; expected one of "
                f"{', '.join(SAMPLER_NAMES)}, grid (MNTDP: every candidate) or null (the method's own)"
            )
        require(
            len(self.objectives) >= 1
            and self.objectives[0] == "accuracy"
            and len(set(self.objectives)) == len(self.objectives),
            f"{where}.objectives",
            "expected accuracy, then any of added_parameters, forward_macs, capacity_used; got "
            f"{list(self.objectives)}",
        )
        require(
            len(self.objectives) == 1 or self.pruner == "none",
            f"{where}.pruner",
            "expected none with several objectives (Optuna prunes single-objective searches only)",
        )
        require(self.accuracy_tolerance >= 0, f"{where}.accuracy_tolerance", "expected a number >= 0")
        require(
            self.min_epochs >= 1, f"{where}.min_epochs", f"expected an integer >= 1, got {self.min_epochs}"
        )
        require_at_most(
            self.min_epochs, MAX_EPOCHS, f"{where}.min_epochs", "a rung is some of a trial's epochs"
        )
        require(
            self.eta >= 2,
            f"{where}.eta",
            f"expected an integer >= 2 (keep 1/eta at each rung), got {self.eta}",
        )
        require_at_most(self.eta, MAX_TRIALS, f"{where}.eta", "1/eta of a rung's trials go on")
        require(
            self.fidelity == "full" or self.pruner == "none",
            f"{where}.pruner",
            "expected none with fidelity: halving (successive halving already stops trials; pick one)",
        )

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def commit_rule(self) -> str:
        """The commit rule in words, as a run prints it."""
        best = "the Pareto point with the best accuracy" if self.multi_objective else "the best score"
        if self.accuracy_tolerance == 0:
            return f"{best}; on a tie, the candidate that adds the fewest parameters"
        costs = "the lowest costs" if self.multi_objective else "the fewest added parameters"
        return f"within {self.accuracy_tolerance:g} of {best}, the candidate with {costs}"

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.objectives) - 1)


@dataclass(frozen=True)
class BackendConfig:
    """Where trials run (the `backend:` section): what a Ray trial reserves, how many run at once, how often
    a lost one is retried. The optuna backend (in this process) ignores it."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions such as 0.25 share a GPU
    memory_per_trial_mb: int | None = None
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    reuse_workers: bool = True  # a worker process serves later trials too (imports torch once)

    def validate(self, where: str) -> None:
        require(self.cpus_per_trial > 0, f"{where}.cpus_per_trial", "expected a number > 0")
        require(self.gpus_per_trial >= 0, f"{where}.gpus_per_trial", "expected a number >= 0 (e.g. 0.25)")
        require(self.max_failures >= 0, f"{where}.max_failures", "expected an integer >= 0")
        require_at_most(self.max_failures, MAX_TRIALS, f"{where}.max_failures", "each retry trains it again")
        memory = self.memory_per_trial_mb
        require(memory is None or memory >= 1, f"{where}.memory_per_trial_mb", "expected null or >= 1")
        concurrent = self.max_concurrent_trials
        require(concurrent is None or concurrent >= 1, f"{where}.max_concurrent_trials", "expected >= 1")
        for name in ("cpus_per_trial", "gpus_per_trial"):  # Ray's resource quantities
            require_at_most(int(getattr(self, name)), 2**31 - 1, f"{where}.{name}", "Ray's largest quantity")
        if memory is not None:
            require_at_most(memory, 2**43, f"{where}.memory_per_trial_mb", "8 EiB")


@dataclass(frozen=True)
class InferenceConfig:
    """The `inference:` section: how a task-IL method finds the task of a test sample when the scenario
    does not give it (class-IL). `expert-gate`: ExpertGate's gate (Aljundi et al. 2017): one undercomplete
    autoencoder per task, trained on the task's inputs (standardised, then squashed by a sigmoid), and a
    sample goes to the task whose autoencoder reconstructs it best (softmax with `temperature` over the
    negative errors). `task-classifier`: a classifier over the tasks (CCGN's, Abati et al. 2020, on the
    inputs) trained as each task is learnt, on its samples and an exemplar memory of the earlier tasks'.
    `auto`: the task id where the scenario gives it (oracle), the task classifier in class-IL (the gate on
    raw pixels cannot tell digits apart: PNN on split-mnist5k routes its last task right 0.47 of the time
    by the gate, 0.89 by the classifier), the gate elsewhere (domain-IL, task-agnostic)."""

    kind: Literal["auto", "oracle", "expert-gate", "task-classifier"] = "auto"
    # the autoencoders: dense (ExpertGate's), recurrent (GIM's LSTM autoencoders, for sequence inputs), or
    # auto: recurrent where the inputs are (steps, features) sequences
    autoencoder: Literal["auto", "dense", "lstm"] = "auto"
    code_size: int = 32  # the autoencoder's hidden units (undercomplete: fewer than the inputs)
    epochs: int = 40
    lr: float = 0.001  # Adam
    batch_size: int = 64
    temperature: float = 2.0  # the paper's t
    # task-agnostic (no task boundaries): each task's autoencoder fits its first `boundary_warmup` samples,
    # the next `boundary_chunk` set its novelty threshold, and a chunk more than `novelty` novel starts a task
    boundary_warmup: int = 100
    boundary_chunk: int = 50
    novelty: float = 0.4
    # the task classifier: an exemplar memory of `memory` training samples in all, shared equally by the
    # tasks seen (chosen at random), and one hidden layer of `classifier_hidden` ReLU units trained from
    # scratch as each task is learnt, on the memory and the task's samples, each task weighing the same, for
    # `classifier_epochs` (Adam at `lr`, batches of `batch_size`)
    memory: int = 1000
    classifier_hidden: int = 256
    classifier_epochs: int = 30

    def validate(self, where: str) -> None:
        require(self.memory >= 1, f"{where}.memory", f"expected an integer >= 1, got {self.memory}")
        require_at_most(self.memory, 100_000_000, f"{where}.memory", "samples kept in memory")
        require(
            self.classifier_hidden >= 1,
            f"{where}.classifier_hidden",
            f"expected an integer >= 1, got {self.classifier_hidden}",
        )
        require_at_most(self.classifier_hidden, 1_000_000, f"{where}.classifier_hidden", "a layer's units")
        require(
            self.classifier_epochs >= 1,
            f"{where}.classifier_epochs",
            f"expected an integer >= 1, got {self.classifier_epochs}",
        )
        require_at_most(
            self.classifier_epochs, MAX_EPOCHS, f"{where}.classifier_epochs", "a classifier a task"
        )
        require(self.code_size >= 1, f"{where}.code_size", f"expected an integer >= 1, got {self.code_size}")
        require_at_most(self.code_size, 1_000_000, f"{where}.code_size", "a code smaller than the inputs")
        require(self.epochs >= 1, f"{where}.epochs", f"expected an integer >= 1, got {self.epochs}")
        require_at_most(self.epochs, MAX_EPOCHS, f"{where}.epochs", "an autoencoder per task")
        require(self.lr > 0, f"{where}.lr", f"expected a number > 0, got {self.lr}")
        require(
            self.batch_size >= 1, f"{where}.batch_size", f"expected an integer >= 1, got {self.batch_size}"
        )
        require_at_most(self.batch_size, MAX_BATCH, f"{where}.batch_size", "a batch's largest size")
        require(
            self.temperature > 0, f"{where}.temperature", f"expected a number > 0, got {self.temperature}"
        )
        for name in ("boundary_warmup", "boundary_chunk"):
            value = getattr(self, name)
            require(value >= 2, f"{where}.{name}", f"expected an integer >= 2, got {value}")
            require_at_most(value, MAX_BATCH, f"{where}.{name}", "samples in one piece of a stream")
        require(0 < self.novelty < 1, f"{where}.novelty", f"expected a number in (0, 1), got {self.novelty}")


@dataclass(frozen=True)
class MetricsConfig:
    """The `metrics:` section. `epsilon` scales the computational efficiency CE (the survey's eq. 13,
    Diaz-Rodriguez et al. 2018): "a scaling factor associated to the number of epochs needed to learn a
    task"; with epsilon = the epochs a plain learner trains, a method that spends no more than those passes
    scores CE = 1."""

    epsilon: float = 1.0

    def validate(self, where: str) -> None:
        require(self.epsilon > 0, f"{where}.epsilon", f"expected a number > 0, got {self.epsilon}")


@dataclass(frozen=True)
class BenchmarkDefaults:
    """The `benchmark:` section: what a run uses unless the command line (or RunOptions) says otherwise."""

    name: str = "split-digits"
    scenario: str | None = None
    n_tasks: int | None = None
    max_per_task: int | None = None
    # the share of each task's training pool held out for validation, what every commit is decided on
    # (null: the loader's, 0.15)
    val_fraction: float | None = None
    # a floor on each task's validation samples, met where its training split can spare a tenth of its
    # samples (`data.validation_floor`); 0: none
    min_val_per_task: int = 100

    def validate(self, where: str) -> None:
        require(bool(self.name.strip()), f"{where}.name", "expected a benchmark name, got ''")
        check_val_floor(self.min_val_per_task, f"{where}.min_val_per_task")
        if self.val_fraction is not None:
            check_val_fraction(self.val_fraction, f"{where}.val_fraction")
        require(self.scenario is None or bool(self.scenario.strip()), f"{where}.scenario", "expected a name")
        for name in ("n_tasks", "max_per_task"):
            value = getattr(self, name)
            require(
                value is None or value >= 1,
                f"{where}.{name}",
                f"expected null or >= 1, got {value}",
            )


@dataclass(frozen=True)
class SearchSpace:
    method: str
    layers: tuple[LayerConfig, ...]
    training: TrainingConfig
    search: SearchConfig
    backend: BackendConfig
    options: dict[str, Any]  # the method's `options:` mapping, checked by the method when it is built
    benchmark: BenchmarkDefaults
    metrics: MetricsConfig = MetricsConfig()  # noqa: RUF009 - frozen
    inference: InferenceConfig = InferenceConfig()  # noqa: RUF009 - frozen
    # the base network may hold at most this many parameters: checked before anything is allocated
    max_parameters: int = DEFAULT_MAX_PARAMETERS
    paper: str = ""
    source: str = "<defaults>"

    def to_dict(self) -> dict:
        """The space as YAML data, every default filled in (options as given: the method resolves them)."""
        return {
            "method": self.method,
            "paper": self.paper,
            "network": {
                "layers": [layer.to_dict() for layer in self.layers],
                "max_parameters": self.max_parameters,
            },
            "training": dataclasses.asdict(self.training),
            "search": _plain(dataclasses.asdict(self.search)),
            "backend": dataclasses.asdict(self.backend),
            "metrics": dataclasses.asdict(self.metrics),
            "inference": dataclasses.asdict(self.inference),
            "options": _plain(self.options),
            "benchmark": dataclasses.asdict(self.benchmark),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _shipped_folder() -> Path:
    """search_spaces/ at the top of a checkout, or the copy in the installed package's data."""
    checkout = Path(__file__).resolve().parents[2] / "search_spaces"
    if checkout.is_dir():
        return checkout
    return Path(str(importlib.resources.files("growsearch") / "search_spaces"))


def builtin_space_path(name: str) -> Path:
    """The YAML shipped under `name` (a method name, or a variant such as learn-to-grow-categorical)."""
    return _shipped_folder() / f"{name}.yaml"


def shipped_spaces() -> list[str]:
    folder = _shipped_folder()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_space(source: str | Path) -> SearchSpace:
    """A search space from a YAML path, or from the name of a shipped one (a method's name)."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = builtin_space_path(str(source))
        if not path.is_file():
            raise UnknownNameError("method", str(source), shipped_spaces())
    if not path.is_file():
        known = ", ".join(shipped_spaces())
        raise ConfigError(f"{path}: no such search-space file; expected a YAML path or one of: {known}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); expected a search-space YAML") from None
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot be read ({error.strerror}); expected a search-space YAML"
        ) from None
    return space_from_dict(read_yaml(text, str(path)), str(path))


def space_from_dict(data: Any, where: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping with sections {', '.join(SECTIONS)}, got {shown(data)}"
        )
    check_keys(data, where)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}; expected some of: {', '.join(SECTIONS)}")
    if not isinstance(data.get("method"), str):
        raise ConfigError(f"{where}: method: expected a method name, got {shown(data.get('method'))}")
    network = data.get("network")
    if isinstance(network, dict):
        check_keys(network, f"{where}: network")
    if (
        not isinstance(network, dict)
        or set(network) - NETWORK_KEYS
        or ("layers" in network) == ("preset" in network)
    ):
        raise ConfigError(
            f"{where}: network: expected a mapping of layers or a preset (and max_parameters), "
            f"got {shown(network)}"
        )
    bound = network.get("max_parameters", DEFAULT_MAX_PARAMETERS)
    if not isinstance(bound, int) or isinstance(bound, bool) or not 1 <= bound <= INT64:
        raise ConfigError(
            f"{where}: network.max_parameters: expected an integer from 1 to 2**63 - 1, got {shown(bound)}"
        )
    paper = data.get("paper", "")
    if not isinstance(paper, str):
        raise ConfigError(f"{where}: paper: expected a citation string, got {shown(paper)}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(
            f"{where}: options: expected a mapping of the method's settings, got {shown(options)}"
        )
    check_keys(options, f"{where}: options")
    return SearchSpace(
        method=data["method"],
        layers=(
            preset_layers(network["preset"], f"{where}: network.preset")
            if "preset" in network
            else parse_layers(network["layers"], f"{where}: network.layers")
        ),
        max_parameters=bound,
        training=from_mapping(TrainingConfig, data.get("training"), f"{where}: training"),
        search=from_mapping(SearchConfig, data.get("search"), f"{where}: search"),
        backend=from_mapping(BackendConfig, data.get("backend"), f"{where}: backend"),
        options=dict(options),
        benchmark=from_mapping(BenchmarkDefaults, data.get("benchmark"), f"{where}: benchmark"),
        metrics=from_mapping(MetricsConfig, data.get("metrics"), f"{where}: metrics"),
        inference=from_mapping(InferenceConfig, data.get("inference"), f"{where}: inference"),
        paper=paper,
        source=where,
    )
