"""Feature distillation: train one sub-network of a graph to reproduce another's output by mean squared error,
through the one trainer (Side-Tuning's side network, distilled from the base network before the task).

The teacher's outputs are computed once; the student is the upstream of its output node compiled for
training (its unfrozen nodes train), and the trained weights are written back into the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    INPUT,
    Batch,
    Minibatches,
    ModuleGraph,
    TrainingConfig,
    compile_view,
    fit,
    resolve_device,
    run_in_batches,
    spend_macs,
    write_back,
)


@dataclass(frozen=True)
class Distillation:
    """What distilling did: epochs and minibatches trained, and the student's mean squared error to the
    teacher's features on the distillation inputs before and after."""

    epochs: int
    steps: int
    mse_before: float
    mse_after: float


def distil_features(
    graph: ModuleGraph,
    teacher: tuple[int, str],
    student: tuple[int, str],
    x: torch.Tensor,
    config: TrainingConfig,
    *,
    epochs: int,
    seed: int,
) -> Distillation:
    """Train the unfrozen nodes up to `student` = (task, node) so that its output matches that of `teacher`
    = (task, node) on inputs `x`, with `config`'s optimiser and batch size; `graph` changes in place."""
    device = resolve_device(config.device)
    x = x.to(device)
    target_view = compile_view(graph, teacher[0], output=teacher[1]).module.to(device).eval()
    targets = run_in_batches(target_view, [x])[0]
    spend_macs(graph.macs(graph.upstream(teacher[1])) * len(x))
    compiled = compile_view(graph, student[0], output=student[1], train=True)
    module = compiled.module.to(device)

    def mse() -> float:
        module.eval()
        return float(F.mse_loss(run_in_batches(module, [x])[0], targets))

    before = mse()
    result = fit(
        module,
        Minibatches([x], targets, config.batch_size, seed),
        [p for p in module.parameters() if p.requires_grad],
        config.optimizer_settings(),
        epochs=epochs,
        loss=_squared_error,
        macs_per_sample=graph.macs([n for n in graph.upstream(student[1]) if n != INPUT]),
    )
    write_back(graph, compiled)
    return Distillation(epochs, result.steps, before, mse())


def _squared_error(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.mse_loss(output, batch.y)
