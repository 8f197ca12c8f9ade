"""Train a candidate graph on one task and measure accuracy.

The candidate is compiled split at its frozen frontier: outputs of the frozen prefix (old PNN columns,
MNTDP's reused modules) are computed once per task, then only the trainable suffix runs per batch.
PackNet's owner-tracked weights train only where they are free; their other entries are put back after
every step, whatever the optimiser does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from growsearch.config_schema import require
from growsearch.data.task import Split
from growsearch.errors import TrainingError
from growsearch.graph.compile import TrainingProgram, compile_for_training, compile_view, write_back
from growsearch.graph.module_graph import FREE, ModuleGraph

EVAL_BATCH = 2048
MAX_CACHED_BYTES = 2 << 30  # above this, frozen-prefix outputs are recomputed per batch instead of cached


@dataclass(frozen=True)
class TrainingConfig:
    """How a candidate is trained (the `training:` section of a search-space YAML)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 5
    device: str = "cpu"

    def validate(self, where: str) -> None:
        require(self.lr > 0, f"{where}.lr", f"expected a number > 0, got {self.lr}")
        require(
            0 <= self.momentum < 1, f"{where}.momentum", f"expected a number in [0, 1), got {self.momentum}"
        )
        require(self.weight_decay >= 0, f"{where}.weight_decay", "expected a number >= 0")
        require(
            self.batch_size >= 1, f"{where}.batch_size", f"expected an integer >= 1, got {self.batch_size}"
        )
        require(self.epochs >= 1, f"{where}.epochs", f"expected an integer >= 1, got {self.epochs}")
        require(
            self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
            f"{where}.device",
            f"expected cpu, cuda, cuda:N or auto, got {self.device!r}",
        )

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"training.device is {self.device!r} but no CUDA device is available")
        return torch.device(self.device)


@dataclass(frozen=True)
class TrainingResult:
    graph: ModuleGraph  # the candidate with its trained weights
    val_accuracy: float
    epochs_run: int
    train_macs: int  # multiply-adds spent: frozen prefix once, trainable suffix forward + backward per epoch
    seconds: float


EpochCallback = Callable[[int, float], None]  # (epoch, validation accuracy); may raise to stop training


def _optimizer(parameters: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _run_prefix(program: TrainingProgram, x: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """The frozen frontier's outputs for `x`, computed in evaluation batches."""
    if program.prefix is None:
        return [x.to(device)]
    outputs: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            result = program.prefix(x[start : start + EVAL_BATCH].to(device))
            outputs.append(list(result) if isinstance(result, tuple) else [result])
    return [torch.cat(parts) for parts in zip(*outputs, strict=True)]


def _accuracy(module: nn.Module, inputs: list[torch.Tensor], y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            logits = module(*[t[start : start + EVAL_BATCH] for t in inputs])
            correct += int((logits.argmax(1) == y[start : start + EVAL_BATCH]).sum())
    return correct / len(y)


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
) -> TrainingResult:
    """Train `graph`'s view of `task` (a copy; `graph` is untouched) and return it with its accuracy.

    `train_owner` picks which entries of owner-tracked weights train: FREE ones (default), or those a
    task already owns (PackNet's retraining after pruning, with the pruned entries held at zero)."""
    started = time.perf_counter()
    device = config.torch_device()
    graph = graph.copy()
    program = compile_for_training(graph, task, train_owner)
    program.full.module.to(device)
    for masked in program.full.masked:
        masked.trainable, masked.frozen_values = masked.trainable.to(device), masked.frozen_values.to(device)
        masked.parameter.register_hook(lambda grad, keep=masked.trainable: grad * keep)
    view = graph.view(task)
    suffix_nodes = program.suffix_nodes
    n_train = len(train)
    feature_bytes = sum(t.numel() * t.element_size() for t in _run_prefix(program, train.x[:1], device))
    cache = feature_bytes * n_train <= MAX_CACHED_BYTES
    train_inputs = _run_prefix(program, train.x, device) if cache else None
    val_inputs = _run_prefix(program, val.x, device)
    y_train, y_val = train.y.to(device), val.y.to(device)
    parameters = [p for p in program.suffix.parameters() if p.requires_grad]
    optimizer = _optimizer(parameters, config)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    all_macs = graph.macs(view)
    suffix_macs = all_macs - graph.macs([n for n in view if n not in suffix_nodes])
    epochs = config.epochs if epochs is None else epochs
    macs = (all_macs - suffix_macs) * n_train if cache else 0
    accuracy = float("nan")
    for epoch in range(epochs):
        program.suffix.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        for start in range(0, n_train, config.batch_size):
            index = order[start : start + config.batch_size]
            if cache:
                inputs = [t[index] for t in train_inputs]
            else:
                inputs = _run_prefix(program, train.x[index.cpu()], device)
            loss = loss_fn(program.suffix(*inputs), y_train[index])
            if not math.isfinite(loss.item()):
                raise TrainingError(
                    f"task {task}: the training loss became {loss.item()} at epoch {epoch + 1}, batch "
                    f"{start // config.batch_size + 1}; expected a finite loss (try a lower training.lr)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for masked in program.full.masked:
                masked.restore_frozen()
        macs += n_train * (3 * suffix_macs + (0 if cache else all_macs - suffix_macs))
        program.suffix.eval()
        accuracy = _accuracy(program.suffix, val_inputs, y_val)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
    write_back(graph, program.full, train_owner)
    return TrainingResult(graph, accuracy, epochs, int(macs), time.perf_counter() - started)


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
    return _accuracy(module, [split.x.to(device)], split.y.to(device))
