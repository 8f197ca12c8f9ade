"""Methods benchmark: growsearch's methods on one stream under one protocol, and Avalanche where installed.

What is measured, in this run: for each method in ``--methods`` (default PNN, PackNet, MNTDP-D), its
shipped search space (``search_spaces/<method>.yaml``) with the ``network`` and ``training`` sections
overridden to one protocol (a 2x100 MLP, ``--epochs`` epochs, SGD lr 0.1 momentum 0.9, batch 32, CPU; DEN,
XdG, CCGN, RPS-Net, DGMw, DER and PathNet keep their YAML's optimiser, see OWN_OPTIMISER) is run with
`growsearch.runner.start_run` on ``--benchmark`` (default split-mnist5k), task-IL, ``--seed``. The table
shows wall time (``start_run`` end to end: data loading, the random-init baseline, every trial with its
per-epoch validation, the accuracy matrix and the run folder with Optuna storage and checkpoints), the
part of it spent in the tasks (the per-task ``seconds`` of the run's records: search, commit, accuracy
row), final average accuracy A_T (mean test accuracy over all tasks after the last one), parameters after
the last task and the number of trials run. With ``--repeats N`` each row is run N times and the repeat
of median wall time is shown (``min s``: the fastest repeat; ``cpu s``: process CPU time, less sensitive
to other load on a shared machine with one thread). The wall-time ratio judged against the target
compares the fastest repeats (other load only ever adds time); the median, CPU and per-task ratios are
printed beside it. Torch runs one intra-op thread by default (``--threads``): on a small shared machine,
more threads make timings swing with the other load.

Where ``avalanche-lib`` is importable (and ``--no-avalanche`` is not given), Avalanche's own PNN
(`avalanche.models.PNN` + `avalanche.training.PNNStrategy`) and PackNet (`PackNetModel` +
`PackNetPlugin`) run in the same process on the identical stream: the same task split and the same
train/test tensors (growsearch's loaded stream, wrapped as Avalanche datasets), the same epochs, learning
rate, momentum, batch size and 2x100 hidden layers. Avalanche's timed part (all its time columns) is
`strategy.train` on each experience plus the test accuracy of every seen task after it (our wall time
covers strictly more).
PackNet gets growsearch's YAML settings: the same prune fractions per task and the same post-pruning
retraining epochs at the same scaled learning rate (Avalanche counts those inside ``train_epochs``, so it
trains ``epochs + retrain_epochs``). Known differences, from Avalanche's designs: its PackNet packs one
shared output layer (it has no per-task heads), and its PNN has adapters into every layer (the first one
too, over the input) and none into the head. The script prints wall-time ratios ours / Avalanche
(target <= 1.0) and accuracy differences (target: ours >= theirs). Without Avalanche it says so and
prints growsearch's rows only. Before the timed rows, every method runs once untimed on a tiny stream
(``--no-warmup`` skips it) so that first-call costs are charged to no row. ``--storage`` overrides the
YAMLs' Optuna storage (sqlite or journal) to see what the run folder's storage costs.

With ``--scenario class-il`` every method runs class-IL: a task-IL method with the task of a test sample
inferred by ExpertGate's gate (growsearch's task inference; CCGN by its own task classifier), a class-IL
method (DER, RPS-Net, DGMw) with its one classifier; a method that does not run in the scenario asked for
(DER in task-IL) is named and left out. Three reference rows frame the numbers: the protocol's MLP with one
head over all classes trained on every task's data jointly (the upper bound), the same network fine-tuned
on the tasks one after another (the lower bound), and between them experience replay (Chaudhry et al.
2019): the same network fine-tuned task by task, every batch joined by as many exemplars drawn from a
class-balanced random memory of DER's shipped ``memory_size`` (``--replay-memory`` sets another): what a
rehearsal method should beat at equal memory.
Avalanche's rows are task-IL and are not run then.

Adding a method as a row: add its name to METHODS (its YAML must exist); an Avalanche counterpart is a
function in AVALANCHE_RUNNERS.

Run:  python benchmarks/methods.py [--methods pnn,packnet,mntdp-d] [--seed 0] [--epochs 5]
      [--scenario task-il|class-il]
      [--benchmark split-mnist5k] [--no-avalanche] [--max-per-task N] [--repeats 1]
      [--threads N] [--no-warmup] [--storage sqlite|journal] [--replay-memory N]
For the comparison, use an environment with avalanche-lib installed (e.g. a separate venv with
``pip install -e . avalanche-lib mlxtend``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from growsearch.config.space import SearchSpace, load_space, space_from_dict
from growsearch.config.training import OptimizerSettings
from growsearch.data.memory import ExemplarMemory
from growsearch.data.scenarios import INFERABLE
from growsearch.data.task import Split, TaskStream
from growsearch.errors import TrainingError
from growsearch.methods import get_method, method_names
from growsearch.runner import RunOptions, load_stream, start_run
from growsearch.seeds import derived_seed
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.trainer import fit

METHODS = [  # the default rows, in order: the foundation, then the growth searches
    "pnn",
    "packnet",
    "mntdp-d",
    "mntdp-s",
    "pathnet",
    "rcl",
    "cleas",
    "den",
    "learn-to-grow",
    "search_spaces/learn-to-grow-categorical.yaml",
    "hat",
    "xdg",
    "dan",
    "clnp",
    "piggyback",
    "cpg",
    "pae",
    "expert-gate",
    "side-tuning",
    "ccgn",
    "der",  # class-IL only: rows of --scenario class-il
    "rps-net",
    "dgmw",
]
# not rows: GIM's columns are recurrent, for the sequence benchmarks (seq-split-digits, seq-split-mnist5k)
SCENARIO = "task-il"
HIDDEN = (100, 100)
LR, MOMENTUM, BATCH = 0.1, 0.9, 32
# Methods whose mechanism is tuned to their paper's optimiser keep their YAML's optimiser, rate and batch
# (the network and epochs still follow the protocol): DEN's penalties and stage lengths are the reference's
# for Adam at 1e-3; under SGD 0.1 with momentum 0.9 its drift term diverges on split-mnist5k. XdG's SI
# strength is set for Adam (the paper's optimiser): with SGD 0.1 and momentum its penalty is too stiff.
# CCGN's gates, RPS-Net's distillation and DGMw's solver are set for Adam (their YAMLs' rates) too. DER's
# paper trains batch-normalised ResNets at 0.1; on the BN-less MLP that rate kills its new extractors' units
# (frozen dead after their task), so its YAML trains at 0.05 with the paper's momentum and weight decay.
# PathNet's GA is set for plain SGD (its YAML's 1e-3): under SGD 0.1 with momentum 0.9 neither its packed
# waves nor its serial GA learn split-digits (A_T 0.54 and 0.71).
OWN_OPTIMISER = {"den", "xdg", "ccgn", "rps-net", "dgmw", "der", "pathnet"}
EVAL_BATCH = 2048


@dataclass
class Row:
    method: str
    implementation: str  # "growsearch" or "avalanche"
    seconds: float
    average_accuracy: float
    parameters: int
    trials: int | None  # None: no search (one training per task)
    accuracy: list[float] = field(default_factory=list)  # final test accuracy per task
    task_seconds: list[float] = field(default_factory=list)
    cpu_seconds: float = math.nan  # process CPU time of the same span as `seconds`
    repeats: list[float] = field(default_factory=list)  # wall seconds of every repeat


# ---- growsearch -------------------------------------------------------------------------------------
def protocol_space(method: str, epochs: int, storage: str | None = None) -> SearchSpace:
    """The method's shipped space with its network and training sections set to the benchmark protocol
    (and its Optuna storage set to `storage`, unless None)."""
    shipped = load_space(method)
    raw = copy.deepcopy(shipped.to_dict())
    if storage is not None:
        raw["search"] = {**(raw.get("search") or {}), "storage": storage}
    raw["network"] = {"layers": [{"linear": width} for width in HIDDEN]}
    protocol = {"optimizer": "sgd", "lr": LR, "momentum": MOMENTUM, "weight_decay": 0.0, "batch_size": BATCH}
    if shipped.method in OWN_OPTIMISER:
        protocol = {k: v for k, v in raw["training"].items() if k in protocol}
    raw["training"] = {**protocol, "epochs": epochs, "device": "cpu"}
    return space_from_dict(raw, f"{shipped.source} (benchmark protocol)")


def runs_in(method: str, scenario: str) -> bool:
    """Whether the method runs in `scenario`: one it declares, or one a task-IL method runs in with the task
    inferred (class-IL, domain-IL, task-agnostic)."""
    declared = get_method(load_space(method).method).scenarios
    return scenario in declared or ("task-il" in declared and scenario in INFERABLE)


def run_growsearch(method: str, options: RunOptions, epochs: int, storage: str | None = None) -> Row:
    space = protocol_space(method, epochs, storage)
    with tempfile.TemporaryDirectory(prefix=f"bench-{Path(method).stem}-") as folder:
        started, cpu = time.perf_counter(), time.process_time()
        result = start_run(space, options, Path(folder) / "run")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    metrics = result.metrics
    trials = sum(sum(record.trials.values()) for record in result.records)
    return Row(
        method,
        "growsearch",
        seconds,
        float(metrics["metrics"]["average_accuracy"]),
        int(metrics["parameters"][-1]),
        trials,
        [float(a) for a in metrics["accuracy"][-1]],
        [float(record.seconds) for record in result.records],
        cpu,
    )


# ---- Avalanche ---------------------------------------------------------------------------------------
def import_avalanche() -> tuple[Any, str]:
    """The avalanche module, or None and the reason it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import avalanche
            import avalanche.benchmarks  # noqa: F401 - the APIs used below, checked up front
            import avalanche.models.packnet  # noqa: F401
            import avalanche.training  # noqa: F401
        return avalanche, getattr(avalanche, "__version__", "?")
    except Exception as error:  # ImportError, or a broken install failing at import time
        return None, f"{type(error).__name__}: {error}"


def avalanche_benchmark(stream: TaskStream) -> Any:
    """The stream as an Avalanche task-incremental benchmark: one experience per task, same tensors."""
    from avalanche.benchmarks import benchmark_from_datasets, task_incremental_benchmark
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.utils import as_classification_dataset
    from torch.utils.data import TensorDataset

    class _Tensors(TensorDataset):
        def __init__(self, x: torch.Tensor, y: torch.Tensor):
            super().__init__(x, y)
            self.targets = y.tolist()

    train = [as_classification_dataset(_Tensors(t.train.x, t.train.y)) for t in stream.tasks]
    test = [as_classification_dataset(_Tensors(t.test.x, t.test.y)) for t in stream.tasks]
    benchmark = with_classes_timeline(
        task_incremental_benchmark(benchmark_from_datasets(train=train, test=test))
    )
    # with_classes_timeline stores sets, which MultiHeadClassifier (avalanche 0.6) cannot index a tensor
    # with; lists are what the older generators stored
    for experiences in benchmark.streams.values():
        for experience in experiences:
            for name in (
                "classes_in_this_experience",
                "previous_classes",
                "classes_seen_so_far",
                "future_classes",
            ):
                if hasattr(experience, name):
                    setattr(experience, name, sorted(int(c) for c in getattr(experience, name)))
    return benchmark


def _avalanche_accuracy(model: torch.nn.Module, stream: TaskStream, tasks: int) -> list[float]:
    """Test accuracy of each of the first `tasks` tasks, the task label given (task-IL)."""
    model.eval()
    row = []
    with torch.no_grad():
        for j, task in enumerate(stream.tasks[:tasks]):
            correct = 0
            for start in range(0, len(task.test), EVAL_BATCH):
                x = task.test.x[start : start + EVAL_BATCH]
                labels = torch.full((len(x),), j, dtype=torch.long)
                correct += int((model(x, labels).argmax(1) == task.test.y[start : start + EVAL_BATCH]).sum())
            row.append(correct / len(task.test))
    return row


def _train_avalanche(method: str, strategy: Any, model: torch.nn.Module, stream: TaskStream) -> Row:
    benchmark = avalanche_benchmark(stream)
    task_seconds, row = [], []
    started, cpu = time.perf_counter(), time.process_time()
    for t, experience in enumerate(benchmark.train_stream):
        task_started = time.perf_counter()
        strategy.train(experience)
        row = _avalanche_accuracy(model, stream, t + 1)  # the accuracy matrix's row, as growsearch computes
        task_seconds.append(time.perf_counter() - task_started)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    parameters = sum(p.numel() for p in model.parameters())
    return Row(method, "avalanche", seconds, statistics.fmean(row), parameters, None, row, task_seconds, cpu)


def _quiet_evaluator() -> Any:
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


def avalanche_pnn(stream: TaskStream, epochs: int, seed: int) -> Row:
    from avalanche.models import PNN
    from avalanche.training import PNNStrategy

    torch.manual_seed(seed)
    model = PNN(
        num_layers=len(HIDDEN),
        in_features=math.prod(stream.input_shape),
        hidden_features_per_column=HIDDEN[0],
    )
    strategy = PNNStrategy(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
        train_mb_size=BATCH,
        train_epochs=epochs,
        eval_mb_size=EVAL_BATCH,
        device="cpu",
        evaluator=_quiet_evaluator(),
    )
    return _train_avalanche("pnn", strategy, model, stream)


def avalanche_packnet(stream: TaskStream, epochs: int, seed: int) -> Row:
    from avalanche.core import SupervisedPlugin
    from avalanche.models.packnet import PackNetModel, PackNetPlugin
    from avalanche.training import Naive

    # growsearch's PackNet settings (the method reads its YAML's options mapping), so both prune alike
    options = get_method("packnet")(load_space("packnet")).options
    retrain = max(1, int(options.retrain_epochs))  # Avalanche needs at least one post-pruning epoch
    fractions = [options.fraction(t) for t in range(len(stream))]
    total = epochs + retrain

    class PostPruneLR(SupervisedPlugin):
        """The post-pruning epochs at growsearch's scaled learning rate (PackNetPlugin resets the
        optimiser to its defaults at every experience, so the rate is set per epoch)."""

        def before_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
            post = strategy.clock.train_exp_epochs >= total - retrain
            for group in strategy.optimizer.param_groups:
                group["lr"] = LR * (options.retrain_lr_scale if post else 1.0)

    n_outputs = {task.n_outputs for task in stream.tasks}
    if len(n_outputs) != 1:
        raise ValueError(
            f"Avalanche's PackNet shares one output layer; tasks have {sorted(n_outputs)} outputs"
        )
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    width = math.prod(stream.input_shape)
    for hidden in HIDDEN:
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    layers.append(torch.nn.Linear(width, n_outputs.pop()))
    model = PackNetModel(torch.nn.Sequential(*layers))
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
        train_mb_size=BATCH,
        train_epochs=total,
        eval_mb_size=EVAL_BATCH,
        device="cpu",
        plugins=[PackNetPlugin(post_prune_epochs=retrain, prune_proportion=fractions), PostPruneLR()],
        evaluator=_quiet_evaluator(),
    )
    return _train_avalanche("packnet", strategy, model, stream)


AvalancheRunner = Callable[[TaskStream, int, int], Row]
AVALANCHE_RUNNERS: dict[str, AvalancheRunner] = {"pnn": avalanche_pnn, "packnet": avalanche_packnet}


# ---- the report --------------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    header = (
        f"{'method':<20} {'implementation':<14} {'wall s':>6} {'min s':>6} {'cpu s':>6} {'tasks s':>7} "
        f"{'A_T':>6} {'params':>9} {'trials':>6}  final accuracy per task"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        per_task = " ".join(f"{a:.3f}" for a in row.accuracy)
        trials = "-" if row.trials is None else str(row.trials)
        print(
            f"{row.method:<20} {row.implementation:<14} {row.seconds:>6.2f} {min(row.repeats):>6.2f} "
            f"{row.cpu_seconds:>6.2f} {sum(row.task_seconds):>7.2f} {row.average_accuracy:>6.4f} "
            f"{row.parameters:>9,} {trials:>6}  {per_task}"
        )


def print_comparison(rows: list[Row]) -> None:
    ours = {r.method: r for r in rows if r.implementation == "growsearch"}
    theirs = {r.method: r for r in rows if r.implementation == "avalanche"}
    for method, their in theirs.items():
        our = ours[method]
        ratio = min(our.repeats) / min(their.repeats)
        ratios = (
            f"median {our.seconds / their.seconds:.3f}, cpu {our.cpu_seconds / their.cpu_seconds:.3f}, "
            f"tasks s {sum(our.task_seconds) / sum(their.task_seconds):.3f}"
        )
        delta = 100 * (our.average_accuracy - their.average_accuracy)
        time_ok = "ok" if ratio <= 1.0 else "ABOVE TARGET"
        accuracy_ok = "ok" if delta >= 0 else "BELOW"
        print(
            f"{method:<8} time ours/avalanche: fastest wall {ratio:.3f} ({time_ok}, target <= 1.0; {ratios})"
        )
        print(
            f"{'':<8} A_T ours {our.average_accuracy:.4f} vs avalanche {their.average_accuracy:.4f}: "
            f"{delta:+.2f} points ({accuracy_ok}, target >= 0)"
        )


def run_avalanche(method: str, stream: TaskStream, epochs: int, seed: int) -> Row:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AVALANCHE_RUNNERS[method](stream, epochs, seed)


def measure(
    method: str,
    options: RunOptions,
    stream: TaskStream,
    epochs: int,
    repeats: int,
    avalanche: bool,
    storage: str | None = None,
) -> list[Row]:
    """One row per implementation: growsearch's, then Avalanche's when it has one. With repeats, the two
    alternate which runs first, and the repeat of median wall time is kept (accuracies are deterministic)."""
    runners: list[tuple[str, Callable[[], Row]]] = [
        ("growsearch", lambda: run_growsearch(method, options, epochs, storage))
    ]
    if avalanche and method in AVALANCHE_RUNNERS:
        runners.append(("avalanche", lambda: run_avalanche(method, stream, epochs, options.seed)))
    results: dict[str, list[Row]] = {name: [] for name, _ in runners}
    for repeat in range(repeats):
        for name, run in runners if repeat % 2 == 0 else runners[::-1]:
            if name not in results:
                continue
            try:
                results[name].append(run())
            except TrainingError as error:  # a method that diverges under the protocol: said, not fatal
                print(f"{name} {method} failed, row skipped: {error}")
                del results[name]
            except Exception as error:  # an Avalanche API change must not lose growsearch's rows
                if name == "growsearch":
                    raise
                print(f"avalanche {method} failed, row skipped: {type(error).__name__}: {error}")
                del results[name]
    kept = []
    for rows in results.values():
        row = sorted(rows, key=lambda r: r.seconds)[(len(rows) - 1) // 2]
        row.repeats = [r.seconds for r in rows]
        kept.append(row)
    return kept


# ---- class-IL reference rows ----------------------------------------------------------------------------
def _reference_mlp(stream: TaskStream) -> torch.nn.Module:
    """The protocol's MLP with one head over every class of the stream (class-IL labels)."""
    sizes = [math.prod(stream.input_shape), *HIDDEN]
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for inputs, outputs in zip(sizes, sizes[1:], strict=False):
        layers += [torch.nn.Linear(inputs, outputs), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], stream.tasks[0].n_outputs))
    return torch.nn.Sequential(*layers)


def _class_il_accuracy(model: torch.nn.Module, stream: TaskStream) -> list[float]:
    model.eval()
    with torch.no_grad():
        return [float((model(t.test.x).argmax(1) == t.test.y).double().mean()) for t in stream.tasks]


class ReplayBatches(Minibatches):
    """Experience replay's minibatches (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual
    Learning"): each batch of the task's own samples comes with as many exemplars drawn at random from the
    memory, so old classes are in every step whatever the memory's size."""

    def __init__(self, split: Split, memory: ExemplarMemory, batch_size: int, seed: int):
        super().__init__([split.x], split.y, batch_size, seed)
        self.memory_x, self.memory_y, _ = memory.samples()

    def epoch(self) -> Iterator[Batch]:
        for batch in super().epoch():
            if not len(self.memory_y):
                yield batch
                continue
            drawn = torch.randint(len(self.memory_y), (len(batch.y),), generator=self.generator)
            inputs = torch.cat([batch.inputs[0], self.memory_x[drawn].to(batch.inputs[0].dtype)])
            yield Batch((inputs,), torch.cat([batch.y, self.memory_y[drawn]]))


def reference_rows(stream: TaskStream, epochs: int, seed: int, memory_size: int) -> list[Row]:
    """The rows every class-IL number is read against, with the protocol's optimiser through growsearch's
    trainer, on the class-IL stream (one head over all classes): one network trained on all tasks' data
    jointly (upper), the same network fine-tuned on the tasks one after another (lower), and between them
    experience replay: the same network fine-tuned task by task with every batch joined by as many
    exemplars from a memory of `memory_size` samples in all, class-balanced and drawn at random
    (growsearch's `ExemplarMemory`, as the rehearsal methods keep it; it takes each task's exemplars after
    the task trains)."""
    settings = OptimizerSettings("sgd", LR, MOMENTUM, 0.0)
    labels = {
        "joint": "joint (upper bound)",
        "replay": f"replay ({memory_size} ex.)",
        "naive": "fine-tune (lower)",
    }
    rows = []
    for name, label in labels.items():
        torch.manual_seed(seed)
        model = _reference_mlp(stream)
        memory = ExemplarMemory(memory_size, "random")
        started, cpu = time.perf_counter(), time.process_time()
        parts = [stream.tasks] if name == "joint" else [[task] for task in stream.tasks]
        for t, tasks in enumerate(parts):
            x = torch.cat([task.train.x for task in tasks])
            y = torch.cat([task.train.y for task in tasks])
            replay = name == "replay"
            batches = (
                ReplayBatches(Split(x, y), memory, BATCH, seed)
                if replay
                else Minibatches([x], y, BATCH, seed)
            )
            fit(model, batches, list(model.parameters()), settings, epochs=epochs)
            if replay:
                memory.add_task(t, x, y, seed=derived_seed(seed, t, "memory"))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        accuracy = _class_il_accuracy(model, stream)
        parameters = sum(p.numel() for p in model.parameters())
        row = Row(label, "reference", seconds, sum(accuracy) / len(accuracy), parameters, None, accuracy)
        rows.append(dataclasses.replace(row, cpu_seconds=cpu, repeats=[seconds], task_seconds=[seconds]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--benchmark", default="split-mnist5k")
    parser.add_argument(
        "--scenario",
        choices=("task-il", "class-il"),
        default=SCENARIO,
        help="class-il: every method with the task inferred (ExpertGate's gate), between a jointly trained "
        "network and naive fine-tuning; no Avalanche rows",
    )
    parser.add_argument("--no-avalanche", action="store_true", help="skip the Avalanche rows")
    parser.add_argument(
        "--max-per-task", type=int, default=None, help="cap each task's train split (smoke runs)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row, median kept (default 1)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads, both sides (default 1; 0: torch's)"
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    parser.add_argument(
        "--replay-memory",
        type=int,
        default=None,
        help="class-il: exemplars of the replay row (default: DER's shipped memory_size, equal memory)",
    )
    parser.add_argument(
        "--storage",
        choices=("sqlite", "journal"),
        default=None,
        help="override the YAMLs' Optuna storage (search.storage; default: as shipped)",
    )
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        parser.error("--methods names no method")
    unknown = [m for m in methods if m not in method_names() and not Path(m).is_file()]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(method_names())}")
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be >= 1")
    if args.replay_memory is not None and args.replay_memory < 1:
        parser.error("--replay-memory must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    refused = [m for m in methods if not runs_in(m, args.scenario)]
    if refused:
        print(f"not run in {args.scenario} (the methods' scenarios do not include it): {', '.join(refused)}")
        methods = [m for m in methods if m not in refused]

    options = RunOptions(
        benchmark=args.benchmark, scenario=args.scenario, seed=args.seed, max_per_task=args.max_per_task
    )
    stream = load_stream(options)
    class_il = args.scenario == "class-il"
    print(
        f"methods benchmark: {args.benchmark}, {args.scenario}, {len(stream)} tasks, train sizes "
        f"{[len(t.train) for t in stream.tasks]}, seed {args.seed}; {len(HIDDEN)}x{HIDDEN[0]} MLP, "
        f"{args.epochs} epochs, SGD lr {LR} momentum {MOMENTUM}, batch {BATCH}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {args.repeats} repeat(s), Optuna storage "
        f"{args.storage or 'as in the YAMLs'}"
    )
    avalanche, detail = (None, "skipped (--no-avalanche)") if args.no_avalanche else import_avalanche()
    if class_il:
        avalanche, detail = None, "skipped (its rows here are task-IL)"
    if avalanche is None:
        print(f"avalanche-lib not used: {detail}; printing growsearch's rows only")
    else:
        print(f"avalanche-lib {detail}: comparing on the identical stream")
    print()

    if not args.no_warmup:  # first-call costs (lazy imports, allocator, kernels) are not charged to a row
        warm = dataclasses.replace(options, max_per_task=8)
        warm_stream = load_stream(warm)
        for method in methods:
            try:
                run_growsearch(method, warm, 1, args.storage)
            except TrainingError:
                pass  # reported by the timed run below
            if avalanche is not None and method in AVALANCHE_RUNNERS:
                try:
                    run_avalanche(method, warm_stream, 1, args.seed)
                except Exception:
                    pass  # reported by the timed run below
    memory = args.replay_memory
    if memory is None:  # equal memory: DER's shipped exemplars
        memory = int(load_space("der").options.get("memory_size", 200))
    rows: list[Row] = reference_rows(stream, args.epochs, args.seed, memory) if class_il else []
    for method in methods:
        rows.extend(
            measure(method, options, stream, args.epochs, args.repeats, avalanche is not None, args.storage)
        )
    print_table(rows)
    if any(r.implementation == "avalanche" for r in rows):
        print()
        print(
            "growsearch vs avalanche (same stream and tensors, epochs, lr, momentum, batch, hidden layers):"
        )
        print_comparison(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
