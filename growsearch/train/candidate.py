"""Train a candidate graph on one task, and measure a task's accuracy.

The candidate is compiled split at its frozen frontier: outputs of the frozen prefix (old PNN columns,
MNTDP's reused modules) are computed once per task, then only the trainable suffix runs per batch, through
the one training loop (`train.trainer.fit`). Owner-tracked weights (PackNet) train only where they are
free, or where `train_owner` owns them (retraining after pruning).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from growsearch.config.training import TrainingConfig
from growsearch.data.task import Split
from growsearch.errors import TrainingError
from growsearch.graph.compile import TrainingProgram, compile_for_training, compile_view, write_back
from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.train.augment import Augmentation, batch_generator
from growsearch.train.batches import Minibatches
from growsearch.train.extension import PLAIN, Training, TrainingRun
from growsearch.train.frozen_modules import FrozenModules
from growsearch.train.schedules import lr_schedule
from growsearch.train.trainer import EpochCallback, EpochStats, count_macs, fit, spend_macs

if TYPE_CHECKING:
    from growsearch.train.prefix_cache import PrefixCache

EVAL_BATCH = 2048
MAX_CACHED_BYTES = 2 << 30  # above this, frozen-prefix outputs are recomputed per batch instead of cached


def resolve_device(name: str) -> torch.device:
    """`training.device` as a torch device (auto: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"training.device is {name!r} but no CUDA device is available")
    return torch.device(name)


@dataclass(frozen=True)
class TrainingResult:
    graph: ModuleGraph  # the candidate with its trained weights
    val_accuracy: float
    epochs: tuple[EpochStats, ...]  # per epoch: training loss and accuracy, validation accuracy
    train_macs: int  # multiply-adds spent: frozen prefix once, trainable suffix forward + backward per epoch
    seconds: float


def run_in_batches(module: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """`module`'s outputs (one tensor or a tuple) for `inputs`, computed in evaluation batches, no grad."""
    outputs: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), EVAL_BATCH):
            result = module(*[t[start : start + EVAL_BATCH] for t in inputs])
            outputs.append(list(result) if isinstance(result, tuple) else [result])
    return [torch.cat(parts) for parts in zip(*outputs, strict=True)]


def accuracy(module: nn.Module, inputs: list[torch.Tensor], y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            logits = module(*[t[start : start + EVAL_BATCH] for t in inputs])
            correct += int((logits.argmax(1) == y[start : start + EVAL_BATCH]).sum())
    return correct / len(y)


def cache_limit(device: torch.device) -> int:
    """How many bytes of frozen-prefix outputs a training keeps on `device`: at most MAX_CACHED_BYTES, and on
    a GPU a quarter of its free memory (beyond that, each batch moves there and runs the prefix)."""
    if device.type != "cuda":
        return MAX_CACHED_BYTES
    return min(MAX_CACHED_BYTES, torch.cuda.mem_get_info(device)[0] // 4)


def on_device(program: TrainingProgram, config: TrainingConfig, device: torch.device) -> torch.dtype | None:
    """Put the compiled candidate on `device` as the YAML's precision asks; the autocast dtype to train in.
    On CUDA, "auto" (and "bf16") trains in bf16 autocast with channels-last convolutions and cuDNN's
    autotuner; on a CPU only "bf16" asks for it."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if config.precision != "fp32":
            program.full.module.to(device, memory_format=torch.channels_last)
            return torch.bfloat16
    program.full.module.to(device)
    return torch.bfloat16 if config.precision == "bf16" else None


def prefix_outputs(program: TrainingProgram, x: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    if program.prefix is None:
        return [x.to(device)]
    return run_in_batches(program.prefix, [x.to(device)])


def kept_prefix_outputs(
    program: TrainingProgram,
    samples: torch.Tensor,
    device: torch.device,
    macs_per_sample: int,
    cache: PrefixCache | None,
) -> list[torch.Tensor]:
    """The frozen prefix's outputs for `samples`, from `cache` where an earlier trial computed them; the
    compute (`macs_per_sample` a sample) is charged only where the prefix runs."""
    outputs, computed = cached_prefix_outputs(program, samples, device, cache)
    if computed:
        spend_macs(macs_per_sample * len(samples))
    return outputs


def cached_prefix_outputs(
    program: TrainingProgram, samples: torch.Tensor, device: torch.device, cache: PrefixCache | None
) -> tuple[list[torch.Tensor], bool]:
    """The frozen prefix's outputs for `samples` (from `cache` where it keeps them), and whether they were
    computed now."""
    if cache is None:
        return prefix_outputs(program, samples, device), True
    return cache.outputs(program, samples, device)


def train_candidate(
    graph: ModuleGraph,
    task: int,
    train: Split,
    val: Split,
    config: TrainingConfig,
    *,
    seed: int,
    epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
    train_owner: int = FREE,
    lr_scale: float = 1.0,
    training: Training = PLAIN,
    augmentation: Augmentation | None = None,
    prefix_cache: PrefixCache | None = None,
    frozen_modules: FrozenModules | None = None,
) -> TrainingResult:
    """Train `graph`'s view of `task` (a copy; `graph` is untouched) and return it with its accuracy.
    `training`: what the method changes in this training (gates, masks, penalties, callbacks);
    `augmentation`: what each training batch goes through (seeded per step: the prefix then runs per
    batch); `prefix_cache` and `frozen_modules`: the task's frozen-prefix outputs and compiled frozen
    nodes kept from its earlier trials (the modules only in a plain training). The YAML's schedule,
    precision and device apply (`on_device`)."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    graph = graph.copy()
    reusing = frozen_modules if training is PLAIN else None
    include_free = train_owner == FREE
    program = compile_for_training(
        graph,
        task,
        train_owner,
        train_masks=training.train_masks,
        gates=training.gates,
        changing=training.changing,
        modules=reusing.for_graph(graph, task, include_free) if reusing is not None else None,
    )
    if reusing is not None:
        reusing.keep(graph, task, include_free, program.full.node_modules)
    autocast = on_device(program, config, device)
    for masked in program.full.masked:
        masked.trainable, masked.frozen_values = masked.trainable.to(device), masked.frozen_values.to(device)
    view = graph.view(task)
    all_macs = graph.macs(view)
    suffix_macs = all_macs - graph.macs([n for n in view if n not in program.suffix_nodes])
    prefix_macs = all_macs - suffix_macs  # one sample's forward pass through the frozen prefix
    prefix_bytes = sum(t.numel() * t.element_size() for t in prefix_outputs(program, train.x[:1], device))
    augmenting = augmentation is not None and augmentation.active
    with count_macs() as spent:
        if prefix_bytes * len(train) <= cache_limit(device) and not augmenting:  # the prefix runs once
            train_inputs = kept_prefix_outputs(program, train.x, device, prefix_macs, prefix_cache)
            batches = Minibatches(train_inputs, train.y.to(device), config.batch_size, seed)
        else:  # augmented, or too large to keep: each batch moves to the device and runs the prefix
            steps = itertools.count()

            def prefix(x: torch.Tensor) -> list[torch.Tensor]:
                spend_macs(prefix_macs * len(x))
                x = x.to(device, non_blocking=True)
                if augmenting:
                    x = augmentation.apply(x, batch_generator(seed, next(steps)))
                return prefix_outputs(program, x, device)

            batches = Minibatches([train.x], train.y.to(device), config.batch_size, seed, prefix)
        val_inputs, y_val = kept_prefix_outputs(program, val.x, device, 0, prefix_cache), val.y.to(device)
        epochs = config.epochs if epochs is None else epochs
        if training.start is not None:
            training.start(TrainingRun(program, batches, epochs))
        program.full.module.to(device)  # what `start` attached, too
        result = fit(
            program.suffix,
            batches,
            [p for p in program.suffix.parameters() if p.requires_grad],
            config.optimizer_settings(lr_scale),
            epochs=epochs,
            masked=program.full.masked,
            training=training,
            validate=lambda: accuracy(program.suffix, val_inputs, y_val),
            on_epoch=on_epoch,
            macs_per_sample=suffix_macs,
            lr_schedule=lr_schedule(config, epochs, max(1, -(-len(train) // config.batch_size))),
            autocast=autocast,
        )
        write_back(graph, program.full, train_owner)
        if training.finish is not None:  # counted: what it computes (a Fisher) is the trial's compute
            graph = training.finish(graph, program)
    val_accuracy = result.epochs[-1].val_accuracy if result.epochs else float("nan")
    seconds = time.perf_counter() - started
    return TrainingResult(graph, val_accuracy, result.epochs, spent.macs, seconds)


def evaluate(
    graph: ModuleGraph,
    task: int,
    split: Split,
    *,
    include_free: bool = False,
    device: str | torch.device = "cpu",
) -> float:
    """Accuracy of `task`'s view on `split` (with task-IL labels: the task's own head)."""
    compiled = compile_view(graph, task, include_free=include_free)
    module = compiled.module.to(device).eval()
    return accuracy(module, [split.x.to(device)], split.y.to(device))
